"""Classical segmentation block by block (issue 16): streamed thresholds equal scikit-image's on the whole volume,
blockwise masks equal the in-memory ones, instance labels stitched across block faces equal whole-volume components,
watershed keeps one id per object cut by a face, resume and refusals."""

from __future__ import annotations

from pathlib import Path

import dask.array as da
import numpy as np
import pytest
from skimage.filters import threshold_li, threshold_multiotsu, threshold_otsu, threshold_triangle

from fmscope.errors import InvalidInputError
from fmscope.inference.blockwise import Block
from fmscope.inference.blockwise_output import BlockwiseConfig
from fmscope.inference.segment_blockwise import SegmentBlock, segment_blockwise
from fmscope.io import ImageMetadata, read_image, write_image
from fmscope.segment import ClassicalConfig, label_components, segment_classical
from fmscope.segment.threshold import histogram_thresholds, streamed_histogram, streamed_li

SMALL = BlockwiseConfig(block_shape=(16, 16, 16), chunks=(8, 16, 16))


def balls(shape: tuple[int, ...], n: int, seed: int, radius: tuple[int, int] = (3, 7)) -> np.ndarray:
    """A uint16 volume of bright balls (some touching, many cut by any block grid) on noise."""
    rng = np.random.default_rng(seed)
    grid = np.indices(shape)
    fg = np.zeros(shape, bool)
    for _ in range(n):
        c = [rng.integers(0, s) for s in shape]
        r = rng.integers(*radius)
        fg |= sum((g - ci) ** 2 for g, ci in zip(grid, c, strict=True)) < r**2
    return (400 + 500 * fg + rng.normal(0, 60, shape)).clip(0, 65535).astype(np.uint16)


@pytest.fixture(scope="module")
def volume(tmp_path_factory: pytest.TempPathFactory) -> tuple[np.ndarray, Path]:
    x = balls((40, 48, 56), 30, 0)
    path = tmp_path_factory.mktemp("segblock") / "in.zarr"
    write_image(path, x, ImageMetadata.for_array(x))
    return x, path


def test_streamed_thresholds_equal_scikit_image_on_the_whole_volume() -> None:
    x = balls((20, 30, 40), 12, 1)
    chunked = da.from_array(x, chunks=(7, 11, 13))
    assert histogram_thresholds(streamed_histogram(chunked), "otsu") == (float(threshold_otsu(x)),)
    for seed in range(3):  # li and triangle by their algorithms on the histogram, as scikit-image runs them
        y = balls((16, 24, 32), 8, seed) // (1 + seed)
        hist = streamed_histogram(da.from_array(y, chunks=(5, 24, 9)))
        assert histogram_thresholds(hist, "li")[0] == pytest.approx(float(threshold_li(y)), abs=1e-9)
        assert histogram_thresholds(hist, "triangle") == (float(threshold_triangle(y)),)
        f = y.astype(np.float32) * 0.37
        assert histogram_thresholds(streamed_histogram(da.from_array(f, chunks=(5, 24, 9))), "triangle")[0] == (
            pytest.approx(float(threshold_triangle(f)), rel=1e-6))  # fmt: skip
    with pytest.raises(InvalidInputError, match="hist: li of float voxels is iterated over the voxels"):
        histogram_thresholds(streamed_histogram(da.from_array(x.astype(np.float32))), "li")
    for seed in range(3):  # li of float voxels: iterated over the chunks as scikit-image iterates over the voxels
        g = np.random.default_rng(seed).gamma(2.0, 50.0, (16, 24, 32)) + balls((16, 24, 32), 8, seed)
        g[0, 0, seed] = np.nan  # left out, as segment_classical leaves it out
        assert streamed_li(da.from_array(g, chunks=(5, 24, 9))) == pytest.approx(
            float(threshold_li(g[np.isfinite(g)])), rel=1e-9)  # fmt: skip
    assert histogram_thresholds(streamed_histogram(chunked), "multiotsu", 3) == tuple(threshold_multiotsu(x, 3))
    f = x.astype(np.float32) / 7.0
    f[3, 4, 5], f[0, 0, 0] = np.nan, np.inf  # non-finite voxels are left out, as segment_classical does
    finite = f[np.isfinite(f)]
    got = histogram_thresholds(streamed_histogram(da.from_array(f, chunks=(5, 30, 40))), "otsu")
    assert got == pytest.approx((float(threshold_otsu(finite)),), rel=1e-6)


@pytest.mark.parametrize(
    "classical",
    [ClassicalConfig("otsu"), ClassicalConfig("otsu", smooth_sigma=1.0), ClassicalConfig("multiotsu", classes=3),
     ClassicalConfig("li"), ClassicalConfig("li", smooth_sigma=1.0), ClassicalConfig("triangle"),
     ClassicalConfig("triangle", smooth_sigma=1.0), ClassicalConfig("local", block_size=7, offset=-20.0)],
    ids=["otsu", "otsu-smoothed", "multiotsu", "li", "li-smoothed", "triangle", "triangle-smoothed", "local"],
)  # fmt: skip
def test_a_blockwise_mask_equals_the_in_memory_one(
    volume: tuple[np.ndarray, Path], tmp_path: Path, classical: ClassicalConfig
) -> None:
    x, path = volume
    done = segment_blockwise(path, tmp_path / "out.zarr", classical, SMALL)
    expected = segment_classical(x, classical)
    assert done.result.complete and len(done.plan) == 3 * 3 * 4
    np.testing.assert_allclose(done.thresholds, expected.thresholds, rtol=1e-6)
    got = read_image(tmp_path / "out.zarr").numpy()
    assert got.dtype == np.uint8 and 0.02 < got.mean() < 0.6
    if classical.smooth_sigma:  # the histogram of the smoothed volume: threshold equal to float rounding
        assert np.mean(got.astype(bool) != expected.mask) < 1e-4
    else:
        np.testing.assert_array_equal(got.astype(bool), expected.mask)


