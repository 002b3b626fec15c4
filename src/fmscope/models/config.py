"""The architecture contract of a backbone: a frozen, JSON-round-trippable :class:`BackboneConfig`.

One dataclass holds the common fields and the fields of the two shipped architectures (UNet, SwinUNETR), so that
``config.json`` keeps one flat set of keys; each architecture module (``models/unet.py``, ``models/swinunetr.py``)
checks the fields it reads, and fields that belong to another architecture are ignored (and kept at their defaults by
the registered configs). An architecture with fields of its own brings a subclass (see
:attr:`fmscope.models.architectures.Architecture.config_class`). ``patch_size`` is the input size the network is meant
for, in ``(Z, Y, X)`` (or ``(Y, X)`` for 2D); any input whose spatial size is a multiple of
:attr:`BackboneConfig.divisor` works.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from fmscope.errors import InvalidInputError
from fmscope.models.architectures import get_architecture

NORMS: tuple[str, ...] = ("instance", "batch")


@dataclass(frozen=True)
class BackboneConfig:
    """Everything needed to rebuild a backbone.

    Attributes:
        architecture: a registered architecture (:func:`fmscope.models.list_architectures`): ``'unet'`` (MONAI
            ``UNet``) or ``'swinunetr'`` (MONAI ``SwinUNETR``).
        spatial_dims: 3, or 2 where the architecture allows it (UNet).
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
        for f in dataclasses.fields(self):
            if not isinstance(f.default, tuple):
                continue
            value = getattr(self, f.name)
            if isinstance(value, int) or not hasattr(value, "__iter__"):
                raise InvalidInputError(f"{f.name}: expected a sequence of integers, got {value!r}")
            object.__setattr__(self, f.name, tuple(int(v) for v in value))
        adapter = get_architecture(self.architecture)
        wanted = adapter.config_class or BackboneConfig
        if not isinstance(self, wanted):
            raise InvalidInputError(
                f"architecture: '{self.architecture}' is configured by {wanted.__name__}, got a {type(self).__name__}"
            )
        if self.spatial_dims not in adapter.allowed_dims:
            raise InvalidInputError(
                f"spatial_dims: expected one of {list(adapter.allowed_dims)} for {self.architecture}, "
                f"got {self.spatial_dims!r}"
            )
        if self.norm not in NORMS:
            raise InvalidInputError(f"norm: expected one of {list(NORMS)}, got {self.norm!r}")
        for name in ("in_channels", "out_channels"):
            check_positive_int(name, getattr(self, name))
        if len(self.patch_size) != self.spatial_dims or any(p < 1 for p in self.patch_size):
            raise InvalidInputError(
                f"patch_size: expected {self.spatial_dims} positive sizes (one per spatial axis, spatial_dims="
                f"{self.spatial_dims}), got {self.patch_size}"
            )
        adapter.check(self)
        bad = [p for p in self.patch_size if p % self.divisor]
        if bad:
            raise InvalidInputError(
                f"patch_size: expected every size to be a multiple of the network's downsampling factor "
                f"{self.divisor}, got {self.patch_size}"
            )

    @property
    def divisor(self) -> int:
        """Every spatial size of the input must be a multiple of this (the total downsampling factor)."""
        return get_architecture(self.architecture).divisor(self)

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
        if "architecture" not in d:
            raise InvalidInputError("backbone config: expected an 'architecture' key, got none")
        target = get_architecture(d["architecture"]).config_class or BackboneConfig
        names = {f.name for f in dataclasses.fields(target)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise InvalidInputError(f"backbone config: unknown keys {unknown}; expected a subset of {sorted(names)}")
        return target(**d)

    def replace(self, **overrides: Any) -> BackboneConfig:
        """A copy with ``overrides`` applied (unknown names raise, listing the valid ones)."""
        names = {f.name for f in dataclasses.fields(self)}
        unknown = sorted(set(overrides) - names)
        if unknown:
            raise InvalidInputError(f"overrides: unknown config fields {unknown}; expected a subset of {sorted(names)}")
        return dataclasses.replace(self, **overrides)


def check_positive_int(name: str, value: Any) -> None:
    """Raise :class:`InvalidInputError` naming ``name`` unless ``value`` is an integer >= 1 (not a bool)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InvalidInputError(f"{name}: expected a positive integer, got {value!r}")
