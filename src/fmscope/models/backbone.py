"""One interface over MONAI ``UNet`` and ``SwinUNETR``: multi-scale encoder features, bottleneck and dense features.

The MONAI networks are built unchanged (``self.net``) so their weights and state-dict names are MONAI's, prefixed by
``net.``. To expose intermediate features we do not use hooks; we walk the networks' own sub-modules in the same order
as their ``forward`` (a test checks that ``Backbone(x).dense`` equals ``self.net(x)`` bit for bit):

* **UNet.** MONAI builds ``Sequential(down, SkipConnection(inner), up)`` recursively, with the bottom layer as the
  innermost ``SkipConnection``'s submodule. ``_unet_levels`` collects the ``down`` / ``up`` modules per level at
  construction. Forward: ``x = down_i(x)`` for each level (these outputs are the encoder features), then the bottom
  layer (the bottleneck, also the last encoder feature), then ``y = up_i(cat([skip_i, y]))`` from deep to shallow
  (the ``cat`` mode of MONAI's ``SkipConnection``). Encoder features: ``len(channels)`` maps with ``channels[i]``
  channels at ``1 / prod(strides[:i+1])`` resolution (the bottleneck at ``1 / prod(strides)``).
* **SwinUNETR.** As in MONAI's forward: ``swinViT`` gives 5 hidden states; the encoder features are
  ``encoder1(x)`` (full res, ``F`` channels), ``encoder2/3/4(hidden[0..2])`` (``F, 2F, 4F`` at 1/2, 1/4, 1/8),
  ``hidden[3]`` (``8F`` at 1/16) and the bottleneck ``encoder10(hidden[4])`` (``16F`` at 1/32).

Encoder parameters (for transfer into a segmentation network) are those under :attr:`Backbone.encoder_prefixes`.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from monai.networks.layers.simplelayers import SkipConnection
from monai.networks.nets import UNet
from monai.networks.nets.swin_unetr import SwinUNETR
from torch import Tensor, nn

from fmscope.errors import InvalidInputError
from fmscope.models.config import BackboneConfig

logger = logging.getLogger(__name__)


@dataclass
class BackboneOutput:
    """What a backbone returns.

    Attributes:
        encoder_features: multi-scale encoder maps, shallow to deep; the last one is the bottleneck.
        bottleneck: the deepest feature map, ``(B, bottleneck_dim, ...)``.
        dense: full-resolution features, ``(B, out_channels, Z, Y, X)``.
    """

    encoder_features: tuple[Tensor, ...]
    bottleneck: Tensor
    dense: Tensor


def pool_levels(features: Sequence[Tensor]) -> Tensor:
    """Average-pool each encoder feature map over space and concatenate: ``(B, sum of channels)``.

    Measured on the 10 LSM pretraining volumes with a randomly initialised ``unet-cpu`` (leave-one-out logistic probe of
    which volume a 64^3 crop comes from, 8 crops each): 0.20 from the pooled bottleneck alone, 0.95-1.00 from each of
    the three shallowest levels pooled.
    """
    return torch.cat([f.flatten(2).mean(dim=2) for f in features], dim=1)


def _unet_levels(net: UNet) -> tuple[list[nn.Module], list[nn.Module], nn.Module, list[str], list[str]]:
    """Walk MONAI's nested UNet: (downs, ups, bottom, down_prefixes + [bottom_prefix], up_prefixes)."""
    downs: list[nn.Module] = []
    ups: list[nn.Module] = []
    down_names: list[str] = []
    up_names: list[str] = []
    block: nn.Module = net.model
    name = "net.model"
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


