"""Typed configuration of fine-tuning (defaults + YAML + ``key=value`` overrides, resolved by ``fmscope.config``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from fmscope.data.degradation import DegradationConfig
from fmscope.errors import InvalidInputError
from fmscope.tasks.registry import check_task_name

LOSSES = ("auto", "dicefocal", "dicece", "ce")


@dataclass(frozen=True)
class FinetuneConfig:
    """One fine-tuning run (reference values from the spec where it gives them).

    Attributes:
        task: a registered task (``'segment'``, ``'classify'``, ``'deblur'``; :mod:`fmscope.tasks.registry`).
        model: registered architecture for ``--init scratch`` (a model folder brings its own).
        init_parts: what a model folder initialises: ``'encoder'`` (the reference) or the whole ``'backbone'``.
        patch_size: training patch size; default the model's.
        loss: segmentation loss: ``'dicefocal'`` (UNet reference: 0.5/0.5, alpha 0.25, gamma 2), ``'dicece'``
            (SwinUNETR reference), ``'ce'``, or ``'auto'`` (by architecture). Classification is always
            cross-entropy weighted by inverse class frequency; deblurring always the restoration loss.
        pooling: classification features, ``'deepest'`` (reference) or ``'all'`` encoder levels.
        lr: learning rate of the decoder and head; the encoder trains at ``lr * encoder_lr_factor`` after being
            frozen for ``freeze_epochs`` (both only when initialised from a model folder: a random encoder is
            neither frozen nor slowed, so that scratch is not handicapped).
        epochs, steps_per_epoch, batch_size: an epoch is ``steps_per_epoch`` optimiser steps on random patches,
            followed by validation on the whole validation volumes.
        patience: stop after this many epochs without a better validation score (Dice, macro accuracy, SSIM),
            counted from the end of the encoder freeze.
        foreground_fraction: segmentation: share of patches centred on a random foreground voxel.
        augment: flips, 90-degree rotations, small affine and intensity changes (image and mask share parameters).
        overlap: sliding-window overlap for validation and prediction.
        low_percentile, high_percentile: each volume is windowed by its own percentiles to [0, 1].
        degradation: deblurring of images without a ``NAME_blurred`` twin: the degraded input is synthesised from
            the sharp image (raw intensity units; reference: sigma 2.5, Gaussian noise std 2.5), seeded per image.
        seed: seeds the patch sampler, augmentation, degradation and initialisation.
        device: ``'auto'`` (CUDA when available), ``'cpu'`` or ``'cuda'``.
    """

    task: str = "segment"
    model: str = "unet-cpu"
    init_parts: Literal["encoder", "backbone"] = "encoder"
    patch_size: tuple[int, ...] | None = None
    loss: str = "auto"
    pooling: Literal["deepest", "all"] = "deepest"
    lr: float = 3e-4
    encoder_lr_factor: float = 0.2
    freeze_epochs: int = 10
    weight_decay: float = 1e-5
    epochs: int = 100
    steps_per_epoch: int = 10
    batch_size: int = 2
    patience: int = 15
    foreground_fraction: float = 0.5
    augment: bool = True
    overlap: float = 0.5
    low_percentile: float = 1.0
    high_percentile: float = 99.8
    degradation: DegradationConfig = field(default_factory=DegradationConfig)
    seed: int = 0
    device: str = "auto"

    def __post_init__(self) -> None:
        check_task_name(self.task)
        if self.init_parts not in ("encoder", "backbone"):
            raise InvalidInputError(f"init_parts: expected 'encoder' or 'backbone', got {self.init_parts!r}")
        if self.loss not in LOSSES:
            raise InvalidInputError(f"loss: expected one of {list(LOSSES)}, got {self.loss!r}")
        if self.patch_size is not None:
            object.__setattr__(self, "patch_size", tuple(int(p) for p in self.patch_size))
        for name in ("epochs", "steps_per_epoch", "batch_size", "patience"):
            if int(getattr(self, name)) < 1:
                raise InvalidInputError(f"{name}: expected an integer >= 1, got {getattr(self, name)!r}")
        if self.freeze_epochs < 0:
            raise InvalidInputError(f"freeze_epochs: expected an integer >= 0, got {self.freeze_epochs!r}")
        if self.lr <= 0 or self.weight_decay < 0:
            raise InvalidInputError(f"lr, weight_decay: expected lr > 0 and weight_decay >= 0, got {self.lr}, "
                                    f"{self.weight_decay}")  # fmt: skip
        for name in ("encoder_lr_factor", "foreground_fraction"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise InvalidInputError(f"{name}: expected a value in [0, 1], got {getattr(self, name)!r}")
        if not 0.0 <= self.overlap < 1.0:
            raise InvalidInputError(f"overlap: expected a value in [0, 1), got {self.overlap!r}")
        if self.device not in ("auto", "cpu", "cuda"):
            raise InvalidInputError(f"device: expected 'auto', 'cpu' or 'cuda', got {self.device!r}")
