"""Windowing, gamma, CLAHE, denoising and resampling: numpy and dask give the same values; bad input is named."""

from __future__ import annotations

import dask.array as da
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import ndimage

from fmscope.errors import InvalidInputError
from fmscope.intensity import apply_clahe, apply_gamma, denoise, normalize, resample_to_spacing, to_uint8


@pytest.mark.parametrize(
    ("values", "low", "high", "clip", "expected"),
    [
        ([0, 50, 100, 150], 50, 150, True, [0.0, 0.0, 0.5, 1.0]),
        ([0, 200], 50, 150, False, [-0.5, 1.5]),
        ([np.nan, np.inf, -np.inf, 100.0], 50, 150, True, [0.0, 1.0, 0.0, 0.5]),
        ([np.nan, np.inf, -np.inf], 50, 150, False, [0.0, 1.0, 0.0]),
    ],
)
def test_normalize_cases(values: list[float], low: float, high: float, clip: bool, expected: list[float]) -> None:
    out = normalize(np.array(values), low, high, clip=clip)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, expected)


@pytest.mark.parametrize(
    ("values", "low", "high", "expected"),
    [
        ([0, 1000, 2000, 3000, 4000], 1000, 3000, [0, 0, 128, 255, 255]),
        ([10, 11, 12], 10, 12, [0, 128, 255]),
        ([np.nan, 0.5], 0.0, 1.0, [0, 128]),
    ],
)
def test_to_uint8_windowing(values: list[float], low: float, high: float, expected: list[int]) -> None:
    out = to_uint8(np.array(values), low, high)
    assert out.dtype == np.uint8
    np.testing.assert_array_equal(out, expected)
    lazy = to_uint8(da.from_array(np.array(values), chunks=2), low, high)
    np.testing.assert_array_equal(lazy.compute(), expected)


@pytest.mark.parametrize(("low", "high"), [(5, 5), (6, 5), (0, np.nan), ("a", 1)])
def test_normalize_rejects_bad_window(low: object, high: object) -> None:
    with pytest.raises(InvalidInputError, match="low/high: expected"):
        normalize(np.zeros(3), low, high)  # type: ignore[arg-type]


@settings(max_examples=25, deadline=None)
@given(st.floats(0.1, 5.0))
def test_gamma_is_monotonic_and_keeps_ends(gamma: float) -> None:
    x = np.linspace(0, 1, 101, dtype=np.float32)
    y = apply_gamma(x, gamma)
    assert y.dtype == np.float32
    assert np.all(np.diff(y) >= 0)
    assert (y[0], y[-1]) == (0.0, 1.0)
    np.testing.assert_allclose(y, x.astype(np.float64) ** gamma, atol=1e-6)


@pytest.mark.parametrize("gamma", [-1.0, 0.0, np.inf, "x"])
def test_gamma_rejects_non_positive(gamma: object) -> None:
    with pytest.raises(InvalidInputError, match="gamma: expected a positive"):
        apply_gamma(np.zeros(3), gamma)  # type: ignore[arg-type]


