"""Backbones (MONAI UNet / SwinUNETR, one module per architecture) behind one interface, registries by model name and
by architecture name, and self-describing save/load.

>>> import tempfile, torch
>>> model = create_model("unet-tiny")
>>> out = model(torch.zeros(1, 1, 32, 32, 32))  # BackboneOutput(encoder_features, bottleneck, dense)
>>> [tuple(f.shape) for f in out.encoder_features], tuple(out.dense.shape)
([(1, 4, 16, 16, 16), (1, 8, 8, 8, 8), (1, 16, 8, 8, 8)], (1, 8, 32, 32, 32))
>>> folder = save_model(model, tempfile.mkdtemp() + "/model", extra={"step": 1000})
>>> loaded = load_model(folder)  # strict: raises on any key mismatch, with a key report
>>> loaded.model.config.architecture, get_architecture("unet").default_seg_loss
('unet', 'dicefocal')
"""

from fmscope.models.architectures import Architecture, get_architecture, list_architectures, register_architecture
from fmscope.models.backbone import Backbone, BackboneOutput, pool_levels
from fmscope.models.config import BackboneConfig
from fmscope.models.registry import create_model, get_config, list_models, register_model
from fmscope.models.serialization import (
    InputContract,
    LoadedModel,
    ModelMetadata,
    load_model,
    read_model_config,
    save_model,
)
from fmscope.models.state import KeyReport, compare_state_dict, load_state_dict_report, map_prefixes

__all__ = [
    "Architecture",
    "Backbone",
    "BackboneConfig",
    "BackboneOutput",
    "InputContract",
    "KeyReport",
    "LoadedModel",
    "ModelMetadata",
    "compare_state_dict",
    "create_model",
    "get_architecture",
    "get_config",
    "list_architectures",
    "list_models",
    "load_model",
    "load_state_dict_report",
    "map_prefixes",
    "pool_levels",
    "read_model_config",
    "register_architecture",
    "register_model",
    "save_model",
]
