"""Sliding-window prediction: exact blending, padding, zarr/dask inputs, bounded memory, errors, MONAI agreement."""

from __future__ import annotations

import tracemalloc
from pathlib import Path
from typing import Any

import dask.array as da
import numpy as np
import pytest
import torch
import torch.nn.functional as F
import zarr
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import RecordingArray
from fmscope.errors import InvalidInputError
from fmscope.inference.predict import (
    WindowConfig,
    blend_device,
    count_windows,
    gaussian_importance,
    sliding_window_predict,
    window_starts,
)


def identity(x: torch.Tensor) -> torch.Tensor:
    return x


def mean_filter(x: torch.Tensor) -> torch.Tensor:
    """A smooth non-pointwise predictor: 3^3 mean over the voxels inside the window."""
    return F.avg_pool3d(x, 3, stride=1, padding=1, count_include_pad=False)

    def __array__(self, *args: Any, **kwargs: Any) -> np.ndarray:
        raise AssertionError("the whole volume was requested")


IDENTITY_CASES = [  # (shape, window, overlap, blend, flips)
    ((20, 17, 23), (8, 8, 8), 0.25, "gaussian", False),
    ((20, 17, 23), (8, 8, 8), 0.5, "constant", True),
    ((13, 9, 11), (4, 6, 5), 0.0, "gaussian", True),
    ((13, 9, 11), (4, 6, 5), 0.0, "constant", False),
    ((3, 5, 2), (8, 8, 8), 0.25, "gaussian", False),  # smaller than the window on every axis
    ((1, 30, 4), (8, 8, 8), 0.5, "gaussian", True),  # one axis smaller than half the window
    ((33, 47), (16, 16), 0.25, "gaussian", True),
    ((33, 47), (16, 16), 0.0, "constant", False),
    ((7, 40), (16, 8), 0.5, "gaussian", False),
    ((1, 1), (4, 4), 0.25, "gaussian", True),
]


@pytest.mark.parametrize("pad_mode", ["reflect", "constant"])
@pytest.mark.parametrize(("shape", "window", "overlap", "blend", "flips"), IDENTITY_CASES)
def test_identity_reproduces_input(
    shape: tuple[int, ...], window: tuple[int, ...], overlap: float, blend: Any, flips: bool, pad_mode: str
) -> None:
    x = np.random.default_rng(0).random(shape, dtype=np.float32)
    before = x.copy()
    config = WindowConfig(window, overlap=overlap, blend=blend, batch_size=3, flips=flips, pad_mode=pad_mode)
    y = sliding_window_predict(x, identity, config, out_channels=1)
    assert y.shape == (1, *shape) and y.dtype == np.float32
    np.testing.assert_allclose(y[0], x, atol=1e-5)
    np.testing.assert_array_equal(x, before)  # input untouched


def test_multichannel_input_and_output() -> None:
    x = np.random.default_rng(1).random((2, 10, 12, 9), dtype=np.float32)

    def predictor(t: torch.Tensor) -> torch.Tensor:  # (B, 2, ...) -> (B, 3, ...)
        return torch.cat([t[:, :1], 2 * t[:, 1:], t.sum(1, keepdim=True) + 1], dim=1)

    y = sliding_window_predict(x, predictor, WindowConfig((6, 6, 6), flips=True), out_channels=3)
    np.testing.assert_allclose(y, np.stack([x[0], 2 * x[1], x[0] + x[1] + 1]), atol=1e-5)


def test_integer_input_is_converted_not_normalised() -> None:
    x = np.arange(6 * 7 * 8, dtype=np.uint16).reshape(6, 7, 8)
    y = sliding_window_predict(x, identity, WindowConfig((4, 4, 4)), out_channels=1)
    np.testing.assert_allclose(y[0], x.astype(np.float32), rtol=1e-6)


@pytest.mark.parametrize(("pad_mode", "expected"), [("reflect", 3.0), ("constant", 3.0 / 64)])
def test_small_input_is_padded_with_pad_mode(pad_mode: str, expected: float) -> None:
    def window_mean(t: torch.Tensor) -> torch.Tensor:
        return t.mean(dim=(2, 3, 4), keepdim=True).expand_as(t)

    x = np.full((1, 1, 1), 3.0, dtype=np.float32)  # far smaller than half the window: reflect falls back to mirroring
    y = sliding_window_predict(x, window_mean, WindowConfig((4, 4, 4), pad_mode=pad_mode), out_channels=1)
    np.testing.assert_allclose(y, np.full((1, 1, 1, 1), expected), rtol=1e-6)