class Backbone(nn.Module):
    """A MONAI UNet or SwinUNETR behind one interface; build it with :func:`fmscope.models.create_model`."""

    def __init__(self, config: BackboneConfig) -> None:
        super().__init__()
        if not isinstance(config, BackboneConfig):
            raise InvalidInputError(f"config: expected a BackboneConfig, got {type(config).__name__}")
        self._config = config
        self.net: nn.Module
        if config.architecture == "unet":
            self.net = UNet(
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
            downs, ups, bottom, enc_names, dec_names = _unet_levels(self.net)
            # A plain tuple (not attributes or ModuleLists) so the modules are not registered twice under new names.
            self._unet_walk: tuple[list[nn.Module], list[nn.Module], nn.Module] = (downs, ups, bottom)
            self._encoder_prefixes = tuple(enc_names)
            self._feature_dims = tuple(config.channels)
        else:
            self.net = SwinUNETR(
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
            names = ("swinViT", "encoder1", "encoder2", "encoder3", "encoder4", "encoder10")
            self._encoder_prefixes = tuple(f"net.{n}." for n in names)
            f = config.feature_size
            self._feature_dims = (f, f, 2 * f, 4 * f, 8 * f, 16 * f)

    # ----------------------------------------------------------------------------------------------- properties
    @property
    def config(self) -> BackboneConfig:
        return self._config

    @property
    def feature_dims(self) -> tuple[int, ...]:
        """Channels of each encoder feature map, shallow to deep (the last is the bottleneck)."""
        return self._feature_dims

    @property
    def bottleneck_dim(self) -> int:
        return self._feature_dims[-1]

    @property
    def dense_dim(self) -> int:
        return self._config.out_channels

    @property
    def encoder_prefixes(self) -> tuple[str, ...]:
        """State-dict name prefixes (ending in ``.``) of the encoder parameters and buffers."""
        return self._encoder_prefixes

    def is_encoder_key(self, key: str) -> bool:
        return key.startswith(self._encoder_prefixes)

    def encoder_state_dict(self) -> dict[str, Tensor]:
        """The encoder part of :meth:`state_dict` (same names), e.g. to transfer pretrained weights."""
        return {k: v for k, v in self.state_dict().items() if self.is_encoder_key(k)}

    # ----------------------------------------------------------------------------------------------- forward
    def check_input(self, x: Tensor) -> None:
        """Raise :class:`InvalidInputError` unless ``x`` is ``(B, in_channels, *spatial)`` with sizes divisible."""
        cfg = self._config
        contract = (
            f"(B, {cfg.in_channels}, {', '.join('ZYX'[-cfg.spatial_dims :])}) with every spatial size a multiple of "
            f"{cfg.divisor}"
        )
        if not isinstance(x, Tensor):
            raise InvalidInputError(f"x: expected a torch.Tensor {contract}, got {type(x).__name__}")
        if x.ndim != cfg.spatial_dims + 2:
            raise InvalidInputError(
                f"x: expected a {cfg.spatial_dims + 2}D tensor {contract}, got shape {tuple(x.shape)}"
            )
        if x.shape[1] != cfg.in_channels:
            raise InvalidInputError(
                f"x: expected {cfg.in_channels} channel(s), i.e. {contract}, got shape {tuple(x.shape)}"
            )
        spatial = tuple(x.shape[2:])
        if any(s % cfg.divisor for s in spatial):
            raise InvalidInputError(
                f"x: spatial size {spatial} is not a multiple of the network's downsampling factor {cfg.divisor}; "
                f"expected {contract} (pad or crop, e.g. to patch_size {cfg.patch_size})"
            )

    def encode(self, x: Tensor) -> tuple[Tensor, ...]:
        """Encoder features only (no decoder), shallow to deep; the last one is the bottleneck."""
        self.check_input(x)
        return self._encode(x)

    def _encode(self, x: Tensor) -> tuple[Tensor, ...]:
        if self._config.architecture == "unet":
            downs, _, bottom = self._unet_walk
            feats = []
            for down in downs:
                x = down(x)
                feats.append(x)
            feats.append(bottom(x))
            return tuple(feats)
        net: Any = self.net  # MONAI SwinUNETR; its sub-modules are untyped attributes
        hidden = net.swinViT(x, net.normalize)
        feats_swin = (
            net.encoder1(x),
            net.encoder2(hidden[0]),
            net.encoder3(hidden[1]),
            net.encoder4(hidden[2]),
            hidden[3],
            net.encoder10(hidden[4]),
        )
        return feats_swin

    def forward(self, x: Tensor) -> BackboneOutput:
        self.check_input(x)
        feats = self._encode(x)
        if self._config.architecture == "unet":
            y = feats[-1]
            for skip, up in zip(reversed(feats[:-1]), reversed(self._unet_walk[1]), strict=True):
                y = up(torch.cat([skip, y], dim=1))
            dense = y
        else:
            net: Any = self.net  # MONAI SwinUNETR; its sub-modules are untyped attributes
            enc0, enc1, enc2, enc3, hid3, dec4 = feats
            dec3 = net.decoder5(dec4, hid3)
            dec2 = net.decoder4(dec3, enc3)
            dec1 = net.decoder3(dec2, enc2)
            dec0 = net.decoder2(dec1, enc1)
            dense = net.out(net.decoder1(dec0, enc0))
        return BackboneOutput(encoder_features=feats, bottleneck=feats[-1], dense=dense)

    def pooled(self, x: Tensor) -> Tensor:
        """Image embedding: every encoder level average-pooled and concatenated, ``(B, pooled_dim)`` (encoder only).

        All levels rather than the bottleneck alone: the blocks end in InstanceNorm, so the pooled bottleneck is nearly
        the same for every volume (see :func:`pool_levels`).
        """
        return pool_levels(self.encode(x))

    @property
    def pooled_dim(self) -> int:
        """Width of :meth:`pooled`: the channels of all encoder levels together."""
        return sum(self._feature_dims)

    def num_parameters(self, encoder_only: bool = False) -> int:
        return sum(p.numel() for n, p in self.named_parameters() if not encoder_only or self.is_encoder_key(n))

    def extra_repr(self) -> str:
        c = self._config
        return f"architecture={c.architecture}, spatial_dims={c.spatial_dims}, patch_size={c.patch_size}"
