"""Overlap scores for binary and multi-class (semantic) segmentations.

Conventions: nonzero voxels are foreground. When prediction and ground truth are *both* empty (no foreground), the
agreement is perfect and dice, iou, precision and recall are 1.0; when only one is empty they are 0.0. Every ratio
whose denominator is zero follows the same rule: 1.0 if nothing was expected and nothing was predicted, else 0.0.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from fmscope.metrics._arrays import as_labels, as_mask, check_same_shape, safe_ratio


@dataclass(frozen=True)
class SegmentationScores:
    """Confusion counts of a binary segmentation and the scores derived from them."""

    dice: float
    iou: float
    accuracy: float
    precision: float
    recall: float
    tp: int
    fp: int
    fn: int
    tn: int

    def to_dict(self) -> dict[str, float | int]:
        """Plain dict (for JSON/CSV reports)."""
        return dict(asdict(self))


def scores_from_counts(tp: int, fp: int, fn: int, tn: int) -> SegmentationScores:
    """Scores from confusion counts, with the empty-vs-empty = 1.0 convention."""
    both_empty = 1.0 if tp + fp + fn == 0 else 0.0
    return SegmentationScores(
        dice=safe_ratio(2 * tp, 2 * tp + fp + fn, empty=both_empty),
        iou=safe_ratio(tp, tp + fp + fn, empty=both_empty),
        accuracy=safe_ratio(tp + tn, tp + tn + fp + fn, empty=1.0),
        precision=safe_ratio(tp, tp + fp, empty=both_empty),
        recall=safe_ratio(tp, tp + fn, empty=both_empty),
        tp=int(tp),
        fp=int(fp),
        fn=int(fn),
        tn=int(tn),
    )


def binary_scores(pred: Any, gt: Any) -> SegmentationScores:
    """Dice, IoU, accuracy, precision, recall and counts of a binary prediction against ground truth.

    Args:
        pred: prediction, any shape; nonzero = foreground. numpy or dask arrays (dask is computed).
        gt: ground truth of the same shape.

    Raises:
        InvalidInputError: shapes differ, an input is empty or non-numeric, or holds NaN.
    """
    p = as_mask(pred, "pred")
    g = as_mask(gt, "gt")
    check_same_shape(p, g, "pred", "gt")
    tp = int(np.count_nonzero(p & g))
    n_p = int(np.count_nonzero(p))
    n_g = int(np.count_nonzero(g))
    fp = n_p - tp
    fn = n_g - tp
    tn = int(p.size) - tp - fp - fn
    return scores_from_counts(tp, fp, fn, tn)


def dice(pred: Any, gt: Any) -> float:
    """Dice coefficient 2|P∩G| / (|P|+|G|); 1.0 when both are empty."""
    return binary_scores(pred, gt).dice


def iou(pred: Any, gt: Any) -> float:
    """Intersection over union (Jaccard) |P∩G| / |P∪G|; 1.0 when both are empty."""
    return binary_scores(pred, gt).iou


@dataclass(frozen=True)
class MulticlassScores:
    """Per-class one-vs-rest scores of a semantic segmentation.

    ``mean``: float fields are the unweighted (macro) mean of the per-class values; count fields are summed over the
    classes. ``accuracy``: overall voxel accuracy (fraction of voxels whose class is right, background included).
    """

    classes: tuple[int, ...]
    per_class: tuple[SegmentationScores, ...]
    mean: SegmentationScores
    accuracy: float

    def to_dict(self) -> dict[str, Any]:
        """Plain dict: ``accuracy``, ``mean`` (dict) and ``per_class`` mapping class id (as str) to a dict."""
        return {
            "accuracy": self.accuracy,
            "mean": self.mean.to_dict(),
            "per_class": {str(c): s.to_dict() for c, s in zip(self.classes, self.per_class, strict=True)},
        }


def confusion_counts(pred: np.ndarray, gt: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Values present in either array and the (gt, pred) confusion matrix over them, via one bincount."""
    values, inverse = np.unique(np.concatenate([gt.ravel(), pred.ravel()]), return_inverse=True)
    k = values.size
    gi = inverse[: gt.size]
    pi = inverse[gt.size :]
    matrix = np.bincount(gi * k + pi, minlength=k * k).reshape(k, k)
    return values, matrix


def multiclass_scores(
    pred: Any, gt: Any, *, classes: tuple[int, ...] | list[int] | None = None, ignore_background: bool = True
) -> MulticlassScores:
    """One-vs-rest scores per class of integer label maps (semantic segmentation).

    Args:
        pred, gt: integer class maps of the same shape (floats only if whole numbers).
        classes: class ids to score; by default every id present in either map.
        ignore_background: drop class 0 from the scored classes (and so from the macro mean).

    A class absent from both maps scores 1.0 (nothing to find, nothing found). With no class left to score the
    mean is all 1.0 with zero counts.
    """
    p = as_labels(pred, "pred")
    g = as_labels(gt, "gt")
    check_same_shape(p, g, "pred", "gt")
    values, matrix = confusion_counts(p, g)
    scored = sorted(int(v) for v in values) if classes is None else [int(c) for c in classes]
    if ignore_background:
        scored = [c for c in scored if c != 0]
    index = {int(v): i for i, v in enumerate(values)}
    total = int(p.size)
    per_class = []
    for c in scored:
        if c in index:
            i = index[c]
            tp = int(matrix[i, i])
            fn = int(matrix[i, :].sum()) - tp
            fp = int(matrix[:, i].sum()) - tp
        else:
            tp = fp = fn = 0
        per_class.append(scores_from_counts(tp, fp, fn, total - tp - fp - fn))
    accuracy = float(np.trace(matrix)) / total
    return MulticlassScores(
        classes=tuple(scored), per_class=tuple(per_class), mean=_mean_scores(per_class, total), accuracy=accuracy
    )


def _mean_scores(per_class: list[SegmentationScores], total: int) -> SegmentationScores:
    if not per_class:
        return SegmentationScores(1.0, 1.0, 1.0, 1.0, 1.0, 0, 0, 0, total)
    return SegmentationScores(
        dice=float(np.mean([s.dice for s in per_class])),
        iou=float(np.mean([s.iou for s in per_class])),
        accuracy=float(np.mean([s.accuracy for s in per_class])),
        precision=float(np.mean([s.precision for s in per_class])),
        recall=float(np.mean([s.recall for s in per_class])),
        tp=sum(s.tp for s in per_class),
        fp=sum(s.fp for s in per_class),
        fn=sum(s.fn for s in per_class),
        tn=sum(s.tn for s in per_class),
    )