def test_zarr_input_and_output_match_numpy(tmp_path: Path) -> None:
    x = np.random.default_rng(2).random((18, 21, 16), dtype=np.float32)
    src = zarr.open_array(store=tmp_path / "in.zarr", mode="w", shape=x.shape, chunks=(8, 8, 8), dtype="float32")
    src[:] = x
    out = zarr.open_array(
        store=tmp_path / "out.zarr", mode="w", shape=(1, *x.shape), chunks=(1, 5, 8, 8), dtype="float32"
    )
    config = WindowConfig((8, 8, 8), overlap=0.5)
    result = sliding_window_predict(src, mean_filter, config, out_channels=1, out=out)
    assert result is out
    expected = sliding_window_predict(x, mean_filter, config, out_channels=1)
    np.testing.assert_allclose(np.asarray(out[:]), expected, atol=1e-6)


def test_dask_input() -> None:
    x = np.random.default_rng(3).random((12, 14, 10), dtype=np.float32)
    y = sliding_window_predict(da.from_array(x, chunks=5), identity, WindowConfig((8, 8, 8)), out_channels=1)
    np.testing.assert_allclose(y[0], x, atol=1e-5)


def test_reads_one_slab_at_a_time() -> None:
    x = np.random.default_rng(4).random((2, 30, 26, 22), dtype=np.float32)
    volume = RecordingArray(x)
    config = WindowConfig((8, 8, 8), overlap=0.25, batch_size=5)
    y = sliding_window_predict(volume, identity, config, out_channels=2)
    np.testing.assert_allclose(y, x, atol=1e-5)
    slabs = window_starts(30, 8, 0.25)
    assert len(volume.reads) == len(slabs) < count_windows(x.shape[1:], config)  # once per slab, not per window
    assert all(shape == (2, 8, 26, 22) for shape in volume.reads)


@pytest.mark.parametrize("lazy", [False, True], ids=["numpy-input", "zarr-input"])
def test_peak_memory_is_one_slab(tmp_path: Path, lazy: bool) -> None:
    x = np.random.default_rng(5).random((128, 256, 256), dtype=np.float32)  # 32 MiB
    out = zarr.open_array(
        store=tmp_path / "out.zarr", mode="w", shape=(1, *x.shape), chunks=(1, 8, 64, 64), dtype="float32"
    )  # zarr's own write buffers grow with the chunk size (partial chunks are read, merged and re-encoded)
    volume: Any = x
    if lazy:
        volume = zarr.open_array(store=tmp_path / "in.zarr", mode="w", shape=x.shape, chunks=(8, 64, 64), dtype="f4")
        volume[:] = x
    config = WindowConfig((16, 16, 16), batch_size=8)
    tracemalloc.start()
    try:
        sliding_window_predict(volume, identity, config, out_channels=1, out=out)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    slab = 2 * 16 * 256 * 256 * 4  # weighted sum + weight sum over window[0] rows: 8 MiB
    input_slab = 16 * 256 * 256 * 4 if lazy else 0  # read once per slab from a lazy input (a numpy input: a view)
    # an implementation holding whole-volume accumulators would need >= 2 x 32 MiB; zarr's write buffers come on top,
    # and for a lazy input zarr's read buffers (at most another input slab)
    assert peak < x.nbytes, f"peak traced memory {peak / 2**20:.1f} MiB for a {x.nbytes / 2**20:.0f} MiB input"
    assert peak < 2 * slab + 2 * input_slab, f"peak traced memory {peak / 2**20:.1f} MiB"
    np.testing.assert_allclose(np.asarray(out[0, 60:70]), x[60:70], atol=1e-5)


def test_progress_reports_every_window() -> None:
    calls: list[tuple[int, int | None]] = []
    config = WindowConfig((8, 8), batch_size=4)
    sliding_window_predict(
        np.zeros((20, 30), np.float32),
        identity,
        config,
        out_channels=1,
        progress=lambda d, t, m="": calls.append((d, t)),
    )
    total = count_windows((20, 30), config)  # 3 slabs x 5 windows, batched within a slab: 2 calls per slab
    assert calls[-1] == (total, total) and [d for d, _ in calls] == [4, 5, 9, 10, 14, 15]


def test_predictor_output_shape_is_checked() -> None:
    x = np.zeros((10, 10, 10), np.float32)
    with pytest.raises(InvalidInputError, match="predictor"):
        sliding_window_predict(x, lambda t: t[..., :4], WindowConfig((8, 8, 8)), out_channels=1)
    with pytest.raises(InvalidInputError, match="out_channels"):
        sliding_window_predict(x, lambda t: t.repeat(1, 2, 1, 1, 1), WindowConfig((8, 8, 8)), out_channels=1)


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"window": (0, 8, 8)}, "window"),
        ({"window": (8,)}, "window"),
        ({"window": (8, 8), "overlap": 1.2}, "overlap"),
        ({"window": (8, 8), "overlap": -0.1}, "overlap"),
        ({"window": (8, 8), "batch_size": 0}, "batch_size"),
        ({"window": (8, 8), "pad_mode": "wrap"}, "pad_mode"),
        ({"window": (8, 8), "blend": "linear"}, "blend"),
    ],
)
def test_bad_config_names_the_parameter(kwargs: dict[str, Any], name: str) -> None:
    with pytest.raises(InvalidInputError, match=f"^{name}:"):
        WindowConfig(**kwargs)


