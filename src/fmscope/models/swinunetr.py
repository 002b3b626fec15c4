"""The MONAI ``SwinUNETR`` as a backbone architecture (``architecture="swinunetr"``, 3D).

As in MONAI's forward: ``swinViT`` gives 5 hidden states; the encoder features are ``encoder1(x)`` (full res, ``F``
channels), ``encoder2/3/4(hidden[0..2])`` (``F, 2F, 4F`` at 1/2, 1/4, 1/8), ``hidden[3]`` (``8F`` at 1/16) and the
bottleneck ``encoder10(hidden[4])`` (``16F`` at 1/32); the decoders ``decoder5 .. decoder1`` and ``out`` give the
dense output.

Config fields read: ``feature_size``, ``depths``, ``num_heads``, ``window_size``, ``drop_rate``, ``attn_drop_rate``,
``dropout_path_rate``, ``normalize``, ``use_v2``, ``use_checkpoint`` (MONAI names), besides the common ones.
"""

from __future__ import annotations

from typing import Any

from monai.networks.nets.swin_unetr import SwinUNETR
from torch import Tensor, nn

from fmscope.errors import InvalidInputError
from fmscope.models.architectures import Architecture, register_architecture
from fmscope.models.config import BackboneConfig, check_positive_int

#: SwinUNETR embeds 2^3 patches and merges patches four times: every spatial dim must be a multiple of 2**5.
SWIN_DIVISOR = 32
_ENCODER = ("swinViT", "encoder1", "encoder2", "encoder3", "encoder4", "encoder10")


class SwinUNETRArchitecture(Architecture):
    """MONAI ``SwinUNETR``: six encoder levels (``F, F, 2F, 4F, 8F, 16F`` channels); default loss Dice + CE."""

    allowed_dims = (3,)
    default_seg_loss = "dicece"
    fields = (
        "feature_size",
        "depths",
        "num_heads",
        "window_size",
        "drop_rate",
        "attn_drop_rate",
        "dropout_path_rate",
        "normalize",
        "use_v2",
        "use_checkpoint",
    )

    def check(self, config: BackboneConfig) -> None:
        for name in ("feature_size", "window_size"):
            check_positive_int(name, getattr(config, name))
        if len(config.depths) != 4 or any(d < 1 for d in config.depths):
            raise InvalidInputError(f"depths: expected 4 positive stage depths, got {config.depths}")
        if len(config.num_heads) != 4 or any(h < 1 for h in config.num_heads):
            raise InvalidInputError(f"num_heads: expected 4 positive head counts, got {config.num_heads}")
        if config.feature_size % 12:
            raise InvalidInputError(
                f"feature_size: expected a multiple of 12 (MONAI SwinUNETR), got {config.feature_size}"
            )
        for i, heads in enumerate(config.num_heads):
            if (config.feature_size * 2**i) % heads:
                raise InvalidInputError(
                    f"num_heads: stage {i} has {config.feature_size * 2**i} channels, not divisible by {heads} heads "
                    f"(num_heads={config.num_heads}, feature_size={config.feature_size})"
                )

    def divisor(self, config: BackboneConfig) -> int:
        return SWIN_DIVISOR

    def feature_dims(self, config: BackboneConfig) -> tuple[int, ...]:
        f = config.feature_size
        return (f, f, 2 * f, 4 * f, 8 * f, 16 * f)

    def build(self, config: BackboneConfig) -> nn.Module:
        return SwinUNETR(
            in_channels=config.in_channels,
            out_channels=config.out_channels,
            depths=config.depths,
            num_heads=config.num_heads,
            window_size=config.window_size,
            feature_size=config.feature_size,
            norm_name=config.norm,
            drop_rate=config.drop_rate,
            attn_drop_rate=config.attn_drop_rate,
            dropout_path_rate=config.dropout_path_rate,
            normalize=config.normalize,
            use_checkpoint=config.use_checkpoint,
            spatial_dims=config.spatial_dims,
            use_v2=config.use_v2,
        )

    def encoder_prefixes(self, net: nn.Module) -> tuple[str, ...]:
        return tuple(f"{n}." for n in _ENCODER)

    def encode(self, net: nn.Module, x: Tensor) -> tuple[Tensor, ...]:
        swin: Any = net  # MONAI SwinUNETR; its sub-modules are untyped attributes
        hidden = swin.swinViT(x, swin.normalize)
        return (
            swin.encoder1(x),
            swin.encoder2(hidden[0]),
            swin.encoder3(hidden[1]),
            swin.encoder4(hidden[2]),
            hidden[3],
            swin.encoder10(hidden[4]),
        )

    def decode(self, net: nn.Module, features: tuple[Tensor, ...]) -> Tensor:
        swin: Any = net  # MONAI SwinUNETR; its sub-modules are untyped attributes
        enc0, enc1, enc2, enc3, hid3, dec4 = features
        dec3 = swin.decoder5(dec4, hid3)
        dec2 = swin.decoder4(dec3, enc3)
        dec1 = swin.decoder3(dec2, enc2)
        dec0 = swin.decoder2(dec1, enc1)
        return swin.out(swin.decoder1(dec0, enc0))


register_architecture("swinunetr", SwinUNETRArchitecture())
