"""Instance matching and scores (DSB 2018 AP, F1, count ratio)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fmscope.errors import InvalidInputError
from fmscope.metrics import count_ratio, instance_scores, match_instances


def _squares() -> tuple[np.ndarray, np.ndarray]:
    """gt: three 4x4 squares. pred: square 1 exact, square 2 shifted by 1 px (IoU 12/20), square 3 missing, plus a
    false positive."""
    gt = np.zeros((20, 20), np.int32)
    gt[0:4, 0:4] = 1
    gt[0:4, 8:12] = 2
    gt[10:14, 0:4] = 3
    pred = np.zeros_like(gt)
    pred[0:4, 0:4] = 7
    pred[0:4, 9:13] = 3
    pred[15:19, 15:19] = 9
    return pred, gt


def test_match_instances_hand_computed() -> None:
    pred, gt = _squares()
    m = match_instances(pred, gt, iou_threshold=0.5)
    assert sorted(zip(m.pred_ids, m.gt_ids, strict=True)) == [(3, 2), (7, 1)]
    assert sorted(m.ious) == pytest.approx([0.6, 1.0])
    assert m.unmatched_pred == (9,) and m.unmatched_gt == (3,)
    assert (m.tp, m.fp, m.fn) == (2, 1, 1)
    strict = match_instances(pred, gt, iou_threshold=0.75)
    assert strict.pred_ids == (7,) and set(strict.unmatched_pred) == {3, 9}


def test_instance_scores_hand_computed() -> None:
    pred, gt = _squares()
    s = instance_scores(pred, gt)
    assert s.thresholds == (0.5, 0.75)
    assert s.at(0.5).tp == 2 and s.at(0.75).tp == 1
    assert s.f1 == pytest.approx((2 * 2 / (4 + 1 + 1), 2 * 1 / (2 + 2 + 2)))
    assert s.ap == pytest.approx((2 / 4, 1 / 5))  # TP / (TP + FP + FN)
    assert s.mean_matched_iou == pytest.approx(0.8)
    assert (s.n_pred, s.n_gt, s.count_ratio) == (3, 3, 1.0)
    d = s.to_dict()
    for key in ("f1_50", "ap_50", "precision_50", "recall_50", "f1_75", "ap_75", "mean_matched_iou", "n_pred"):
        assert key in d
    assert d["ap_75"] == pytest.approx(0.2) and d["n_gt"] == 3 and d["count_ratio"] == 1.0
    with pytest.raises(InvalidInputError, match="threshold: expected one of"):
        s.at(0.9)


@pytest.mark.parametrize(
    ("pred_ids", "gt_ids", "f1"),
    [(0, 0, 1.0), (1, 0, 0.0), (0, 1, 0.0)],  # both empty -> perfect; one empty -> 0
)
def test_instance_empty_cases(pred_ids: int, gt_ids: int, f1: float) -> None:
    pred = np.zeros((6, 6), np.int32)
    gt = np.zeros((6, 6), np.int32)
    pred[:2, :2] = pred_ids
    gt[3:, 3:] = gt_ids
    s = instance_scores(pred, gt)
    assert s.f1 == (f1, f1) and s.ap == (f1, f1)


def test_count_ratio_is_not_detection_quality() -> None:
    """Same number of objects, none overlapping: count ratio 1, F1 0 (the point of naming it honestly)."""
    gt = np.zeros((10, 10), np.int32)
    pred = np.zeros_like(gt)
    gt[0:2, 0:2], gt[0:2, 5:7] = 1, 2
    pred[6:8, 0:2], pred[6:8, 5:7] = 1, 2
    s = instance_scores(pred, gt)
    assert s.count_ratio == 1.0 and s.f1 == (0.0, 0.0)


@pytest.mark.parametrize(("n_pred", "n_gt", "expected"), [(0, 0, 1.0), (3, 3, 1.0), (1, 3, 0.5), (0, 5, 0.0)])
def test_count_ratio(n_pred: int, n_gt: int, expected: float) -> None:
    assert count_ratio(n_pred, n_gt) == pytest.approx(expected)


def test_many_objects_3d_scales() -> None:
    """~500 cubes in 3D: IoU via contingency, perfect prediction with shuffled ids matches all of them."""
    gt = np.zeros((16, 64, 64), np.int32)
    n = 0
    for z in range(0, 16, 4):
        for y in range(0, 64, 4):
            for x in range(0, 64, 8):
                n += 1
                gt[z : z + 3, y : y + 3, x : x + 3] = n
    perm = np.random.default_rng(0).permutation(n) + 1
    pred = np.where(gt > 0, perm[gt - 1], 0)
    s = instance_scores(pred, gt)
    assert s.n_gt == n == 512 and s.tp == (n, n) and s.f1 == (1.0, 1.0)


BAD = [
    ({"pred_labels": np.zeros((2, 2)), "gt_labels": np.zeros((2, 3))}, "pred_labels and gt_labels: expected the same"),
    ({"pred_labels": np.array([0.5, 1]), "gt_labels": np.array([0, 1])}, "pred_labels: expected integer labels"),
    ({"pred_labels": np.array([0, 1]), "gt_labels": np.array([0, 1]), "thresholds": (0.0,)}, "thresholds: expected"),
    ({"pred_labels": np.array([0, 1]), "gt_labels": np.array([0, 1]), "thresholds": ()}, "thresholds: expected at"),
]


@pytest.mark.parametrize(("kwargs", "message"), BAD)
def test_instance_bad_inputs(kwargs: dict, message: str) -> None:
    with pytest.raises(InvalidInputError, match=message):
        instance_scores(**kwargs)


def test_bad_threshold_and_counts() -> None:
    with pytest.raises(InvalidInputError, match="iou_threshold: expected"):
        match_instances(np.zeros(3, int), np.zeros(3, int), iou_threshold=1.5)
    with pytest.raises(InvalidInputError, match="n_pred: expected a non-negative integer"):
        count_ratio(-1, 2)


@st.composite
def label_pair(draw: st.DrawFn) -> tuple[np.ndarray, np.ndarray]:
    shape = (draw(st.integers(4, 12)), draw(st.integers(4, 12)))
    rng = np.random.default_rng(draw(st.integers(0, 2**31)))
    k = draw(st.integers(1, 6))
    return rng.integers(0, k, size=shape), rng.integers(0, k, size=shape)


@settings(max_examples=25, deadline=None)
@given(label_pair(), st.integers(0, 2**31))
def test_instance_scores_invariant_to_relabelling(pair: tuple[np.ndarray, np.ndarray], seed: int) -> None:
    pred, gt = pair
    rng = np.random.default_rng(seed)
    new_ids = np.concatenate([[0], rng.permutation(100)[: pred.max()] + 1])
    relabelled = new_ids[pred]
    a = instance_scores(pred, gt, thresholds=(0.3, 0.5, 0.75))
    b = instance_scores(relabelled, gt, thresholds=(0.3, 0.5, 0.75))
    assert a.tp == b.tp and a.fp == b.fp and a.fn == b.fn
    assert a.mean_matched_iou == pytest.approx(b.mean_matched_iou)
    for v in (*a.f1, *a.ap, *a.precision, *a.recall, a.count_ratio):
        assert 0.0 <= v <= 1.0
    assert instance_scores(gt, gt).f1 == (1.0, 1.0)
    # swapping roles swaps fp and fn
    c = instance_scores(gt, pred)
    assert c.fp == a.fn[1:] and c.fn == a.fp[1:]
