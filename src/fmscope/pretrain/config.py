"""The resolved configuration of a pretraining run (YAML + ``key=value`` overrides, see :mod:`fmscope.config`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from fmscope.data.augment import AugmentConfig
from fmscope.data.masking import MaskingConfig
from fmscope.errors import InvalidInputError
from fmscope.pretrain.method import MethodConfig


@dataclass(frozen=True)
class DataConfig:
    """Where the volumes are and how patches are drawn from them."""

    path: str | tuple[str, ...] = ""  # one or several folders / CSV / JSON manifests (a corpus of many sources)
    allow_missing_captions: bool = False  # volumes without a caption train the image terms only
    patch_size: tuple[int, int, int] = (64, 64, 64)
    patches_per_volume: int = 4
    min_foreground: float = 0.01
    low_percentile: float = 1.0
    high_percentile: float = 99.8
    val_fraction: float = 0.0
    augment: bool = True


@dataclass(frozen=True)
class OptimConfig:
    """AdamW with linear warmup then cosine decay; gradients clipped by global norm."""

    lr: float = 1e-4
    weight_decay: float = 0.01
    betas: tuple[float, float] = (0.9, 0.999)
    warmup_steps: int = 20
    min_lr_factor: float = 0.01
    grad_clip: float = 1.0
    accumulation: int = 1


@dataclass(frozen=True)
class TrainConfig:
    """Length, batching, checkpoints, precision, text warmup and EMA schedule."""

    steps: int = 300
    batch_size: int = 2
    checkpoint_every: int = 50
    keep_checkpoints: int = 1  # newest step files kept (0: all); one 300-step unet-cpu checkpoint is 157 MB
    log_every: int = 1
    seed: int = 0
    precision: Literal["auto", "fp32", "bf16"] = "auto"
    text_warmup_steps: int = 50
    ema_base: float = 0.996
    device: str = "auto"

    def __post_init__(self) -> None:
        for name in ("steps", "batch_size", "checkpoint_every", "log_every"):
            if getattr(self, name) < 1:
                raise InvalidInputError(f"train.{name}: expected a positive integer, got {getattr(self, name)}")
        if self.keep_checkpoints < 0:
            raise InvalidInputError(
                f"train.keep_checkpoints: expected an integer >= 0 (0: keep all), got {self.keep_checkpoints}"
            )


@dataclass(frozen=True)
class PretrainConfig:
    method: MethodConfig = field(default_factory=MethodConfig)
    data: DataConfig = field(default_factory=DataConfig)
    masking: MaskingConfig = field(default_factory=MaskingConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
