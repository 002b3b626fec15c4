"""The MONAI ``UNet`` as a backbone architecture (``architecture="unet"``, 2D or 3D).

MONAI builds ``Sequential(down, SkipConnection(inner), up)`` recursively, with the bottom layer as the innermost
``SkipConnection``'s submodule. :func:`unet_levels` collects the ``down`` / ``up`` modules per level. Forward:
``x = down_i(x)`` for each level (these outputs are the encoder features), then the bottom layer (the bottleneck, also
the last encoder feature), then ``y = up_i(cat([skip_i, y]))`` from deep to shallow (the ``cat`` mode of MONAI's
``SkipConnection``). Encoder features: ``len(channels)`` maps with ``channels[i]`` channels at
``1 / prod(strides[:i+1])`` resolution (the bottleneck at ``1 / prod(strides)``).

Config fields read: ``channels``, ``strides``, ``num_res_units``, ``kernel_size``, ``up_kernel_size``, ``act``,
``dropout`` (MONAI names), besides the common ones.
"""

from __future__ import annotations

import math

import torch
from monai.networks.layers.simplelayers import SkipConnection
from monai.networks.nets import UNet
from torch import Tensor, nn

from fmscope.errors import InvalidInputError
from fmscope.models.architectures import Architecture, register_architecture
from fmscope.models.config import BackboneConfig, check_positive_int


def unet_levels(net: nn.Module) -> tuple[list[nn.Module], list[nn.Module], nn.Module, list[str], list[str]]:
    """Walk MONAI's nested UNet: (downs, ups, bottom, down prefixes + [bottom prefix], up prefixes).

    Prefixes are state-dict names relative to ``net`` (``'model.0.'``...).
    """
    if not isinstance(net, UNet):
        raise InvalidInputError(f"net: expected a MONAI UNet, got {type(net).__name__}")
    downs: list[nn.Module] = []
    ups: list[nn.Module] = []
    down_names: list[str] = []
    up_names: list[str] = []
    block: nn.Module = net.model
    name = "model"
    while isinstance(block, nn.Sequential) and len(block) == 3 and isinstance(block[1], SkipConnection):
        skip = block[1]
        if skip.mode != "cat" or skip.dim != 1:
            raise RuntimeError(f"unexpected MONAI UNet skip connection (mode={skip.mode}, dim={skip.dim})")
        downs.append(block[0])
        ups.append(block[2])
        down_names.append(f"{name}.0.")
        up_names.append(f"{name}.2.")
        block = skip.submodule
        name = f"{name}.1.submodule"
    if len(downs) != len(net.strides):
        raise RuntimeError(f"unexpected MONAI UNet structure: {len(downs)} levels for strides {net.strides}")
    return downs, ups, block, [*down_names, f"{name}."], up_names


class UNetArchitecture(Architecture):
    """MONAI ``UNet``: encoder levels are the ``down`` blocks and the bottom block; default loss Dice + focal."""

    allowed_dims = (2, 3)
    default_seg_loss = "dicefocal"
    fields = ("channels", "strides", "num_res_units", "kernel_size", "up_kernel_size", "act", "dropout")

    def check(self, config: BackboneConfig) -> None:
        for name in ("kernel_size", "up_kernel_size"):
            check_positive_int(name, getattr(config, name))
        if config.num_res_units < 0:
            raise InvalidInputError(f"num_res_units: expected an integer >= 0, got {config.num_res_units!r}")
        if len(config.channels) < 2 or any(c < 1 for c in config.channels):
            raise InvalidInputError(f"channels: expected at least 2 positive channel counts, got {config.channels}")
        if len(config.strides) != len(config.channels) - 1 or any(s < 1 for s in config.strides):
            raise InvalidInputError(
                f"strides: expected {len(config.channels) - 1} positive strides (len(channels) - 1), "
                f"got {config.strides}"
            )

    def divisor(self, config: BackboneConfig) -> int:
        return math.prod(config.strides)

    def feature_dims(self, config: BackboneConfig) -> tuple[int, ...]:
        return tuple(config.channels)

    def build(self, config: BackboneConfig) -> nn.Module:
        return UNet(
            spatial_dims=config.spatial_dims,
            in_channels=config.in_channels,
            out_channels=config.out_channels,
            channels=config.channels,
            strides=config.strides,
            kernel_size=config.kernel_size,
            up_kernel_size=config.up_kernel_size,
            num_res_units=config.num_res_units,
            act=config.act,
            norm=config.norm,
            dropout=config.dropout,
        )

    def encoder_prefixes(self, net: nn.Module) -> tuple[str, ...]:
        return tuple(unet_levels(net)[3])

    def encode(self, net: nn.Module, x: Tensor) -> tuple[Tensor, ...]:
        downs, _, bottom, _, _ = unet_levels(net)
        feats = []
        for down in downs:
            x = down(x)
            feats.append(x)
        feats.append(bottom(x))
        return tuple(feats)

    def decode(self, net: nn.Module, features: tuple[Tensor, ...]) -> Tensor:
        ups = unet_levels(net)[1]
        y = features[-1]
        for skip, up in zip(reversed(features[:-1]), reversed(ups), strict=True):
            y = up(torch.cat([skip, y], dim=1))
        return y


register_architecture("unet", UNetArchitecture())
