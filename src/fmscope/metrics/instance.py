"""Instance segmentation scores: one-to-one matching of labelled objects by IoU.

Definitions (DSB 2018 / Caicedo et al. 2019, "Evaluation of deep learning strategies for nucleus segmentation in
fluorescence images", Cytometry A): at an IoU threshold t, a predicted and a ground-truth object form a true positive
pair when they are matched one-to-one and their IoU >= t; unmatched predictions are false positives, unmatched
ground-truth objects false negatives. Then

* ``ap = TP / (TP + FP + FN)`` (the "average precision" of the DSB 2018 challenge, not the area under a PR curve),
* ``f1 = 2 TP / (2 TP + FP + FN)``, ``precision = TP / (TP + FP)``, ``recall = TP / (TP + FN)``.

When both label maps are empty every score is 1.0; when only one is empty they are 0.0.

The IoU of every overlapping pair comes from one sparse contingency table (a ``np.unique`` over the voxels where
either map is nonzero), so it scales to thousands of objects in 3D. The matching maximises first the number of pairs
with IoU >= t, then their total IoU (``scipy.optimize.linear_sum_assignment``, as in StarDist); for t >= 0.5 the
matching is unique anyway.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray
from scipy.optimize import linear_sum_assignment

from fmscope.errors import InvalidInputError
from fmscope.metrics._arrays import as_labels, check_same_shape, safe_ratio


@dataclass(frozen=True)
class InstanceMatch:
    """One-to-one matching between predicted and ground-truth objects at ``threshold``.

    ``pred_ids[i]`` matches ``gt_ids[i]`` with IoU ``ious[i]`` (>= threshold). Ids are the label values.
    """

    threshold: float
    pred_ids: tuple[int, ...]
    gt_ids: tuple[int, ...]
    ious: tuple[float, ...]
    unmatched_pred: tuple[int, ...]
    unmatched_gt: tuple[int, ...]

    @property
    def tp(self) -> int:
        return len(self.pred_ids)

    @property
    def fp(self) -> int:
        return len(self.unmatched_pred)

    @property
    def fn(self) -> int:
        return len(self.unmatched_gt)


@dataclass(frozen=True)
class ThresholdScores:
    """Instance scores at one IoU threshold."""

    threshold: float
    tp: int
    fp: int
    fn: int
    precision: float
    recall: float
    f1: float
    ap: float


@dataclass(frozen=True)
class InstanceScores:
    """Instance scores at several IoU thresholds (the tuples run parallel to ``thresholds``).

    ``mean_matched_iou``: mean IoU of the pairs matched at IoU >= 0.5 (1.0 when both maps are empty, 0.0 when no
    pair matched). ``count_ratio``: see :func:`count_ratio` (counts only, no matching).
    """

    thresholds: tuple[float, ...]
    tp: tuple[int, ...]
    fp: tuple[int, ...]
    fn: tuple[int, ...]
    precision: tuple[float, ...]
    recall: tuple[float, ...]
    f1: tuple[float, ...]
    ap: tuple[float, ...]
    mean_matched_iou: float
    n_pred: int
    n_gt: int
    count_ratio: float

    def at(self, threshold: float) -> ThresholdScores:
        """Scores at one of ``thresholds``; InvalidInputError for any other value."""
        for i, t in enumerate(self.thresholds):
            if abs(t - threshold) < 1e-9:
                return ThresholdScores(
                    t, self.tp[i], self.fp[i], self.fn[i], self.precision[i], self.recall[i], self.f1[i], self.ap[i]
                )
        raise InvalidInputError(f"threshold: expected one of {self.thresholds}, got {threshold}")

    def to_dict(self) -> dict[str, float | int]:
        """Flat dict: ``{f1,ap,precision,recall,tp,fp,fn}_<100*t>`` per threshold (e.g. ``f1_50``, ``ap_75``),
        plus ``mean_matched_iou``, ``n_pred``, ``n_gt``, ``count_ratio``."""
        out: dict[str, float | int] = {}
        for i, t in enumerate(self.thresholds):
            key = f"{round(t * 100):d}"
            out[f"f1_{key}"] = self.f1[i]
            out[f"ap_{key}"] = self.ap[i]
            out[f"precision_{key}"] = self.precision[i]
            out[f"recall_{key}"] = self.recall[i]
            out[f"tp_{key}"] = self.tp[i]
            out[f"fp_{key}"] = self.fp[i]
            out[f"fn_{key}"] = self.fn[i]
        out["mean_matched_iou"] = self.mean_matched_iou
        out["n_pred"] = self.n_pred
        out["n_gt"] = self.n_gt
        out["count_ratio"] = self.count_ratio
        return out


def count_ratio(n_pred: int, n_gt: int) -> float:
    """``2 min(n_pred, n_gt) / (n_pred + n_gt)``: how close the object *counts* are (1.0 when both are 0).

    This is what the LSM foundation-model reference calls "instance Dice". It compares counts only, with no
    matching: 10 predicted objects nowhere near 10 true objects score 1.0. Use :func:`instance_scores` for
    detection quality; report this only as a count agreement.
    """
    for name, n in (("n_pred", n_pred), ("n_gt", n_gt)):
        if isinstance(n, bool) or not isinstance(n, int | np.integer) or n < 0:
            raise InvalidInputError(f"{name}: expected a non-negative integer count, got {n!r}")
    total = int(n_pred) + int(n_gt)
    return 1.0 if total == 0 else 2.0 * min(int(n_pred), int(n_gt)) / total


def iou_table(
    pred_labels: NDArray[np.int64], gt_labels: NDArray[np.int64]
) -> tuple[NDArray[np.int64], NDArray[np.int64], NDArray[np.float64]]:
    """Object ids of both maps and their dense IoU matrix (n_pred x n_gt), built from a sparse contingency table."""
    p = pred_labels.ravel()
    g = gt_labels.ravel()
    pred_ids, p_sizes = np.unique(p[p != 0], return_counts=True)
    gt_ids, g_sizes = np.unique(g[g != 0], return_counts=True)
    ious = np.zeros((pred_ids.size, gt_ids.size), dtype=np.float64)
    both = (p != 0) & (g != 0)
    if both.any():
        pi = np.searchsorted(pred_ids, p[both])
        gi = np.searchsorted(gt_ids, g[both])
        pairs, inter = np.unique(pi * np.int64(gt_ids.size) + gi, return_counts=True)
        rows, cols = np.divmod(pairs, gt_ids.size)
        ious[rows, cols] = inter / (p_sizes[rows] + g_sizes[cols] - inter)
    return pred_ids, gt_ids, ious


def _match(
    pred_ids: NDArray[np.int64], gt_ids: NDArray[np.int64], ious: NDArray[np.float64], threshold: float
) -> InstanceMatch:
    rows_c, cols_c = np.nonzero(ious >= threshold)
    matched_p: list[int] = []
    matched_g: list[int] = []
    if rows_c.size:
        # Restrict the assignment to the objects that have a candidate partner: small dense problem.
        r_sub = np.unique(rows_c)
        c_sub = np.unique(cols_c)
        sub = ious[np.ix_(r_sub, c_sub)]
        hit = sub >= threshold
        cost = -hit.astype(np.float64) - sub / (2.0 * max(min(sub.shape), 1))
        r, c = linear_sum_assignment(cost)
        ok = hit[r, c]
        matched_p = r_sub[r[ok]].tolist()
        matched_g = c_sub[c[ok]].tolist()
    mp = set(matched_p)
    mg = set(matched_g)
    return InstanceMatch(
        threshold=float(threshold),
        pred_ids=tuple(int(pred_ids[i]) for i in matched_p),
        gt_ids=tuple(int(gt_ids[j]) for j in matched_g),
        ious=tuple(float(ious[i, j]) for i, j in zip(matched_p, matched_g, strict=True)),
        unmatched_pred=tuple(int(pred_ids[i]) for i in range(pred_ids.size) if i not in mp),
        unmatched_gt=tuple(int(gt_ids[j]) for j in range(gt_ids.size) if j not in mg),
    )


def _check_threshold(threshold: float, name: str) -> float:
    if isinstance(threshold, bool) or not isinstance(threshold, int | float | np.floating) or not 0 < threshold <= 1:
        raise InvalidInputError(f"{name}: expected IoU threshold(s) in (0, 1], got {threshold!r}")
    return float(threshold)


def _prepare(pred_labels: Any, gt_labels: Any) -> tuple[NDArray[np.int64], NDArray[np.int64], NDArray[np.float64]]:
    p = as_labels(pred_labels, "pred_labels")
    g = as_labels(gt_labels, "gt_labels")
    check_same_shape(p, g, "pred_labels", "gt_labels")
    return iou_table(p, g)


def match_instances(pred_labels: Any, gt_labels: Any, *, iou_threshold: float = 0.5) -> InstanceMatch:
    """Match predicted to ground-truth objects one-to-one; a pair counts when IoU >= ``iou_threshold``.

    Args:
        pred_labels, gt_labels: integer label maps of the same shape (0 = background, any other id = one object).
        iou_threshold: in (0, 1].
    """
    t = _check_threshold(iou_threshold, "iou_threshold")
    return _match(*_prepare(pred_labels, gt_labels), t)


def instance_scores(
    pred_labels: Any, gt_labels: Any, *, thresholds: tuple[float, ...] | list[float] = (0.5, 0.75)
) -> InstanceScores:
    """Precision, recall, F1 and DSB-2018 AP at each IoU threshold, plus counts (see module docs)."""
    ts = tuple(_check_threshold(t, "thresholds") for t in thresholds)
    if not ts:
        raise InvalidInputError("thresholds: expected at least one IoU threshold, got an empty sequence")
    pred_ids, gt_ids, ious = _prepare(pred_labels, gt_labels)
    n_pred, n_gt = int(pred_ids.size), int(gt_ids.size)
    empty = 1.0 if n_pred == n_gt == 0 else 0.0
    cols: dict[str, list[Any]] = {k: [] for k in ("tp", "fp", "fn", "precision", "recall", "f1", "ap")}
    for t in ts:
        m = _match(pred_ids, gt_ids, ious, t)
        tp, fp, fn = m.tp, m.fp, m.fn
        cols["tp"].append(tp)
        cols["fp"].append(fp)
        cols["fn"].append(fn)
        cols["precision"].append(safe_ratio(tp, tp + fp, empty=empty))
        cols["recall"].append(safe_ratio(tp, tp + fn, empty=empty))
        cols["f1"].append(safe_ratio(2 * tp, 2 * tp + fp + fn, empty=empty))
        cols["ap"].append(safe_ratio(tp, tp + fp + fn, empty=empty))
    m50 = _match(pred_ids, gt_ids, ious, 0.5)
    mean_iou = float(np.mean(m50.ious)) if m50.ious else empty
    return InstanceScores(
        thresholds=ts,
        tp=tuple(cols["tp"]),
        fp=tuple(cols["fp"]),
        fn=tuple(cols["fn"]),
        precision=tuple(cols["precision"]),
        recall=tuple(cols["recall"]),
        f1=tuple(cols["f1"]),
        ap=tuple(cols["ap"]),
        mean_matched_iou=mean_iou,
        n_pred=n_pred,
        n_gt=n_gt,
        count_ratio=count_ratio(n_pred, n_gt),
    )
