"""Bad input raises one-line errors naming the parameter or file; failed writes leave nothing behind."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import dask.array as da
import numpy as np
import pytest

from fmscope.errors import FileFormatError, InvalidInputError, OutputExistsError
from fmscope.io import ImageMetadata, read_image, write_image

GOOD = np.zeros((3, 6, 5), dtype=np.uint8)

WRITE_ERRORS: list[tuple[str, Any, dict[str, Any], str]] = [
    # (file name, data, write kwargs, message pattern)
    ("e.tif", np.zeros((0, 4, 4), np.uint8), {}, r"data: expected a non-empty array, got shape \(0, 4, 4\)"),
    ("e.ome.zarr", np.zeros((3, 0), np.float32), {}, "data: expected a non-empty array"),
    ("e.tif", np.zeros((2, 3), np.int64), {}, "data: expected dtype one of .*got int64"),
    ("e.h5", np.zeros((2, 3), np.complex64), {}, "got complex64"),
    ("e.tif", [[1, 2]], {}, "data: expected a numpy or dask array, got list"),
    ("e.tif", GOOD, {"meta": ImageMetadata(axes="ZYX", shape=(3, 6, 6), dtype="uint8")},
     r"meta.shape: expected the data shape \(3, 6, 5\), got \(3, 6, 6\)"),
    ("e.mrc", GOOD.astype(np.float64), {}, "format 'mrc' cannot hold dtype float64; it holds uint8, int16, uint16"),
    ("e.mrc", GOOD.astype(np.uint32), {}, "format 'mrc' cannot hold dtype uint32"),
    ("e.mrc", GOOD.astype(bool), {}, "format 'mrc' cannot hold dtype bool"),
    ("e.png", GOOD[0].astype(np.float32), {}, "format 'png' cannot hold dtype float32; it holds uint8, uint16, bool"),
    ("e.png", GOOD, {}, "meta.axes: format 'png' can store axes YX, CYX; got 'ZYX'"),
    ("e.png", np.zeros((3, 4, 4), np.uint16), {"meta": ImageMetadata(axes="CYX", shape=(3, 4, 4), dtype="uint16")},
     "PNG holds CYX images with 3 or 4 channels of uint8"),
    ("e.mrc", np.zeros((2, 3, 4, 4), np.uint8), {}, "meta.axes: format 'mrc' can store axes YX, ZYX; got 'CZYX'"),
    ("stack", np.zeros((4, 4), np.uint8), {}, "meta.axes: format 'slices' can store axes ZYX; got 'YX'"),
    ("e.jpg", GOOD[0], {}, "JPEG is lossy and read-only"),
    ("e.tif", GOOD, {"compression": "lz4"}, "compression: TIFF supports zlib.*got 'lz4'"),
    ("e.ome.zarr", GOOD, {"compression": "lz4"}, "compression: OME-Zarr supports zstd"),
    ("e.h5", GOOD, {"compression": "zstd"}, "compression: HDF5 supports gzip"),
    ("e.tif", GOOD, {"dataset": "x"}, "dataset: only HDF5 files have named datasets"),
    ("e.tif", GOOD, {"pyramid_levels": 2}, "pyramid_levels: only OME-Zarr holds pyramids"),
    ("e.nii", GOOD, {"chunks": (1, 2, 2)}, "chunks: only OME-Zarr and HDF5 are chunked"),
    ("e.ome.zarr", GOOD, {"chunks": (1, 2)}, r"chunks: expected 3 positive integers for shape \(3, 6, 5\)"),
    ("e.ome.zarr", GOOD, {"pyramid_levels": 5}, r"pyramid_levels: shape \(3, 6, 5\) allows at most 4 levels, got 5"),
    ("e.ome.zarr", GOOD, {"pyramid_levels": 0}, "pyramid_levels: expected at least 1, got 0"),
    ("e.xyz", GOOD, {}, "unknown extension '.xyz'"),
]  # fmt: skip


@pytest.mark.parametrize(("name", "data", "kwargs", "message"), WRITE_ERRORS)
def test_bad_write_input_raises(tmp_path: Path, name: str, data: Any, kwargs: dict[str, Any], message: str) -> None:
    error = FileFormatError if "extension" in message else InvalidInputError
    with pytest.raises(error, match=message):
        write_image(tmp_path / name, data, **kwargs)
    assert list(tmp_path.iterdir()) == []


def _write_corrupt(path: Path, kind: str) -> None:
    if kind == "truncated":
        write_image(path, np.arange(3 * 64 * 64, dtype=np.uint16).reshape(3, 64, 64), compression=None)
        path.write_bytes(path.read_bytes()[:300])
    elif kind == "truncated-compressed":
        write_image(path, np.random.default_rng(0).integers(0, 9, (3, 64, 64), dtype=np.uint16))
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    elif kind == "garbage":
        path.write_bytes(b"this is not an image file at all" * 20)
    elif kind == "empty":
        path.write_bytes(b"")


READ_ERRORS = [
    # (file name, corruption, message pattern)
    ("t.tif", "truncated", "TIFF is truncated: its pixel data need 24928 bytes, the file has 300"),
    ("t.tif", "truncated-compressed", "cannot read as TIFF"),
    ("t.tif", "garbage", "cannot read as TIFF"),
    ("c.nii.gz", "garbage", "cannot read as NIfTI"),
    ("c.nii", "garbage", "cannot read as NIfTI"),
    ("c.nii", "empty", "cannot read as NIfTI"),
    ("c.h5", "garbage", "cannot read as HDF5"),
    ("c.mrc", "garbage", "cannot read as MRC"),
    ("c.png", "garbage", "cannot read as image"),
    ("c.jpg", "empty", "cannot read as image"),
]


@pytest.mark.parametrize(("name", "kind", "message"), READ_ERRORS)
def test_corrupt_file_raises_file_format_error(tmp_path: Path, name: str, kind: str, message: str) -> None:
    path = tmp_path / name
    _write_corrupt(path, kind)
    with pytest.raises(FileFormatError, match=message) as info:
        read_image(path).numpy()
    assert str(path) in str(info.value)
    assert "\n" not in str(info.value)


def test_missing_path(tmp_path: Path) -> None:
    with pytest.raises(FileFormatError, match=r"'.*nope\.tif' does not exist"):
        read_image(tmp_path / "nope.tif")


def test_unknown_extension_on_read(tmp_path: Path) -> None:
    (tmp_path / "a.xyz").write_text("x")
    with pytest.raises(FileFormatError, match=r"a\.xyz': unknown extension '\.xyz'; supported: .*\.tif"):
        read_image(tmp_path / "a.xyz")


def test_corrupt_zarr_metadata(tmp_path: Path) -> None:
    store = tmp_path / "bad.ome.zarr"
    store.mkdir()
    (store / "zarr.json").write_text("{not json")
    with pytest.raises(FileFormatError, match="bad.ome.zarr': cannot read as OME-Zarr"):
        read_image(store)


READ_ARG_ERRORS = [
    ("a.tif", {"dataset": "x"}, InvalidInputError, "dataset: only OME-Zarr and HDF5 have datasets"),
    ("a.tif", {"level": 1}, InvalidInputError, "level: only OME-Zarr has multiscale levels"),
    ("a.ome.zarr", {"level": 3}, InvalidInputError, r"level: '.*a\.ome\.zarr' has levels 0\.\.0, got 3"),
    ("a.h5", {"dataset": "missing"}, FileFormatError, r"no dataset 'missing'; it holds \['data'\]"),
]


@pytest.mark.parametrize(("name", "kwargs", "error", "message"), READ_ARG_ERRORS)
def test_bad_read_arguments(tmp_path: Path, name: str, kwargs: dict[str, Any], error: type, message: str) -> None:
    path = write_image(tmp_path / name, GOOD)
    with pytest.raises(error, match=message):
        read_image(path, **kwargs)


def test_hdf5_with_several_datasets_needs_dataset(tmp_path: Path) -> None:
    import h5py

    with h5py.File(tmp_path / "two.h5", "w") as f:
        f["a"] = np.zeros((2, 2))
        f["b/c"] = np.zeros((2, 2))
    with pytest.raises(FileFormatError, match=r"holds 2 array datasets \['a', 'b/c'\]; pass dataset="):
        read_image(tmp_path / "two.h5")


def test_slices_with_odd_shape_name_the_file(tmp_path: Path) -> None:
    import imageio.v3 as iio

    folder = tmp_path / "stack"
    folder.mkdir()
    for i in range(3):
        iio.imwrite(folder / f"s{i}.png", np.zeros((4, 5), np.uint8))
    iio.imwrite(folder / "s10.png", np.zeros((4, 6), np.uint8))
    with pytest.raises(FileFormatError, match=r"s10\.png': slice shape \(4, 6\)"):
        read_image(folder)
    with pytest.raises(FileFormatError, match=r"s10\.png': slice shape \(4, 6\)"):
        read_image(folder, lazy=True).numpy()


def test_empty_slice_folder(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileFormatError, match="holds no .png/.tif/.tiff slices"):
        read_image(tmp_path / "empty")


@pytest.mark.parametrize("name", ["o.tif", "o.ome.zarr", "o.h5", "o.nii.gz", "o.mrc", "o", "o.png"])
def test_existing_output_is_refused(tmp_path: Path, name: str) -> None:
    data = GOOD[0] if name.endswith(".png") else GOOD
    path = write_image(tmp_path / name, data)
    with pytest.raises(OutputExistsError, match="exists; pass overwrite=True"):
        write_image(path, data + 1)
    np.testing.assert_array_equal(read_image(path).numpy(), data)


def _failing_dask(shape: tuple[int, ...], fail_at: int) -> Any:
    """A dask array whose block ``fail_at`` (along axis 0) raises while being computed."""

    def block(x: np.ndarray, block_info: Any = None) -> np.ndarray:
        if block_info[None]["chunk-location"][0] == fail_at:
            raise RuntimeError("disk full (simulated)")
        return x + 1

    return da.zeros(shape, dtype=np.uint8, chunks=(1, *shape[1:])).map_blocks(block, dtype=np.uint8)


@pytest.mark.parametrize("name", ["f.tif", "f.ome.tif", "f.ome.zarr", "f.h5", "f.mrc", "folder"])
def test_failed_write_leaves_nothing_and_keeps_existing(tmp_path: Path, name: str) -> None:
    with pytest.raises(RuntimeError, match="disk full"):
        write_image(tmp_path / name, _failing_dask((4, 8, 8), fail_at=2))
    assert list(tmp_path.iterdir()) == []
    existing = write_image(tmp_path / name, GOOD)
    with pytest.raises(RuntimeError, match="disk full"):
        write_image(existing, _failing_dask((4, 8, 8), fail_at=2), overwrite=True)
    assert [p.name for p in tmp_path.iterdir()] == [name]
    np.testing.assert_array_equal(read_image(existing).numpy(), GOOD)
