"""Classification of whole images: a linear layer on the pooled encoder features, weighted cross-entropy.

The model sees the centre crop of its patch size (padded where the image is smaller). Validation: the macro accuracy
(mean recall over the classes present); the benchmark reports accuracy and macro-F1.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fmscope.data.samples import Sample, centre_patch
from fmscope.errors import InvalidInputError
from fmscope.metrics import classification_scores
from fmscope.models import pool_levels
from fmscope.tasks.base import LossFn, TaskBase

if TYPE_CHECKING:
    from fmscope.models import Backbone
    from fmscope.tasks.config import FinetuneConfig
    from fmscope.tasks.model import TaskModel, TaskSpec


def class_weights(samples: list[Sample], n_classes: int) -> Tensor:
    """Inverse-frequency weights of the classes in ``samples`` (0 for an absent class)."""
    counts = np.bincount([int(s.class_index) for s in samples if s.class_index is not None], minlength=n_classes)
    weights = np.where(counts > 0, counts.sum() / np.maximum(counts, 1) / n_classes, 0.0)
    return torch.tensor(weights, dtype=torch.float32)


class ClassifyTask(TaskBase):
    name = "classify"
    layout: Literal["segment", "classify"] = "classify"
    target: Literal["mask", "class", "restore"] = "class"
    dense = False
    score_name = "macro accuracy"
    metrics = ("accuracy", "macro_f1")
    table_metrics = ("accuracy", "macro_f1")
    main_metric = "accuracy"

    def benchmark_classes(self, found: Sequence[str], structure: str) -> tuple[str, ...]:
        return tuple(sorted({str(c) for c in found}))

    def build_head(self, backbone: Backbone, spec: TaskSpec) -> nn.Module:
        width = backbone.pooled_dim if spec.pooling == "all" else backbone.bottleneck_dim
        return nn.Linear(width, spec.n_outputs)

    def forward(self, model: TaskModel, x: Tensor) -> Tensor:
        features = model.backbone.encode(x)
        pooled = pool_levels(features) if model.spec.pooling == "all" else pool_levels(features[-1:])
        return model.head(pooled)

    def dense_output(self, model: TaskModel, x: Tensor) -> Tensor:
        raise InvalidInputError("model: a classification model has no dense output")

    def make_loss(self, config: FinetuneConfig, model: TaskModel, samples: list[Sample]) -> LossFn:
        weights = class_weights(samples, model.spec.n_outputs).to(next(model.parameters()).device)
        return lambda output, batch: F.cross_entropy(output, batch["class"], weight=weights)

    @torch.no_grad()
    def predict(self, model: TaskModel, image: np.ndarray, overlap: float, device: torch.device) -> int:
        """The class index of one normalised image (its centre crop)."""
        x = torch.from_numpy(centre_patch(image, model.backbone.config.patch_size))[None, None].to(device)
        return int(model(x).argmax(dim=1))

    def validation_scores(
        self, predictions: list[Any], samples: list[Sample], classes: tuple[str, ...]
    ) -> dict[str, float]:
        truth = [int(s.class_index) for s in samples]  # type: ignore[arg-type]
        result = classification_scores(predictions, truth, labels=list(range(len(classes))))
        recall = [row[c] / sum(row) for c, row in enumerate(result.confusion) if sum(row)]  # classes in validation
        return {"score": float(np.mean(recall)), "accuracy": result.accuracy}

    def score(
        self, predictions: list[Any], samples: list[Sample], classes: tuple[str, ...], **_: Any
    ) -> dict[str, float]:
        truth = [int(s.class_index) for s in samples]  # type: ignore[arg-type]
        result = classification_scores(predictions, truth, labels=list(range(len(classes))))
        return {"accuracy": result.accuracy, "macro_f1": result.macro_f1}

    def output_image(
        self, scores: Any, *, probabilities: bool = False, instances: str | None = None
    ) -> tuple[Any, bool]:
        raise InvalidInputError("model: a classification model predicts one class per image, not an image")


CLASSIFY = ClassifyTask()
