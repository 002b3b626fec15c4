"""Classification scores and image similarity (PSNR, SSIM)."""

from __future__ import annotations

import math
from collections.abc import Callable

import dask.array as da
import numpy as np
import pytest

from fmscope.errors import InvalidInputError
from fmscope.metrics import classification_scores, psnr, ssim


def test_classification_hand_computed() -> None:
    y_true = [0, 0, 1, 1, 2, 2]
    y_pred = [0, 1, 1, 1, 2, 0]
    s = classification_scores(y_pred, y_true)
    assert s.labels == (0, 1, 2)
    assert s.confusion == ((1, 1, 0), (0, 2, 0), (1, 0, 1))  # rows = true, columns = predicted
    # F1: class 0 tp1 fp1 fn1 -> 0.5; class 1 tp2 fp1 fn0 -> 0.8; class 2 tp1 fp0 fn1 -> 2/3
    assert s.per_class_f1 == pytest.approx((0.5, 0.8, 2 / 3))
    assert s.macro_f1 == pytest.approx((0.5 + 0.8 + 2 / 3) / 3)
    assert s.accuracy == pytest.approx(4 / 6)
    assert s.to_dict()["confusion"][2] == [1, 0, 1]


def test_classification_strings_and_explicit_labels() -> None:
    s = classification_scores(["cat", "dog", "dog"], ["cat", "dog", "cat"], labels=["dog", "cat", "bird"])
    assert s.labels == ("dog", "cat", "bird")
    assert s.confusion == ((1, 0, 0), (1, 1, 0), (0, 0, 0))
    assert s.per_class_f1 == pytest.approx((2 / 3, 2 / 3, 1.0))  # bird absent from both -> 1.0
    assert classification_scores(np.array([1, 2]), da.from_array(np.array([1, 2]))).accuracy == 1.0


@pytest.mark.parametrize(
    ("y_pred", "y_true", "labels", "message"),
    [
        ([0, 1], [0, 1, 1], None, "y_pred and y_true: expected the same length, got 2 and 3"),
        ([], [], None, "y_pred: expected at least one sample"),
        ([[0, 1]], [[0, 1]], None, r"y_pred: expected a 1D sequence of class labels, got shape \(1, 2\)"),
        ([0, 5], [0, 1], [0, 1], r"labels: expected every y_true/y_pred value among \[0, 1\], got \['5'\]"),
        ([0, 1], [0, 1], [0, 0], "labels: expected a non-empty sequence of distinct labels"),
    ],
)
def test_classification_bad_inputs(y_pred: list, y_true: list, labels: list | None, message: str) -> None:
    with pytest.raises(InvalidInputError, match=message):
        classification_scores(y_pred, y_true, labels=labels)


def test_psnr_hand_computed() -> None:
    a = np.full((4, 4), 100, np.uint8)
    b = a.copy()
    b[0, 0] = 104  # mse = 16 / 16 = 1
    assert psnr(b, a) == pytest.approx(10 * math.log10(255**2))
    assert psnr(b.astype(np.float32), a.astype(np.float32), data_range=1.0) == pytest.approx(0.0)
    assert psnr(a, a) == math.inf
    assert psnr(b.astype(np.uint16), a.astype(np.uint16)) == pytest.approx(10 * math.log10(65535**2))


def test_ssim_constant_images_match_formula() -> None:
    """For constant images the variances vanish: SSIM = (2ab + C1) / (a^2 + b^2 + C1), C1 = (0.01 L)^2."""
    a, b, rng = 100.0, 120.0, 255.0
    c1 = (0.01 * rng) ** 2
    expected = (2 * a * b + c1) / (a * a + b * b + c1)
    for shape in ((16, 16), (12, 16, 16)):
        assert ssim(np.full(shape, a), np.full(shape, b), data_range=rng) == pytest.approx(expected)


def test_ssim_3d_and_properties() -> None:
    rng = np.random.default_rng(0)
    img = rng.random((32, 32))
    noisy = np.clip(img + rng.normal(0, 0.1, img.shape), 0, 1)
    s2 = ssim(noisy, img, data_range=1.0)
    assert 0.0 < s2 < 1.0
    assert ssim(img, img, data_range=1.0) == pytest.approx(1.0)
    assert ssim(img, noisy, data_range=1.0) == pytest.approx(s2)  # symmetric
    noisier = np.clip(img + rng.normal(0, 0.3, img.shape), 0, 1)
    assert ssim(noisier, img, data_range=1.0) < s2
    # A volume constant along Z gives the 2D value: the 3D window reduces to the 2D one.
    vol = np.repeat(img[None], 12, axis=0)
    vol_noisy = np.repeat(noisy[None], 12, axis=0)
    assert ssim(vol_noisy, vol, data_range=1.0) == pytest.approx(s2)
    u8 = (img * 255).astype(np.uint8)
    assert ssim(u8, u8) == pytest.approx(1.0)  # integer: range from dtype


@pytest.mark.parametrize(
    ("func", "pred", "target", "kwargs", "message"),
    [
        (ssim, np.zeros((16, 16)), np.zeros((16, 16)), {}, "data_range: expected a value for float images"),
        (psnr, np.zeros((4, 4)), np.zeros((4, 4)), {}, "data_range: expected a value for float images"),
        (psnr, np.zeros((4, 4)), np.zeros((4, 5)), {"data_range": 1.0}, r"expected the same shape, got \(4, 4\)"),
        (psnr, np.full((2, 2), np.nan), np.zeros((2, 2)), {"data_range": 1.0}, "pred: expected finite values"),
        (ssim, np.zeros((5, 16, 16)), np.zeros((5, 16, 16)), {"data_range": 1.0}, "at least 11 voxels"),
        (ssim, np.zeros((2, 16, 16, 16)), np.zeros((2, 16, 16, 16)), {"data_range": 1.0}, "expected a 2D"),
        (ssim, np.zeros((16, 16)), np.zeros((16, 16)), {"data_range": -1.0}, "data_range: expected a positive"),
    ],
)
def test_image_metric_bad_inputs(
    func: Callable[..., float], pred: np.ndarray, target: np.ndarray, kwargs: dict, message: str
) -> None:
    with pytest.raises(InvalidInputError, match=message):
        func(pred, target, **kwargs)


def test_metrics_import_no_torch() -> None:
    """The metrics layer must stay importable without torch (checked in a fresh interpreter)."""
    import subprocess
    import sys

    code = "import sys, fmscope.metrics; sys.exit(1 if 'torch' in sys.modules else 0)"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0
