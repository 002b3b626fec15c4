"""One interface over every registered architecture: multi-scale encoder features, bottleneck and dense features.

The network is built unchanged by its architecture (``self.net``, e.g. a MONAI ``UNet`` or ``SwinUNETR``) so its
weights and state-dict names are the library's own, prefixed by ``net.``. To expose intermediate features we do not
use hooks; the architecture walks the network's own sub-modules in the same order as its ``forward`` (see
``models/unet.py``, ``models/swinunetr.py``; a test checks that ``Backbone(x).dense`` equals ``self.net(x)`` bit for
bit). Which architecture: ``config.architecture``, looked up in :mod:`fmscope.models.architectures`.

Encoder parameters (for transfer into a segmentation network) are those under :attr:`Backbone.encoder_prefixes`.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from fmscope.errors import InvalidInputError
from fmscope.models.architectures import Architecture, get_architecture
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


class Backbone(nn.Module):
    """A registered architecture (MONAI UNet, SwinUNETR...) behind one interface; build it with
    :func:`fmscope.models.create_model`."""

    def __init__(self, config: BackboneConfig) -> None:
        super().__init__()
        if not isinstance(config, BackboneConfig):
            raise InvalidInputError(f"config: expected a BackboneConfig, got {type(config).__name__}")
        self._config = config
        self._architecture = get_architecture(config.architecture)
        self.net: nn.Module = self._architecture.build(config)
        self._encoder_prefixes = tuple(f"net.{p}" for p in self._architecture.encoder_prefixes(self.net))
        self._feature_dims = tuple(self._architecture.feature_dims(config))

    # ----------------------------------------------------------------------------------------------- properties
    @property
    def config(self) -> BackboneConfig:
        return self._config

    @property
    def adapter(self) -> Architecture:
        """The adapter of ``config.architecture`` (builds the network and walks its encoder and decoder)."""
        return self._architecture

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
        return self._architecture.encode(self.net, x)

    def forward(self, x: Tensor) -> BackboneOutput:
        self.check_input(x)
        feats = self._encode(x)
        dense = self._architecture.decode(self.net, feats)
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