def test_clahe_per_slice_dask_equals_numpy_and_raises_contrast() -> None:
    rng = np.random.default_rng(0)
    low_contrast = (0.4 + 0.1 * rng.random((3, 40, 48))).astype(np.float32)
    low_contrast[1] = 0.5  # a constant slice stays as it is
    out = apply_clahe(low_contrast, clip_limit=0.02, kernel_size=16)
    assert out.dtype == np.float32 and out.shape == low_contrast.shape
    assert out[0].std() > 2 * low_contrast[0].std()
    np.testing.assert_array_equal(out[1], 0.5)
    lazy = apply_clahe(da.from_array(low_contrast, chunks=(2, 20, 20)), clip_limit=0.02, kernel_size=16)
    np.testing.assert_array_equal(lazy.compute(), out)
    vol = apply_clahe(low_contrast, per_slice=False)
    assert vol.shape == low_contrast.shape


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"clip_limit": 2.0}, "clahe_clip_limit"),
        ({"kernel_size": (8, 8, 8)}, "clahe_kernel_size: expected 1 or 2 values"),
        ({"kernel_size": (0, 4)}, "clahe_kernel_size: expected positive integers"),
    ],
)
def test_clahe_bad_parameters(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(InvalidInputError, match=message):
        apply_clahe(np.zeros((2, 8, 8), np.float32), **kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(("method", "kwargs"), [("gaussian", {"sigma": 1.5}), ("median", {"size": 3})])
def test_denoise_dask_equals_numpy_and_matches_scipy(method: str, kwargs: dict[str, float]) -> None:
    rng = np.random.default_rng(1)
    data = rng.integers(0, 4000, size=(9, 21, 19)).astype(np.uint16)
    before = data.copy()
    out = denoise(data, method, **kwargs)  # type: ignore[arg-type]
    np.testing.assert_array_equal(data, before)
    if method == "gaussian":
        assert out.dtype == np.float32
        np.testing.assert_allclose(out, ndimage.gaussian_filter(data.astype(np.float64), 1.5), rtol=1e-5)
        assert out.std() < data.std()
    else:
        assert out.dtype == np.uint16
        np.testing.assert_array_equal(out, ndimage.median_filter(data, size=3))
    lazy = denoise(da.from_array(data, chunks=(4, 7, 6)), method, **kwargs).compute()  # type: ignore[arg-type]
    np.testing.assert_array_equal(lazy, out)


def test_denoise_none_returns_a_copy_and_unknown_method_raises() -> None:
    data = np.arange(8, dtype=np.uint8)
    out = denoise(data, "none")
    assert out is not data
    np.testing.assert_array_equal(out, data)
    with pytest.raises(InvalidInputError, match="denoise: expected one of \\['none', 'gaussian', 'median'\\]"):
        denoise(data, "wiener")  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError, match="denoise_sigma"):
        denoise(data, "gaussian", sigma=-1)


@pytest.mark.parametrize(
    ("shape", "spacing", "target", "expected_shape"),
    [
        ((4, 10, 12), (5.0, 1.0, 1.0), (1.0, 1.0, 1.0), (20, 10, 12)),
        ((20, 10, 12), (1.0, 1.0, 1.0), (5.0, 2.0, 1.0), (4, 5, 12)),
        ((10, 12), (0.5, 0.5), (1.0, 0.25), (5, 24)),
        ((2, 6, 8, 8), (2.0, 1.0, 1.0), (1.0, 1.0, 1.0), (2, 12, 8, 8)),  # leading channel axis kept
        ((3, 5, 7), (1.0, 1.0, 1.0), (1.0, 1.0, 1.0), (3, 5, 7)),
    ],
)
def test_resample_shapes_and_dask_equals_numpy(
    shape: tuple[int, ...], spacing: tuple[float, ...], target: tuple[float, ...], expected_shape: tuple[int, ...]
) -> None:
    rng = np.random.default_rng(2)
    img = rng.random(shape).astype(np.float32)
    out = resample_to_spacing(img, spacing, target)
    assert out.shape == expected_shape and out.dtype == np.float32
    assert img.min() <= out.min() and out.max() <= img.max()  # linear: no overshoot
    zoom = ndimage.zoom(img, np.array(expected_shape) / shape, order=1, grid_mode=True, mode="nearest")
    np.testing.assert_allclose(out, zoom, atol=1e-6)
    lazy = resample_to_spacing(da.from_array(img, chunks=tuple(max(1, n // 2) for n in shape)), spacing, target)
    assert lazy.shape == expected_shape
    np.testing.assert_allclose(lazy.compute(), out, atol=1e-6)


@pytest.mark.parametrize("lazy", [False, True])
def test_resample_labels_stay_integer_with_same_label_set(lazy: bool) -> None:
    rng = np.random.default_rng(3)
    labels = rng.integers(0, 6, size=(4, 9, 10)).astype(np.uint16) * 1000
    src = da.from_array(labels, chunks=(3, 4, 4)) if lazy else labels
    out = np.asarray(resample_to_spacing(src, (5.0, 1.0, 1.0), (1.0, 1.0, 1.0), is_label=True))
    assert out.shape == (20, 9, 10) and out.dtype == np.uint16
    assert set(np.unique(out)) == set(np.unique(labels))
    np.testing.assert_array_equal(out[::5], labels)  # each source slice is repeated 5 times, unchanged


@pytest.mark.parametrize(
    ("spacing", "target", "kwargs", "message"),
    [
        ((5.0, 1.0, 1.0), (1.0, 1.0), {}, "target_spacing: expected 3 values"),
        ((1.0, 1.0, 1.0, 1.0), (1.0, 1.0, 1.0, 1.0), {}, "spacing: expected 1 to 3 positive"),
        ((1.0, -1.0, 1.0), (1.0, 1.0, 1.0), {}, "spacing: expected 1 to 3 positive"),
        ((1.0, 1.0, 1.0), (1.0, 1.0, 0.0), {}, "target_spacing: expected 1 to 3 positive"),
        ((1.0, 1.0, 1.0), (2.0, 1.0, 1.0), {"order": 7}, "order: expected an integer in 0..5"),
    ],
)
def test_resample_bad_input(
    spacing: tuple[float, ...], target: tuple[float, ...], kwargs: dict[str, object], message: str
) -> None:
    with pytest.raises(InvalidInputError, match=message):
        resample_to_spacing(np.zeros((4, 4, 4), np.float32), spacing, target, **kwargs)  # type: ignore[arg-type]


def test_resample_dask_rejects_high_order_and_2d_spacing_on_1d() -> None:
    with pytest.raises(InvalidInputError, match="order: dask input supports order 0 or 1"):
        resample_to_spacing(da.zeros((4, 4), chunks=2), (1.0, 1.0), (2.0, 2.0), order=3)
    with pytest.raises(InvalidInputError, match="spacing: expected at most 1 values"):
        resample_to_spacing(np.zeros(4), (1.0, 1.0), (2.0, 2.0))
