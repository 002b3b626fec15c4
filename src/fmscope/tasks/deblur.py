"""Deblurring: the model predicts an additive residual, the output is ``clamp(input + residual, 0, 1)``.

Training pairs are each image's ``NAME_blurred`` twin or a degradation synthesised from the sharp image; the loss is
:func:`fmscope.tasks.restoration.deblur_loss`; validation and the benchmark report SSIM (and PSNR).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import torch
from torch import Tensor, nn

from fmscope.data.augment import AugmentConfig, build_paired_augmentation
from fmscope.tasks.base import DenseTask, LossFn
from fmscope.tasks.restoration import deblur_loss, restoration_metrics

if TYPE_CHECKING:
    from fmscope.data.samples import Sample
    from fmscope.models import Backbone
    from fmscope.tasks.config import FinetuneConfig
    from fmscope.tasks.model import TaskModel, TaskSpec


class DeblurTask(DenseTask):
    name = "deblur"
    layout: Literal["segment", "classify"] = "segment"
    target: Literal["mask", "class", "restore"] = "restore"
    score_name = "SSIM"
    metrics = ("ssim", "psnr")
    table_metrics = ("ssim", "psnr")
    main_metric = "ssim"

    def model_classes(self, classes: tuple[str, ...]) -> tuple[str, ...]:
        return ()

    def benchmark_classes(self, found: Sequence[str], structure: str) -> tuple[str, ...]:
        return ()

    def check_classes(self, classes: tuple[str, ...]) -> None:
        return None

    def n_outputs(self, classes: tuple[str, ...]) -> int:
        return 1

    def build_head(self, backbone: Backbone, spec: TaskSpec) -> nn.Module:
        head = super().build_head(backbone, spec)
        for param in head.parameters():  # start as the identity: the residual is 0 until trained
            nn.init.zeros_(param)
        return head

    def forward(self, model: TaskModel, x: Tensor) -> Tensor:
        return torch.clamp(x + super().forward(model, x), 0.0, 1.0)

    def augmentation(self, config: FinetuneConfig, spatial_dims: int) -> Any:
        """Flips and rotations only: an intensity change of the input alone, or nearest-neighbour resampling of the
        target, would corrupt the residual the model learns."""
        if not config.augment or spatial_dims != 3:
            return None
        still = AugmentConfig(affine_prob=0.0, noise_prob=0.0, smooth_prob=0.0, scale_prob=0.0, shift_prob=0.0)
        return build_paired_augmentation(still, seed=config.seed)

    def make_loss(self, config: FinetuneConfig, model: TaskModel, samples: list[Sample]) -> LossFn:
        return lambda output, batch: deblur_loss(output, batch["target"])[0]

    def predict(self, model: TaskModel, image: np.ndarray, overlap: float, device: torch.device) -> np.ndarray:
        """The restored image (float32 in [0, 1]) of one normalised degraded image."""
        return self.predict_dense(model, image, overlap, device)[0]

    def validation_scores(
        self, predictions: list[Any], samples: list[Sample], classes: tuple[str, ...]
    ) -> dict[str, float]:
        scores: dict[str, list[float]] = {}
        for restored, s in zip(predictions, samples, strict=True):
            for k, v in restoration_metrics(restored, s.target).items():  # type: ignore[arg-type]
                scores.setdefault(k, []).append(v)
        out = {k: float(np.mean(v)) for k, v in scores.items()}
        out["score"] = out["ssim"]
        return out

    def score(
        self, predictions: list[Any], samples: list[Sample], classes: tuple[str, ...], **_: Any
    ) -> dict[str, float]:
        pairs = zip(predictions, samples, strict=True)
        values = [restoration_metrics(np.asarray(p, np.float32), np.asarray(s.target)) for p, s in pairs]
        return {k: float(np.mean([v[k] for v in values])) for k in self.metrics}

    def output_image(
        self, scores: Any, *, probabilities: bool = False, instances: str | None = None
    ) -> tuple[Any, bool]:
        """What ``fmscope predict`` writes: the restored image (float32 in [0, 1] of the input's window)."""
        return scores[0], False


DEBLUR = DeblurTask()
