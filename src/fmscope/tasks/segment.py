"""Semantic segmentation: one logit per class from the dense features, Dice-based losses, labels as output.

Validation: mean foreground Dice per class; the benchmark pools the confusion counts over the test set (Dice, IoU,
accuracy) and, where the truth has instances, matches objects at IoU 0.5 (instance F1, count ratio).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from fmscope.data.labelled import BINARY_CLASSES
from fmscope.errors import InvalidInputError
from fmscope.metrics import binary_scores, count_ratio, dice, instance_scores
from fmscope.metrics.binary import scores_from_counts
from fmscope.models import get_architecture
from fmscope.segment.postprocess import label_components, watershed_split
from fmscope.tasks.base import DenseTask, LossFn
from fmscope.tasks.config import LOSSES

if TYPE_CHECKING:
    from fmscope.data.samples import Sample
    from fmscope.tasks.config import FinetuneConfig
    from fmscope.tasks.model import TaskModel


def segmentation_loss(name: str, architecture: str) -> Callable[[Tensor, Tensor], Tensor]:
    """The loss ``name`` (``'auto'``: the architecture's default) on logits and a ``(B, 1, ...)`` label batch."""
    from monai.losses import DiceCELoss, DiceFocalLoss

    if name == "auto":
        name = get_architecture(architecture).default_seg_loss
    common: dict[str, Any] = {"to_onehot_y": True, "softmax": True, "include_background": False}
    if name == "dicefocal":
        return DiceFocalLoss(lambda_dice=0.5, lambda_focal=0.5, alpha=0.25, gamma=2.0, **common)
    if name == "dicece":
        return DiceCELoss(**common)
    if name == "ce":
        return lambda logits, target: F.cross_entropy(logits, target[:, 0].long())
    raise InvalidInputError(f"loss: expected one of {list(LOSSES)}, got {name!r}")


class SegmentTask(DenseTask):
    name = "segment"
    layout: Literal["segment", "classify"] = "segment"
    target: Literal["mask", "class", "restore"] = "mask"
    label_output = True
    score_name = "Dice"
    metrics = ("dice", "iou", "accuracy", "instance_f1", "count_ratio")
    table_metrics = ("dice", "instance_f1", "iou")
    main_metric = "dice"

    def benchmark_classes(self, found: Sequence[str], structure: str) -> tuple[str, ...]:
        return (BINARY_CLASSES[0], structure)

    def dense_output(self, model: TaskModel, x: Tensor) -> Tensor:
        return torch.softmax(model(x), dim=1)

    def make_loss(self, config: FinetuneConfig, model: TaskModel, samples: list[Sample]) -> LossFn:
        loss = segmentation_loss(config.loss, model.backbone.config.architecture)
        return lambda output, batch: loss(output, batch["label"])

    def predict(self, model: TaskModel, image: np.ndarray, overlap: float, device: torch.device) -> np.ndarray:
        """Class indices (uint8 below 256 classes) of one normalised image."""
        labels = self.predict_dense(model, image, overlap, device).argmax(axis=0)
        return labels.astype(np.uint8 if model.spec.n_outputs <= 256 else np.int64)

    def validation_scores(
        self, predictions: list[Any], samples: list[Sample], classes: tuple[str, ...]
    ) -> dict[str, float]:
        scores: dict[str, list[float]] = {}
        for labels, s in zip(predictions, samples, strict=True):
            for c in range(1, len(classes)):
                scores.setdefault(f"dice_{classes[c]}", []).append(dice(labels == c, s.label == c))
        out = {k: float(np.mean(v)) for k, v in scores.items()}
        out["score"] = float(np.mean(list(out.values())))
        return out

    def score(
        self,
        predictions: list[Any],
        samples: list[Sample],
        classes: tuple[str, ...],
        *,
        instances: Sequence[np.ndarray | None] | None = None,
        own_instances: bool = False,
        split: str = "watershed",
    ) -> dict[str, float]:
        counts = np.zeros(4, dtype=np.int64)
        tp = fp = fn = n_pred = n_gt = 0
        truths = list(instances) if instances is not None else [None] * len(samples)
        for s, prediction, truth in zip(samples, predictions, truths, strict=True):
            mask = np.asarray(prediction) > 0
            c = binary_scores(mask, s.label == 1)
            counts += (c.tp, c.fp, c.fn, c.tn)
            if truth is not None:
                objects = np.asarray(prediction) if own_instances else split_objects(mask, split)
                found = instance_scores(objects, truth, thresholds=(0.5,))
                tp, fp, fn = tp + found.tp[0], fp + found.fp[0], fn + found.fn[0]
                n_pred, n_gt = n_pred + found.n_pred, n_gt + found.n_gt
        pooled = scores_from_counts(*(int(v) for v in counts))
        out = {"dice": pooled.dice, "iou": pooled.iou, "accuracy": pooled.accuracy}
        if n_gt or n_pred:
            out["instance_f1"] = 2 * tp / max(2 * tp + fp + fn, 1)
            out["count_ratio"] = count_ratio(int(n_pred), int(n_gt))
        return out

    def output_image(
        self, scores: Any, *, probabilities: bool = False, instances: str | None = None
    ) -> tuple[Any, bool]:
        """What ``fmscope predict`` writes from the blended ``(C, *spatial)`` probabilities, and whether it is a
        label image: the probabilities, the class indices (uint8), or instance labels (uint32)."""
        if probabilities:
            return scores, False
        result = scores.argmax(axis=0).astype(np.uint8)
        if instances is not None:
            foreground = np.asarray(result) > 0
            result = label_components(foreground) if instances == "components" else watershed_split(foreground)
            result = result.astype(np.uint32)  # every format with labels holds uint32
        return result, True


def split_objects(mask: np.ndarray, how: str) -> np.ndarray:
    """Instance labels of a foreground mask: ``'watershed'`` (touching objects split) or connected components."""
    return watershed_split(mask, min_distance=3) if how == "watershed" else label_components(mask)


SEGMENT = SegmentTask()
