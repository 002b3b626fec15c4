"""Backbones by name: ``create_model("unet-tiny")``. Each name maps to a frozen :class:`BackboneConfig`.

Registered configs (``*-tiny`` are the test configs; run them at the shapes given in their ``patch_size``):

==================  =========  ==================================================================  =========
name                arch       size                                                                patch
==================  =========  ==================================================================  =========
``unet-tiny``       UNet       channels (4, 8, 16), strides (2, 2)                                 32^3
``unet-cpu``        UNet       channels (16, 32, 64, 128, 256), strides (2, 2, 2, 2)               64^3
``unet``            UNet       channels (32, 64, 128, 256, 512), strides (2, 2, 2, 2) (paper)      96^3
``swinunetr-tiny``  SwinUNETR  feature_size 12, depths (1, 1, 1, 1)                                64x32x32
``swinunetr-24``    SwinUNETR  feature_size 24, depths (2, 2, 2, 2)                                96^3
``swinunetr``       SwinUNETR  feature_size 48, depths (2, 2, 2, 2) (paper)                        96^3
==================  =========  ==================================================================  =========
"""

from __future__ import annotations

import logging
from typing import Any

from fmscope.errors import InvalidInputError
from fmscope.models.architectures import add_to_registry
from fmscope.models.backbone import Backbone
from fmscope.models.config import BackboneConfig

logger = logging.getLogger(__name__)

_REGISTRY: dict[str, BackboneConfig] = {}


def register_model(name: str, config: BackboneConfig, *, overwrite: bool = False) -> None:
    """Register ``config`` under ``name``; an existing name raises unless ``overwrite``."""
    add_to_registry(_REGISTRY, "model", name, config, ("config", BackboneConfig, "a BackboneConfig"), overwrite)


def list_models() -> list[str]:
    """Registered model names, sorted."""
    return sorted(_REGISTRY)


def get_config(name: str, **overrides: Any) -> BackboneConfig:
    """The registered config of ``name`` with ``overrides`` applied (validated)."""
    if name not in _REGISTRY:
        raise InvalidInputError(f"name: expected one of the registered models {list_models()}, got {name!r}")
    return _REGISTRY[name].replace(**overrides) if overrides else _REGISTRY[name]


def create_model(name: str, **overrides: Any) -> Backbone:
    """Build the backbone registered as ``name`` (randomly initialised), with config fields overridden by keyword.

    Example: ``create_model("unet-tiny", spatial_dims=2, patch_size=(32, 32), out_channels=3)``.
    """
    config = get_config(name, **overrides)
    logger.debug("creating model %s with %s", name, config)
    return Backbone(config)


register_model(
    "unet-tiny",
    BackboneConfig("unet", out_channels=8, patch_size=(32, 32, 32), channels=(4, 8, 16), strides=(2, 2)),
)
register_model(
    "unet-cpu",
    BackboneConfig(
        "unet", out_channels=16, patch_size=(64, 64, 64), channels=(16, 32, 64, 128, 256), strides=(2, 2, 2, 2)
    ),
)
register_model(
    "unet",
    BackboneConfig(
        "unet", out_channels=32, patch_size=(96, 96, 96), channels=(32, 64, 128, 256, 512), strides=(2, 2, 2, 2)
    ),
)
register_model(
    "swinunetr-tiny",
    BackboneConfig(
        "swinunetr",
        out_channels=12,
        patch_size=(64, 32, 32),
        feature_size=12,
        depths=(1, 1, 1, 1),
        num_heads=(3, 6, 12, 24),
    ),
)
register_model("swinunetr-24", BackboneConfig("swinunetr", out_channels=24, patch_size=(96, 96, 96), feature_size=24))
register_model("swinunetr", BackboneConfig("swinunetr", out_channels=48, patch_size=(96, 96, 96), feature_size=48))
