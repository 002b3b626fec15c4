"""Streamed intensity statistics and the replayable intensity profile."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import dask.array as da
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from fmscope.errors import FileFormatError, InvalidInputError, OutputExistsError
from fmscope.intensity import IntensityProfile, IntensityStats, apply_profile, compute_stats, fit_profile
from fmscope.intensity import stats as stats_mod

QS = (0.0, 0.5, 1.0, 25.0, 50.0, 99.0, 99.5, 99.8, 100.0)


def _values(s: IntensityStats) -> np.ndarray:
    return np.array([v for _, v in s.percentiles])


@st.composite
def _int_volume_and_chunks(draw: st.DrawFn) -> tuple[np.ndarray, tuple[int, ...]]:
    dtype = draw(st.sampled_from([np.uint8, np.uint16, np.int16, np.int8]))
    shape = draw(hnp.array_shapes(min_dims=1, max_dims=3, min_side=1, max_side=9))
    data = draw(hnp.arrays(dtype, shape))
    chunks = tuple(draw(st.integers(1, n)) for n in shape)
    return data, chunks


@settings(max_examples=25, deadline=None)
@given(_int_volume_and_chunks(), st.lists(st.floats(0, 100), min_size=1, max_size=4))
def test_streamed_integer_percentiles_are_exact(vol: tuple[np.ndarray, tuple[int, ...]], qs: list[float]) -> None:
    data, chunks = vol
    s = compute_stats(da.from_array(data, chunks=chunks), percentiles=qs)
    # float64 reference: identical arithmetic, without numpy's int8/int16 overflow in (b - a).
    ref = np.percentile(data.astype(np.float64), np.array(qs))
    assert s.exact
    np.testing.assert_array_equal(_values(s), ref)
    assert (s.min, s.max) == (data.min(), data.max())
    assert s.mean == pytest.approx(data.mean(dtype=np.float64), rel=1e-12, abs=1e-9)
    assert s.std == pytest.approx(data.std(dtype=np.float64), rel=1e-9, abs=1e-9)


def test_uint16_matches_numpy_itself_and_numpy_input_equals_dask() -> None:
    rng = np.random.default_rng(1)
    data = rng.gamma(2.0, 800.0, size=(11, 23, 17)).astype(np.uint16)
    s_np = compute_stats(data, percentiles=QS)
    s_da = compute_stats(da.from_array(data, chunks=(4, 7, 5)), percentiles=QS)
    np.testing.assert_array_equal(_values(s_np), np.percentile(data, QS))
    assert s_np == s_da
    assert s_np.value(99.8) == np.percentile(data, 99.8)
    assert (s_np.n_voxels, s_np.n_nonfinite, s_np.dtype) == (data.size, 0, "uint16")


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int32])
def test_float_percentiles_exact_after_refinement(dtype: type) -> None:
    rng = np.random.default_rng(2)
    data: np.ndarray = (rng.lognormal(3.0, 1.0, size=(9, 31, 29)) * 100).astype(dtype)
    s = compute_stats(da.from_array(data, chunks=(4, 10, 8)), percentiles=QS)
    assert s.exact
    np.testing.assert_array_equal(_values(s), np.percentile(data, np.array(QS)))
    assert s.mean == pytest.approx(data.astype(np.float64).mean(), rel=1e-12)
    assert s.std == pytest.approx(data.astype(np.float64).std(), rel=1e-9)


def test_float_percentiles_approximate_within_documented_tolerance(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(stats_mod, "REFINE_LIMIT", 10)  # force the no-refinement path
    rng = np.random.default_rng(3)
    data = rng.normal(0, 5, size=(20, 40, 40)).astype(np.float32)
    s = compute_stats(da.from_array(data, chunks=(7, 16, 16)), percentiles=QS)
    tol = (float(data.max()) - float(data.min())) / stats_mod.N_BINS
    assert not s.exact
    np.testing.assert_allclose(_values(s), np.percentile(data, np.array(QS)), rtol=0, atol=tol)


def test_nonfinite_voxels_are_excluded_counted_and_warned(caplog: pytest.LogCaptureFixture) -> None:
    rng = np.random.default_rng(4)
    data = rng.random((6, 10, 10)).astype(np.float32)
    data[0, 0, :4] = np.nan
    data[1, 1, 1] = np.inf
    data[2, 2, 2] = -np.inf
    finite = data[np.isfinite(data)]
    with caplog.at_level(logging.WARNING):
        s = compute_stats(da.from_array(data, chunks=(4, 5, 5)), percentiles=QS)
    assert "6 of 600 voxels are NaN/Inf" in caplog.text
    assert (s.n_nonfinite, s.n_voxels) == (6, 600)
    assert (s.min, s.max) == (finite.min(), finite.max())
    np.testing.assert_array_equal(_values(s), np.percentile(finite, np.array(QS)))


@pytest.mark.parametrize(
    ("data", "kwargs", "message"),
    [
        (np.zeros((0, 4), np.uint8), {}, "non-empty"),
        (np.full((3, 3), np.nan), {}, "at least one finite voxel"),
        (np.zeros((3, 3), np.uint8), {"percentiles": (50, 101)}, "percentiles: expected values in [0, 100]"),
        ([[1, 2]], {}, "expected a numpy or dask array"),
        (np.zeros((2, 2), complex), {}, "bool, integer or float"),
    ],
)
def test_compute_stats_bad_input(data: object, kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(InvalidInputError, match=message.replace("[", r"\[").replace("]", r"\]")):
        compute_stats(data, **kwargs)  # type: ignore[arg-type]


def test_stats_value_and_dict_round_trip() -> None:
    s = compute_stats(np.arange(101, dtype=np.uint8), percentiles=(1.0, 99.8))
    assert s.value(1) == 1.0
    assert s.value(99.8) == pytest.approx(99.8)
    assert IntensityStats.from_dict(s.to_dict()) == s
    with pytest.raises(InvalidInputError, match="q: percentile 50"):
        s.value(50)


# ---------------------------------------------------------------- profile


def _phantom(shape: tuple[int, ...] = (8, 40, 48), seed: int = 5) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.gamma(3.0, 300.0, size=shape).astype(np.uint16) + 100


def test_profile_fit_apply_maps_percentiles_to_unit_range() -> None:
    data = _phantom()
    before = data.copy()
    prof = fit_profile(data)
    assert (prof.low, prof.high) == (np.percentile(data, 1.0), np.percentile(data, 99.8))
    out = apply_profile(data, prof)
    np.testing.assert_array_equal(data, before)  # input untouched
    assert out.dtype == np.float32 and out.shape == data.shape
    assert out.min() == 0.0 and out.max() == 1.0
    assert np.mean(out == 0.0) == pytest.approx(0.01, abs=0.005)
    assert np.mean(out == 1.0) == pytest.approx(0.002, abs=0.002)
    inside = (data > prof.low) & (data < prof.high)
    expected = (data[inside].astype(np.float64) - prof.low) / (prof.high - prof.low)
    np.testing.assert_allclose(out[inside], expected, atol=1e-6)


def test_profile_json_round_trip_is_exact_and_replays(tmp_path: Path) -> None:
    data = _phantom()
    prof = fit_profile(
        data,
        gamma=0.7,
        clahe=True,
        clahe_kernel_size=(8, 8),
        denoise="gaussian",
        denoise_sigma=0.8,
        spacing=(3.0, 1.0, 1.0),
        target_spacing=(1.5, 1.0, 1.0),
        output="uint8",
    )
    assert IntensityProfile.from_json(prof.to_json()) == prof
    path = prof.save(tmp_path / "profile.json")
    loaded = IntensityProfile.load(path)
    assert loaded == prof
    with pytest.raises(OutputExistsError):
        prof.save(path)
    out1, out2 = apply_profile(data, prof), apply_profile(data, loaded)
    assert out1.dtype == np.uint8 and out1.shape == (16, 40, 48)
    np.testing.assert_array_equal(out1, out2)


@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"gamma": 0.5, "output": "uint8"},
        {"denoise": "gaussian", "denoise_sigma": 1.2},
        {"denoise": "median", "denoise_size": 3, "gamma": 2.0},
        {"clahe": True},
        {"spacing": (2.0, 1.0, 1.0), "target_spacing": (1.0, 1.0, 1.0)},
        {"denoise": "gaussian", "clahe": True, "spacing": (2.0, 1.0, 1.0), "target_spacing": (1.0, 2.0, 2.0)},
    ],
)
def test_apply_profile_dask_equals_numpy(kwargs: dict[str, object]) -> None:
    data = _phantom((10, 33, 41))
    prof = fit_profile(data, **kwargs)  # type: ignore[arg-type]
    lazy = da.from_array(data, chunks=(3, 12, 17))
    lazy_prof = fit_profile(lazy, **kwargs)  # type: ignore[arg-type]
    assert lazy_prof.stats is not None and prof.stats is not None
    assert lazy_prof.stats.percentiles == prof.stats.percentiles  # exact; mean/std may differ in the last bits
    assert dataclasses.replace(lazy_prof, stats=None) == dataclasses.replace(prof, stats=None)
    out_np = apply_profile(data, prof)
    out_da = apply_profile(lazy, prof)
    assert isinstance(out_da, da.Array)
    computed = out_da.compute()
    assert computed.dtype == out_np.dtype and computed.shape == out_np.shape
    if out_np.dtype == np.uint8:
        assert np.abs(computed.astype(int) - out_np.astype(int)).max() <= 1
    else:
        np.testing.assert_allclose(computed, out_np, atol=1e-6)


def test_profile_on_2d_image_and_constant_volume() -> None:
    img = _phantom((64, 64))
    prof = fit_profile(img, clahe=True, gamma=1.5)
    out = apply_profile(img, prof)
    assert out.shape == (64, 64) and out.dtype == np.float32 and out.min() >= 0 and out.max() <= 1
    const = np.full((4, 8, 8), 7, np.uint16)
    cprof = fit_profile(const)
    assert cprof.low == cprof.high == 7.0
    np.testing.assert_array_equal(apply_profile(const, cprof), np.zeros(const.shape, np.float32))
    np.testing.assert_array_equal(apply_profile(const + 1, cprof), np.ones(const.shape, np.float32))


def test_apply_profile_nan_and_labels() -> None:
    data = np.linspace(0, 1, 4 * 6 * 6, dtype=np.float32).reshape(4, 6, 6)
    bad = data.copy()
    bad[0, 0, 0], bad[0, 0, 1], bad[0, 0, 2] = np.nan, np.inf, -np.inf
    out = apply_profile(bad, fit_profile(data))
    assert (out[0, 0, 0], out[0, 0, 1], out[0, 0, 2]) == (0.0, 1.0, 0.0)
    prof = fit_profile(data, spacing=(2.0, 1.0, 1.0), target_spacing=(1.0, 1.0, 1.0))
    labels = (np.arange(4 * 6 * 6).reshape(4, 6, 6) % 5).astype(np.int32)
    lab_out = apply_profile(labels, prof, is_label=True)
    assert lab_out.dtype == np.int32 and lab_out.shape == (8, 6, 6)
    assert set(np.unique(lab_out)) == set(np.unique(labels))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"denoise": "bilateral"}, "denoise: expected one of"),
        ({"gamma": -1.0}, "gamma: expected a positive"),
        ({"low_percentile": 99.0, "high_percentile": 1.0}, "low_percentile/high_percentile: expected low < high"),
        ({"spacing": (5.0, 1.0, 1.0), "target_spacing": (1.0, 1.0)}, "target_spacing: expected 3 values"),
        ({"target_spacing": (1.0, 1.0, 1.0)}, "target_spacing: needs spacing"),
        ({"output": "uint16"}, "output: expected 'float32' or 'uint8'"),
        ({"clahe_clip_limit": 0.0}, "clahe_clip_limit: expected a number in"),
        ({"denoise_size": 0}, "denoise_size: expected a positive integer"),
    ],
)
def test_fit_profile_bad_parameters(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(InvalidInputError, match=message):
        fit_profile(np.zeros((4, 5, 6), np.uint8), **kwargs)  # type: ignore[arg-type]


def test_profile_load_rejects_bad_files(tmp_path: Path) -> None:
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(FileFormatError, match="invalid JSON"):
        IntensityProfile.load(tmp_path / "bad.json")
    (tmp_path / "other.json").write_text('{"schema": "something/else"}')
    with pytest.raises(FileFormatError, match="expected schema"):
        IntensityProfile.load(tmp_path / "other.json")
    with pytest.raises(FileFormatError, match="no such file"):
        IntensityProfile.load(tmp_path / "missing.json")


def test_profile_on_real_em_data(shared_data: Path) -> None:
    import tifffile

    files = sorted((shared_data / "isbi2012_em_membranes").rglob("*.tif*"))
    if not files:
        pytest.skip("no TIFF under isbi2012_em_membranes")
    vol = tifffile.imread(files[0])
    prof = fit_profile(vol, output="uint8")
    out = apply_profile(vol, prof)
    assert out.dtype == np.uint8 and out.shape == vol.shape
    assert prof.low == np.percentile(vol, 1.0) and prof.high == np.percentile(vol, 99.8)