@pytest.mark.parametrize(
    ("shape", "out_shape", "name"),
    [((4, 5, 6, 7, 8), None, "volume"), ((8,), None, "volume"), ((8, 8, 8), (2, 8, 8, 8), "out")],
)
def test_bad_inputs_name_the_parameter(shape: tuple[int, ...], out_shape: tuple[int, ...] | None, name: str) -> None:
    out = None if out_shape is None else np.zeros(out_shape, np.float32)
    with pytest.raises(InvalidInputError, match=f"^{name}:"):
        sliding_window_predict(np.zeros(shape, np.float32), identity, WindowConfig((4, 4, 4)), out_channels=1, out=out)


@settings(max_examples=200, deadline=None)
@given(size=st.integers(1, 300), window=st.integers(1, 64), overlap=st.floats(0.0, 0.99))
def test_window_starts_cover_the_axis(size: int, window: int, overlap: float) -> None:
    starts = window_starts(size, window, overlap)
    step = max(1, round(window * (1 - overlap)))
    assert starts[0] == 0
    assert all(b > a for a, b in zip(starts, starts[1:], strict=False))
    if size <= window:
        assert starts == [0]
        return
    assert starts[-1] + window == size and all(s + window <= size for s in starts)
    covered = np.zeros(size, bool)
    for s in starts:
        covered[s : s + window] = True
    assert covered.all()
    assert all(b - a == step for a, b in zip(starts[:-2], starts[1:-1], strict=True))  # regular grid...
    assert 0 < starts[-1] - starts[-2] <= step  # ...and the end-aligned last window overlaps at least as much


def test_gaussian_importance() -> None:
    w = gaussian_importance((16, 9, 5))
    assert w.shape == (16, 9, 5) and w.dtype == np.float32
    assert w.max() == pytest.approx(1.0) and w.min() >= 1e-3
    np.testing.assert_allclose(w, w[::-1, ::-1, ::-1])  # symmetric, so flips blend consistently
    assert w[8, 4, 2] > w[5, 4, 2] > w[2, 4, 2] > w[0, 4, 2] == w[0, 0, 0] == pytest.approx(1e-3)  # clipped corners


def test_agrees_with_monai_sliding_window_inference() -> None:
    from monai.inferers import sliding_window_inference

    x = np.random.default_rng(6).random((20, 26, 23), dtype=np.float32)
    t = torch.from_numpy(x)[None, None]
    roi = (8, 8, 8)
    with torch.no_grad():
        monai_sq = sliding_window_inference(t, roi, 4, lambda v: v**2, overlap=0.25, mode="gaussian")[0].numpy()
        monai_mean = sliding_window_inference(t, roi, 4, mean_filter, overlap=0.5, mode="gaussian")[0].numpy()
        whole = mean_filter(t)[0].numpy()
    # pointwise predictor: both are exact
    ours_sq = sliding_window_predict(x, lambda v: v**2, WindowConfig(roi, overlap=0.25), out_channels=1)
    np.testing.assert_allclose(ours_sq, x[None] ** 2, atol=1e-5)
    np.testing.assert_allclose(monai_sq, x[None] ** 2, atol=1e-5)
    # smooth non-pointwise predictor: window seams are down-weighted alike (sigmas and normalisation differ slightly)
    ours_mean = sliding_window_predict(x, mean_filter, WindowConfig(roi, overlap=0.5), out_channels=1)
    inner = (slice(None), slice(2, -2), slice(2, -2), slice(2, -2))
    np.testing.assert_allclose(ours_mean[inner], monai_mean[inner], atol=1e-2)
    np.testing.assert_allclose(ours_mean[inner], whole[inner], atol=1e-2)


def test_accumulators_go_to_the_gpu_only_when_they_fit(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (4000, 8000))  # bytes free, total
    cuda = torch.device("cuda")
    assert blend_device(cuda, 1000) == cuda
    assert blend_device(cuda, 1001) == torch.device("cpu")
    assert blend_device(torch.device("cpu"), 1) == torch.device("cpu")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("free", [None, 0])  # accumulators on the GPU; on the host (no room on the GPU)
def test_cuda_device(monkeypatch: pytest.MonkeyPatch, free: int | None) -> None:
    if free is not None:
        monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (free, free))
    x = np.random.default_rng(7).random((12, 12, 12), dtype=np.float32)
    y = sliding_window_predict(x, mean_filter, WindowConfig((8, 8, 8)), out_channels=1, device="cuda")
    np.testing.assert_allclose(
        y, sliding_window_predict(x, mean_filter, WindowConfig((8, 8, 8)), out_channels=1), atol=1e-5
    )