def same_partition(a: np.ndarray, b: np.ndarray) -> bool:
    """Whether two labellings have the same objects (ids may differ): a one-to-one map between their ids."""
    if not np.array_equal(a > 0, b > 0):
        return False
    pairs = np.unique(np.stack([a[a > 0], b[b > 0]]), axis=1)
    return len(pairs[0]) == len(np.unique(pairs[0])) == len(np.unique(pairs[1]))


def test_components_stitched_across_faces_equal_whole_volume_components_and_resume(
    volume: tuple[np.ndarray, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    x, path = volume
    expected = label_components(segment_classical(x, ClassicalConfig("otsu")).mask)
    real = SegmentBlock.__call__

    def crash_on_9(self: SegmentBlock, block: Block) -> None:
        if block.index == 9:
            raise OSError("disk full")
        real(self, block)

    monkeypatch.setattr(SegmentBlock, "__call__", crash_on_9)
    first = segment_blockwise(path, tmp_path / "lab.zarr", ClassicalConfig("otsu"), SMALL, instances=True)
    assert list(first.result.failed) == [9] and first.objects is None  # not stitched while a block is missing
    monkeypatch.setattr(SegmentBlock, "__call__", real)
    done = segment_blockwise(path, tmp_path / "lab.zarr", ClassicalConfig("otsu"), SMALL, instances=True)
    assert done.result.computed == (9,) and done.objects == int(expected.max())
    got = read_image(tmp_path / "lab.zarr").numpy()
    assert got.dtype == np.uint32 and same_partition(got, expected)
    cut = {int(v) for v in np.unique(expected[15:17]) if v}  # objects the face at z = 16 cuts keep one id
    assert cut and all(len(np.unique(got[expected == v])) == 1 for v in cut)
    with pytest.raises(InvalidInputError, match="another plan, input or settings .*classical"):
        segment_blockwise(path, tmp_path / "lab.zarr", ClassicalConfig("otsu", smooth_sigma=1.0), SMALL,
                          instances=True)  # fmt: skip


def test_watershed_keeps_one_id_per_object_cut_by_a_face(tmp_path: Path) -> None:
    x = np.zeros((32, 48, 48), np.uint16) + 100
    grid = np.indices(x.shape)
    centres = [(15, 10, 14), (16, 22, 16), (16, 24, 36), (8, 38, 40)]  # each crosses z = 16; the first two touch
    for c in centres:
        x[sum((g - ci) ** 2 for g, ci in zip(grid, c, strict=True)) < 7**2] = 1000
    path = tmp_path / "in.zarr"
    write_image(path, x, ImageMetadata.for_array(x))
    classical = ClassicalConfig("watershed", min_distance=4)
    done = segment_blockwise(path, tmp_path / "ws.zarr", classical, BlockwiseConfig(block_shape=16, chunks=16))
    whole = segment_classical(x, classical).labels
    got = read_image(tmp_path / "ws.zarr").numpy()
    assert whole is not None and done.objects == int(whole.max()) == len(centres)
    assert same_partition(got, whole)


def test_settings_without_a_blockwise_form_are_refused_naming_the_flag(volume: tuple[np.ndarray, Path],
                                                                       tmp_path: Path) -> None:  # fmt: skip
    _, path = volume
    for classical, message in (
        (ClassicalConfig("otsu", min_size=5), "--min-size"),
        (ClassicalConfig("otsu", per_slice=True), "--per-slice"),
    ):
        with pytest.raises(InvalidInputError, match=message):
            segment_blockwise(path, tmp_path / "x.zarr", classical, SMALL)
    with pytest.raises(InvalidInputError, match="-o: blockwise segmentation writes a Zarr array"):
        segment_blockwise(path, tmp_path / "x.tif", ClassicalConfig(), SMALL)
    assert not list(tmp_path.iterdir())


def test_cli_segment_blockwise_on_a_local_cluster(volume: tuple[np.ndarray, Path], tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    from conftest import run

    x, path = volume
    flags = ["--block-shape", "16", "--chunks", "8", "16", "16"]
    code, out, err = run(capsys, "segment", path, "-o", tmp_path / "a.zarr", "--instances", *flags)
    assert code == 0, err
    assert "36 blocks of (16, 16, 16)" in out and "objects" in out
    mask = np.zeros((2, 3, 4), np.uint8)  # a coarse mask: only the first Z half has work
    mask[0] = 1
    write_image(tmp_path / "mask.tif", mask, ImageMetadata.for_array(mask))
    code, out, err = run(capsys, "segment", path, "-o", tmp_path / "b.zarr", "--workers", "1", "--mask",
                         tmp_path / "mask.tif", *flags)  # fmt: skip
    assert code == 0, err
    got = read_image(tmp_path / "b.zarr").numpy()
    expected = segment_classical(x, ClassicalConfig("otsu")).mask
    assert "skipped" in out and not got[32:].any()  # the blocks from z = 32 on: no foreground in the mask
    np.testing.assert_array_equal(got[:32].astype(bool), expected[:32])
