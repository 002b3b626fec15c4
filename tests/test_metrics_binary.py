"""Binary and multi-class overlap scores."""

from __future__ import annotations

import dask.array as da
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from fmscope.errors import InvalidInputError
from fmscope.metrics import binary_scores, dice, iou, multiclass_scores

# (pred, gt, expected (dice, iou, accuracy, precision, recall, tp, fp, fn, tn))
BINARY_CASES = [
    ([1, 1, 0, 0], [1, 0, 1, 0], (0.5, 1 / 3, 0.5, 0.5, 0.5, 1, 1, 1, 1)),
    ([1, 1, 1, 0], [1, 1, 0, 0], (0.8, 2 / 3, 0.75, 2 / 3, 1.0, 2, 1, 0, 1)),
    ([0, 0, 0, 0], [0, 0, 0, 0], (1.0, 1.0, 1.0, 1.0, 1.0, 0, 0, 0, 4)),  # both empty: perfect agreement
    ([0, 0, 0, 0], [0, 1, 1, 0], (0.0, 0.0, 0.5, 0.0, 0.0, 0, 0, 2, 2)),  # empty prediction
    ([1, 0, 0, 0], [0, 0, 0, 0], (0.0, 0.0, 0.75, 0.0, 0.0, 0, 1, 0, 3)),  # empty ground truth
    ([[5, 0], [2, 0]], [[True, True], [False, False]], (0.5, 1 / 3, 0.5, 0.5, 0.5, 1, 1, 1, 1)),  # nonzero = fg
    ([1.0, 0.0, 0.5, 0.0], [1, 0, 0, 0], (2 / 3, 0.5, 0.75, 0.5, 1.0, 1, 1, 0, 2)),
]


@pytest.mark.parametrize(("pred", "gt", "expected"), BINARY_CASES)
def test_binary_scores_hand_computed(pred: list, gt: list, expected: tuple) -> None:
    s = binary_scores(np.asarray(pred), np.asarray(gt))
    got = (s.dice, s.iou, s.accuracy, s.precision, s.recall, s.tp, s.fp, s.fn, s.tn)
    assert got == pytest.approx(expected)
    assert dice(np.asarray(pred), np.asarray(gt)) == pytest.approx(expected[0])
    assert iou(np.asarray(pred), np.asarray(gt)) == pytest.approx(expected[1])


def test_binary_scores_3d_and_dask_and_dict() -> None:
    gt = np.zeros((4, 8, 8), bool)
    gt[1:3, 2:6, 2:6] = True
    pred = np.zeros_like(gt)
    pred[1:3, 2:6, 2:4] = True  # half of gt
    s = binary_scores(da.from_array(pred, chunks=2), da.from_array(gt, chunks=3))
    assert (s.tp, s.fp, s.fn) == (16, 0, 16)
    assert s.dice == pytest.approx(2 / 3)
    assert s.to_dict()["tn"] == gt.size - 32


def test_inputs_untouched() -> None:
    pred = np.array([1.0, 0.0, 2.0])
    gt = np.array([1, 1, 0])
    before = (pred.copy(), gt.copy())
    binary_scores(pred, gt)
    np.testing.assert_array_equal(pred, before[0])
    np.testing.assert_array_equal(gt, before[1])


BAD_INPUTS = [
    (np.zeros((3, 4)), np.zeros((4, 3)), r"pred and gt: expected the same shape, got \(3, 4\) and \(4, 3\)"),
    (np.array([np.nan, 1.0]), np.array([0, 1]), "pred: expected no NaN"),
    (np.array([0, 1]), np.array([np.nan, 1.0]), "gt: expected no NaN"),
    (np.zeros((0, 3)), np.zeros((0, 3)), "pred: expected a non-empty array"),
    (np.array(["a", "b"]), np.array([0, 1]), "pred: expected a numeric or boolean array"),
]


@pytest.mark.parametrize(("pred", "gt", "message"), BAD_INPUTS)
def test_binary_bad_inputs(pred: np.ndarray, gt: np.ndarray, message: str) -> None:
    with pytest.raises(InvalidInputError, match=message):
        binary_scores(pred, gt)


masks = arrays(np.bool_, st.tuples(st.integers(1, 6), st.integers(1, 6)))


@settings(max_examples=25, deadline=None)
@given(st.data())
def test_binary_properties(data: st.DataObject) -> None:
    a = data.draw(masks)
    b = data.draw(arrays(np.bool_, a.shape))
    s = binary_scores(a, b)
    assert s.dice == pytest.approx(binary_scores(b, a).dice)  # symmetric
    assert s.dice == pytest.approx(2 * s.iou / (1 + s.iou))
    for v in (s.dice, s.iou, s.accuracy, s.precision, s.recall):
        assert 0.0 <= v <= 1.0
    assert s.tp + s.fp + s.fn + s.tn == a.size
    same = binary_scores(a, a)
    assert same.dice == same.iou == same.accuracy == 1.0


def test_multiclass_hand_computed() -> None:
    gt = np.array([0, 0, 1, 1, 2, 2])
    pred = np.array([0, 1, 1, 1, 2, 0])
    m = multiclass_scores(pred, gt)
    assert m.classes == (1, 2)
    # class 1: tp 2, fp 1, fn 0 -> dice 0.8; class 2: tp 1, fp 0, fn 1 -> dice 2/3
    assert [s.dice for s in m.per_class] == pytest.approx([0.8, 2 / 3])
    assert m.mean.dice == pytest.approx((0.8 + 2 / 3) / 2)
    assert m.mean.tp == 3
    assert m.accuracy == pytest.approx(4 / 6)
    with_bg = multiclass_scores(pred, gt, ignore_background=False)
    assert with_bg.classes == (0, 1, 2)
    assert with_bg.per_class[0].dice == pytest.approx(0.5)  # class 0: tp 1, fp 1, fn 1
    assert set(m.to_dict()["per_class"]) == {"1", "2"}


def test_multiclass_explicit_and_absent_classes() -> None:
    gt = np.array([[0, 3], [3, 0]])
    m = multiclass_scores(gt, gt, classes=[3, 7])
    assert m.classes == (3, 7)
    assert [s.dice for s in m.per_class] == [1.0, 1.0]  # 7 absent from both: nothing to find, nothing found
    empty = multiclass_scores(np.zeros((2, 2), int), np.zeros((2, 2), int))
    assert empty.classes == () and empty.mean.dice == 1.0 and empty.accuracy == 1.0


@pytest.mark.parametrize(
    ("pred", "gt", "message"),
    [
        (np.array([0.5, 1.0]), np.array([0, 1]), "pred: expected integer labels"),
        (np.array([0, 1, 2]), np.array([0, 1]), "pred and gt: expected the same shape"),
    ],
)
def test_multiclass_bad_inputs(pred: np.ndarray, gt: np.ndarray, message: str) -> None:
    with pytest.raises(InvalidInputError, match=message):
        multiclass_scores(pred, gt)
