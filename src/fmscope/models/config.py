"""The architecture contract of a backbone: a frozen, JSON-round-trippable :class:`BackboneConfig`.

One dataclass covers both architectures; fields that belong to the other architecture are ignored (and kept at their
defaults by the registered configs). ``patch_size`` is the input size the network is meant for, in ``(Z, Y, X)``
(or ``(Y, X)`` for a 2D UNet); any input whose spatial size is a multiple of :attr:`BackboneConfig.divisor` works.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Literal

from fmscope.errors import InvalidInputError

Architecture = Literal["unet", "swinunetr"]
ARCHITECTURES: tuple[str, ...] = ("unet", "swinunetr")
NORMS: tuple[str, ...] = ("instance", "batch")
#: SwinUNETR embeds 2^3 patches and merges patches four times: every spatial dim must be a multiple of 2**5.
SWIN_DIVISOR = 32

_TUPLE_FIELDS = ("patch_size", "channels", "strides", "depths", "num_heads")


@dataclass(frozen=True)
class BackboneConfig:
    """Everything needed to rebuild a backbone.

    Attributes:
        architecture: ``'unet'`` (MONAI ``UNet``) or ``'swinunetr'`` (MONAI ``SwinUNETR``).
        spatial_dims: 3, or 2 for a 2D UNet.
        in_channels: channels of the input image.
        out_channels: feature dimension of the dense (full-resolution) output.
        patch_size: the input size the network is meant for (one value per spatial axis).
        norm: ``'instance'`` (no running statistics; the default) or ``'batch'``.
        channels, strides, num_res_units, kernel_size, up_kernel_size, act, dropout: UNet knobs (MONAI names).
        feature_size, depths, num_heads, window_size, drop_rate, attn_drop_rate, dropout_path_rate, normalize,
            use_v2, use_checkpoint: SwinUNETR knobs (MONAI names).
    """

    architecture: str
    in_channels: int = 1
    out_channels: int = 16
    spatial_dims: int = 3
    patch_size: tuple[int, ...] = (64, 64, 64)
    norm: str = "instance"
    # UNet
    channels: tuple[int, ...] = (16, 32, 64, 128, 256)
    strides: tuple[int, ...] = (2, 2, 2, 2)
    num_res_units: int = 0
    kernel_size: int = 3
    up_kernel_size: int = 3
    act: str = "prelu"
    dropout: float = 0.0
    # SwinUNETR
    feature_size: int = 48
    depths: tuple[int, ...] = (2, 2, 2, 2)
    num_heads: tuple[int, ...] = (3, 6, 12, 24)
    window_size: int = 7
    drop_rate: float = 0.0
    attn_drop_rate: float = 0.0
    dropout_path_rate: float = 0.0
    normalize: bool = True
    use_v2: bool = False
    use_checkpoint: bool = False

    def __post_init__(self) -> None:
        for name in _TUPLE_FIELDS:
            value = getattr(self, name)
            if isinstance(value, int) or not hasattr(value, "__iter__"):
                raise InvalidInputError(f"{name}: expected a sequence of integers, got {value!r}")
            object.__setattr__(self, name, tuple(int(v) for v in value))
        if self.architecture not in ARCHITECTURES:
            raise InvalidInputError(f"architecture: expected one of {list(ARCHITECTURES)}, got {self.architecture!r}")
        allowed_dims = (2, 3) if self.architecture == "unet" else (3,)
        if self.spatial_dims not in allowed_dims:
            raise InvalidInputError(
                f"spatial_dims: expected one of {list(allowed_dims)} for {self.architecture}, got {self.spatial_dims!r}"
            )
        if self.norm not in NORMS:
            raise InvalidInputError(f"norm: expected one of {list(NORMS)}, got {self.norm!r}")
        for name in ("in_channels", "out_channels", "kernel_size", "up_kernel_size", "feature_size", "window_size"):
            _check_positive_int(name, getattr(self, name))
        if self.num_res_units < 0:
            raise InvalidInputError(f"num_res_units: expected an integer >= 0, got {self.num_res_units!r}")
        if len(self.patch_size) != self.spatial_dims or any(p < 1 for p in self.patch_size):
            raise InvalidInputError(
                f"patch_size: expected {self.spatial_dims} positive sizes (one per spatial axis, spatial_dims="
                f"{self.spatial_dims}), got {self.patch_size}"
            )
        if self.architecture == "unet":
            self._check_unet()
        else:
            self._check_swin()
        bad = [p for p in self.patch_size if p % self.divisor]
        if bad:
            raise InvalidInputError(
                f"patch_size: expected every size to be a multiple of the network's downsampling factor "
                f"{self.divisor}, got {self.patch_size}"
            )

    def _check_unet(self) -> None:
        if len(self.channels) < 2 or any(c < 1 for c in self.channels):
            raise InvalidInputError(f"channels: expected at least 2 positive channel counts, got {self.channels}")
        if len(self.strides) != len(self.channels) - 1 or any(s < 1 for s in self.strides):
            raise InvalidInputError(
                f"strides: expected {len(self.channels) - 1} positive strides (len(channels) - 1), got {self.strides}"
            )

    def _check_swin(self) -> None:
        if len(self.depths) != 4 or any(d < 1 for d in self.depths):
            raise InvalidInputError(f"depths: expected 4 positive stage depths, got {self.depths}")
        if len(self.num_heads) != 4 or any(h < 1 for h in self.num_heads):
            raise InvalidInputError(f"num_heads: expected 4 positive head counts, got {self.num_heads}")
        if self.feature_size % 12:
            raise InvalidInputError(
                f"feature_size: expected a multiple of 12 (MONAI SwinUNETR), got {self.feature_size}"
            )
        for i, heads in enumerate(self.num_heads):
            if (self.feature_size * 2**i) % heads:
                raise InvalidInputError(
                    f"num_heads: stage {i} has {self.feature_size * 2**i} channels, not divisible by {heads} heads "
                    f"(num_heads={self.num_heads}, feature_size={self.feature_size})"
                )

    @property
    def divisor(self) -> int:
        """Every spatial size of the input must be a multiple of this (the total downsampling factor)."""
        if self.architecture == "swinunetr":
            return SWIN_DIVISOR
        return math.prod(self.strides)

    @property
    def axes(self) -> str:
        """Axis order of one input sample: ``'CZYX'`` (3D) or ``'CYX'`` (2D)."""
        return "CZYX" if self.spatial_dims == 3 else "CYX"

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            d[f.name] = list(value) if isinstance(value, tuple) else value
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> BackboneConfig:
        """Inverse of :meth:`to_dict`; unknown keys raise (they would be silently dropped otherwise)."""
        if not isinstance(d, dict):
            raise InvalidInputError(f"backbone config: expected a mapping, got {type(d).__name__}")
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise InvalidInputError(f"backbone config: unknown keys {unknown}; expected a subset of {sorted(names)}")
        if "architecture" not in d:
            raise InvalidInputError("backbone config: expected an 'architecture' key, got none")
        return cls(**d)

    def replace(self, **overrides: Any) -> BackboneConfig:
        """A copy with ``overrides`` applied (unknown names raise, listing the valid ones)."""
        names = {f.name for f in dataclasses.fields(self)}
        unknown = sorted(set(overrides) - names)
        if unknown:
            raise InvalidInputError(f"overrides: unknown config fields {unknown}; expected a subset of {sorted(names)}")
        return dataclasses.replace(self, **overrides)


def _check_positive_int(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InvalidInputError(f"{name}: expected a positive integer, got {value!r}")
