"""Data layer: manifests, patch sampling, augmentations, block masking, splits, synthetic phantoms.

``fmscope.data.phantoms`` needs numpy only; the dataset, augmentation and masking modules import torch/MONAI and are
loaded on first use of their names.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

from fmscope.data.manifest import Manifest, ManifestEntry, load_corpus, load_manifest, save_manifest
from fmscope.data.patches import PatchLocation, otsu_threshold, sample_patches
from fmscope.data.phantoms import EM_CLASSES, LIGHTSHEET_STRUCTURES, Phantom, em_stack_phantom, lightsheet_phantom
from fmscope.data.split import split_by_source

if TYPE_CHECKING:
    from fmscope.data.augment import AugmentConfig, build_augmentation, build_paired_augmentation
    from fmscope.data.dataset import PatchDataset, PatchSample, VolumeStats
    from fmscope.data.masking import MaskedBatch, MaskingCollate, MaskingConfig, make_block_mask

_LAZY = {
    "AugmentConfig": "fmscope.data.augment",
    "build_augmentation": "fmscope.data.augment",
    "build_paired_augmentation": "fmscope.data.augment",
    "PatchDataset": "fmscope.data.dataset",
    "PatchSample": "fmscope.data.dataset",
    "VolumeStats": "fmscope.data.dataset",
    "MaskedBatch": "fmscope.data.masking",
    "MaskingCollate": "fmscope.data.masking",
    "MaskingConfig": "fmscope.data.masking",
    "make_block_mask": "fmscope.data.masking",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'fmscope.data' has no attribute {name!r}")


__all__ = [
    "EM_CLASSES",
    "LIGHTSHEET_STRUCTURES",
    "AugmentConfig",
    "Manifest",
    "ManifestEntry",
    "MaskedBatch",
    "MaskingCollate",
    "MaskingConfig",
    "PatchDataset",
    "PatchLocation",
    "PatchSample",
    "Phantom",
    "VolumeStats",
    "build_augmentation",
    "build_paired_augmentation",
    "em_stack_phantom",
    "lightsheet_phantom",
    "load_corpus",
    "load_manifest",
    "make_block_mask",
    "otsu_threshold",
    "sample_patches",
    "save_manifest",
    "split_by_source",
]
