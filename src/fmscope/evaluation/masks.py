"""Evaluate a predicted segmentation against ground truth: semantic, multi-class and matched-instance scores."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import ndimage as ndi

from fmscope.errors import InvalidInputError
from fmscope.metrics import (
    InstanceScores,
    MulticlassScores,
    SegmentationScores,
    binary_scores,
    instance_scores,
    multiclass_scores,
)


@dataclass(frozen=True)
class MaskEvaluation:
    """Scores of one prediction: binary foreground scores always; multi-class and instance scores when asked."""

    semantic: SegmentationScores
    multiclass: MulticlassScores | None = None
    instances: InstanceScores | None = None
    warnings: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """Flat JSON-ready dict: ``dice, iou, accuracy, precision, recall`` (macro mean over classes when
        multi-class), plus ``f1_50, ap_50, f1_75, ...`` with instances."""
        headline = self.multiclass.mean if self.multiclass is not None else self.semantic
        out: dict[str, Any] = {k: headline.to_dict()[k] for k in ("dice", "iou", "accuracy", "precision", "recall")}
        if self.multiclass is not None:
            out["accuracy"] = self.multiclass.accuracy
            out["per_class"] = self.multiclass.to_dict()["per_class"]
            out["foreground"] = self.semantic.to_dict()
        else:
            out.update({k: self.semantic.to_dict()[k] for k in ("tp", "fp", "fn", "tn")})
        if self.instances is not None:
            out.update(self.instances.to_dict())
        if self.warnings:
            out["warnings"] = list(self.warnings)
        return out


#: foreground fractions further apart than this factor make a score suspicious (an inverted or mis-coded mask).
FRACTION_RATIO = 4.0


def suspicious_inputs(
    pred: np.ndarray, gt: np.ndarray, pred_mask: np.ndarray, gt_mask: np.ndarray, coded: bool = False
) -> list[str]:
    """Why a score may measure the files' coding rather than the segmentation: different label value sets (0/255
    against 0/1; not when the foreground values were given, ``coded``), foreground fractions that differ wildly (one
    mask inverted), an empty mask."""
    out = []
    fp, fg = float(pred_mask.mean()), float(gt_mask.mean())
    if not coded:
        pv, gv = np.unique(pred), np.unique(gt)
        if pv.size <= 2 and gv.size <= 2 and set(pv.tolist()) != set(gv.tolist()):
            out.append(
                f"the prediction's values {pv.tolist()} differ from the ground truth's {gv.tolist()}: nonzero is "
                "foreground in both; if one marks the background, pass --pred-foreground / --gt-foreground"
            )
    if fp == 0 or fg == 0:
        out.append(f"the {'prediction' if fp == 0 else 'ground truth'} has no foreground voxel")
    elif max(fp, fg) / min(fp, fg) > FRACTION_RATIO:
        out.append(
            f"foreground covers {100 * fp:.1f} % of the prediction but {100 * fg:.1f} % of the ground truth: "
            "is one of the masks inverted (foreground = background)? see --pred-foreground / --gt-foreground"
        )
    return out


def binarize(labels: np.ndarray, foreground: Sequence[float] | None = None) -> np.ndarray:
    """Boolean mask: ``labels != 0`` by default, or ``labels`` equal to any of the ``foreground`` values."""
    if foreground is None or len(foreground) == 0:
        return np.asarray(labels) != 0
    return np.isin(labels, np.asarray(foreground))


def _instance_labels(labels: np.ndarray, connectivity: int) -> np.ndarray:
    """Instance ids: a binary mask (one nonzero value) becomes connected components; a map with more ids is taken
    as it is."""
    if np.unique(labels[labels != 0]).size <= 1:
        structure = ndi.generate_binary_structure(labels.ndim, connectivity)
        out, _ = ndi.label(labels != 0, structure=structure)
        return out
    return labels


def evaluate_segmentation(
    pred: np.ndarray,
    gt: np.ndarray,
    *,
    instances: bool = False,
    multiclass: bool = False,
    pred_foreground: Sequence[float] | None = None,
    gt_foreground: Sequence[float] | None = None,
    connectivity: int = 1,
) -> MaskEvaluation:
    """Score ``pred`` against ``gt`` (same shape).

    Args:
        pred, gt: label images; nonzero (or the given ``*_foreground`` values) is foreground.
        instances: also match objects by IoU. Binary inputs are split into connected components
            (``connectivity`` 1 = faces only, as in 4-connected 2D masks); label maps are used as they are.
        multiclass: score each class value separately (macro mean as the headline numbers).
    """
    pred = np.asarray(pred)
    gt = np.asarray(gt)
    if pred.shape != gt.shape:
        raise InvalidInputError(f"prediction shape {pred.shape} != ground-truth shape {gt.shape}")
    if pred.size == 0:
        raise InvalidInputError("prediction: empty array (0 voxels)")
    if np.issubdtype(pred.dtype, np.floating) and not np.isfinite(pred).all():
        raise InvalidInputError("prediction: contains NaN or Inf values; a segmentation must be finite labels")
    pred_mask = binarize(pred, pred_foreground)
    gt_mask = binarize(gt, gt_foreground)
    semantic = binary_scores(pred_mask, gt_mask)
    multi = multiclass_scores(pred, gt) if multiclass else None
    inst = None
    if instances:
        pred_inst = _instance_labels(np.where(pred_mask, pred, 0), connectivity)
        gt_inst = _instance_labels(np.where(gt_mask, gt, 0), connectivity)
        inst = instance_scores(pred_inst, gt_inst)
    coded = bool(pred_foreground) or bool(gt_foreground)
    warnings = tuple(suspicious_inputs(pred, gt, pred_mask, gt_mask, coded)) if not multiclass else ()
    return MaskEvaluation(semantic=semantic, multiclass=multi, instances=inst, warnings=warnings)
