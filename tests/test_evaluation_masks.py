"""evaluate_segmentation: foreground values, instances from binary masks, multi-class headline numbers."""

from __future__ import annotations

import numpy as np
import pytest

from fmscope.errors import InvalidInputError
from fmscope.evaluation import binarize, evaluate_segmentation


def test_foreground_values_select_the_class() -> None:
    gt = np.array([[0, 255], [255, 0]], np.uint8)  # ISBI convention: 0 = membrane
    pred = np.array([[1, 0], [0, 0]], np.uint8)
    scores = evaluate_segmentation(pred, gt, gt_foreground=[0]).to_dict()
    assert scores["dice"] == pytest.approx(2 * 1 / (1 + 2))
    assert binarize(gt, [0]).sum() == 2


def test_binary_masks_become_components_for_instances() -> None:
    gt = np.zeros((20, 20), np.uint8)
    gt[2:6, 2:6] = 255
    gt[10:15, 10:15] = 255
    pred = np.zeros_like(gt)
    pred[2:6, 2:6] = 1  # finds one of the two objects exactly
    scores = evaluate_segmentation(pred, gt, instances=True).to_dict()
    assert scores["n_gt"] == 2 and scores["n_pred"] == 1
    assert scores["f1_50"] == pytest.approx(2 / 3)
    assert scores["count_ratio"] == pytest.approx(2 / 3)


def test_instance_label_maps_are_used_as_they_are() -> None:
    gt = np.zeros((10, 10), np.int32)
    gt[:, :5], gt[:, 5:] = 1, 2  # touching objects: components would merge them
    scores = evaluate_segmentation(gt.copy(), gt, instances=True).to_dict()
    assert scores["n_gt"] == 2 and scores["f1_50"] == 1.0


def test_multiclass_headline_is_macro_mean() -> None:
    gt = np.array([0, 1, 1, 2, 2, 2])
    pred = np.array([0, 1, 2, 2, 2, 2])
    scores = evaluate_segmentation(pred, gt, multiclass=True).to_dict()
    # class 1: dice 2*1/(1+2) = 2/3; class 2: dice 2*3/(4+3) = 6/7
    assert scores["dice"] == pytest.approx((2 / 3 + 6 / 7) / 2)
    assert scores["accuracy"] == pytest.approx(5 / 6)
    assert len(scores["per_class"]) == 2


@pytest.mark.parametrize(
    ("pred", "gt", "message"),
    [
        (np.zeros((3, 3)), np.zeros((3, 4)), "shape"),
        (np.zeros((0, 3)), np.zeros((0, 3)), "empty"),
        (np.full((2, 2), np.nan), np.zeros((2, 2)), "NaN"),
    ],
)
def test_bad_inputs(pred: np.ndarray, gt: np.ndarray, message: str) -> None:
    with pytest.raises(InvalidInputError, match=message):
        evaluate_segmentation(pred, gt)
