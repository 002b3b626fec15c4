"""Round trips (write then read) for every format x dtype, spacing/unit, laziness, pyramids and streaming writes."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import dask.array as da
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fmscope.io import FORMATS, ImageMetadata, detect_format, get_format, read_image, write_image
from fmscope.io._common import ALL_DTYPES
from fmscope.io.pyramid import downsample, level_factors
from fmscope.io.slices import natural_key

DTYPES = list(ALL_DTYPES)
# the extensions written in the round trips: the first of every writable format in the table, a folder of slices ("")
# and .nii.gz (NIfTI compresses by extension)
EXTENSIONS = [spec.extensions[0] if spec.extensions else "" for spec in FORMATS if spec.write is not None]
EXTENSIONS += [".nii.gz"]
# extension -> dtypes the format holds (the support matrix: fmscope.io.formats.FORMATS)
HOLDS: dict[str, list[str]] = {ext: list(get_format(detect_format(f"img{ext}")).dtypes) for ext in EXTENSIONS}
FORMAT_NAMES = {
    ".tif": "tiff",
    ".ome.tif": "ome-tiff",
    ".ome.zarr": "ome-zarr",
    ".nii.gz": "nifti",
    ".nii": "nifti",
    ".h5": "hdf5",
    ".mrc": "mrc",
    "": "slices",
    ".png": "png",
}
ROUND_TRIPS = [(ext, dt) for ext, dts in HOLDS.items() for dt in dts]


def make_array(dtype: str, shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    """Values spanning the dtype's range (extremes included), so any conversion would show."""
    rng = np.random.default_rng(seed)
    if dtype == "bool":
        return rng.random(shape) > 0.5
    if dtype.startswith("float"):
        a = rng.normal(scale=1e3, size=shape).astype(dtype)
        a.flat[0] = np.finfo(dtype).max
        return a
    info = np.iinfo(dtype)
    a = rng.integers(info.min, info.max, size=shape, dtype=dtype, endpoint=True)
    a.flat[0], a.flat[-1] = info.min, info.max
    return a


@pytest.mark.parametrize(("ext", "dtype"), ROUND_TRIPS)
def test_round_trip_every_format_and_dtype(tmp_path: Path, ext: str, dtype: str) -> None:
    shape = (17, 19) if ext == ".png" else (3, 17, 19)
    data = make_array(dtype, shape)
    spacing, unit = ((1.0, 1.0), None) if ext == ".png" else ((2.5, 0.5, 0.25), "nanometer")
    meta = ImageMetadata.for_array(data, spacing=spacing, unit=unit)
    out = write_image(tmp_path / f"img{ext}", data, meta)
    image = read_image(out)
    got = image.numpy()
    assert got.dtype == data.dtype
    np.testing.assert_array_equal(got, data)
    assert (image.meta.axes, image.meta.spacing, image.meta.unit) == (meta.axes, spacing, unit)
    assert image.meta.format == FORMAT_NAMES[ext] == detect_format(out)
    assert image.meta.source == str(out)
    assert data.dtype == np.dtype(dtype)  # input untouched


# a shape per axes order (3 channels: PNG's CYX is RGB)
AXES_SHAPES = {
    "YX": (5, 7), "ZYX": (3, 5, 7), "CYX": (3, 5, 7), "CZYX": (3, 3, 5, 7),
    "TYX": (2, 5, 7), "TZYX": (2, 3, 5, 7), "TCYX": (2, 3, 5, 7), "TCZYX": (2, 2, 3, 5, 7),
}  # fmt: skip
# every axes order every writable format writes (the table), then cases beyond one per format and axes
AXES_CASES = [
    (ext, axes, AXES_SHAPES[axes]) for ext in EXTENSIONS for axes in get_format(detect_format(f"i{ext}")).axes
]
AXES_CASES += [
    (".nii.gz", "CZYX", (1, 3, 5, 7)),
    (".ome.tif", "CYX", (2, 5, 7)),
    (".ome.zarr", "CYX", (2, 5, 7)),
    (".h5", "CYX", (2, 5, 7)),
    (".nii.gz", "CYX", (2, 5, 7)),
    (".png", "CYX", (4, 5, 7)),
]


@pytest.mark.parametrize(("ext", "axes", "shape"), AXES_CASES)
def test_round_trip_axes(tmp_path: Path, ext: str, axes: str, shape: tuple[int, ...]) -> None:
    data = make_array("uint8", shape)
    n_spatial = sum(a in "ZYX" for a in axes)
    spacing = (1.0,) * n_spatial if ext == ".png" else tuple(0.5 + i for i in range(n_spatial))
    meta = ImageMetadata(axes=axes, shape=shape, dtype="uint8", spacing=spacing)
    image = read_image(write_image(tmp_path / f"img{ext}", data, meta))
    assert image.meta.axes == axes
    assert image.meta.spacing == spacing
    np.testing.assert_array_equal(image.numpy(), data)


SPACING_CASES = [
    ((1.0, 1.0, 1.0), None, None),
    ((5.0, 0.994, 0.994), "micrometer", "micrometer"),
    ((50.0, 4.0, 4.0), "nm", "nanometer"),
    ((1.5, 2.5, 3.5), "angstrom", "angstrom"),
    ((0.002, 0.001866, 0.001866), "millimeter", "millimeter"),
    ((3.0, 0.1, 0.1), None, None),
]


@pytest.mark.parametrize(("spacing", "unit", "expected_unit"), SPACING_CASES)
@pytest.mark.parametrize("ext", [".tif", ".ome.tif", ".ome.zarr", ".nii.gz", ".h5", ".mrc", ""])
def test_spacing_and_unit_round_trip(
    tmp_path: Path, ext: str, spacing: tuple[float, ...], unit: str | None, expected_unit: str | None
) -> None:
    data = make_array("uint16", (3, 6, 5))
    meta = ImageMetadata.for_array(data, spacing=spacing, unit=unit)
    image = read_image(write_image(tmp_path / f"img{ext}", data, meta))
    assert image.meta.spacing == spacing
    assert image.meta.unit == expected_unit


def test_mrc_header_voxel_size_is_angstrom(tmp_path: Path) -> None:
    import mrcfile

    data = make_array("float32", (2, 4, 6))
    path = write_image(tmp_path / "v.mrc", data, ImageMetadata.for_array(data, spacing=(5.0, 0.5, 0.25), unit="nm"))
    with mrcfile.open(path) as mrc:
        assert (float(mrc.voxel_size.z), float(mrc.voxel_size.y), float(mrc.voxel_size.x)) == (50.0, 5.0, 2.5)


LAZY_CASES = [
    # (extension, write kwargs, lazy argument, expected dask)
    (".ome.zarr", {}, None, True),
    (".h5", {}, None, True),
    (".mrc", {}, None, True),
    (".tif", {"compression": None}, None, True),
    (".tif", {}, None, False),
    (".tif", {}, True, True),
    (".nii.gz", {}, None, False),
    (".nii.gz", {}, True, True),
    (".ome.zarr", {}, False, False),
    ("", {}, None, False),
    ("", {}, True, True),
]


@pytest.mark.parametrize(("ext", "kwargs", "lazy", "expect_dask"), LAZY_CASES)
def test_laziness(tmp_path: Path, ext: str, kwargs: dict[str, Any], lazy: bool | None, expect_dask: bool) -> None:
    data = make_array("uint16", (4, 9, 11))
    image = read_image(write_image(tmp_path / f"img{ext}", data, **kwargs), lazy=lazy)
    assert isinstance(image.data, da.Array) is expect_dask
    assert image.is_lazy is expect_dask
    np.testing.assert_array_equal(image.numpy(), data)


PYRAMID_CASES = [
    # (axes, shape, spacing, levels, expected shapes, expected spacings)
    ("ZYX", (4, 64, 70), (1.0, 1.0, 1.0), 3,
     [(4, 64, 70), (2, 32, 35), (1, 16, 18)], [(1.0, 1.0, 1.0), (2.0, 2.0, 2.0), (4.0, 4.0, 4.0)]),
    ("ZYX", (4, 64, 70), (10.0, 1.0, 1.0), 3,
     [(4, 64, 70), (4, 32, 35), (4, 16, 18)], [(10.0, 1.0, 1.0), (10.0, 2.0, 2.0), (10.0, 4.0, 4.0)]),
    ("ZYX", (8, 32, 32), (3.0, 1.0, 1.0), 4,
     [(8, 32, 32), (8, 16, 16), (4, 8, 8), (2, 4, 4)],
     [(3.0, 1.0, 1.0), (3.0, 2.0, 2.0), (6.0, 4.0, 4.0), (12.0, 8.0, 8.0)]),
    ("ZYX", (4, 16, 16), (2.0, 1.0, 1.0), 3,
     [(4, 16, 16), (4, 8, 8), (2, 4, 4)], [(2.0, 1.0, 1.0), (2.0, 2.0, 2.0), (4.0, 4.0, 4.0)]),
    ("YX", (33, 20), (0.5, 0.5), 2, [(33, 20), (17, 10)], [(0.5, 0.5), (1.0, 1.0)]),
    ("CZYX", (2, 2, 8, 8), (1.0, 1.0, 1.0), 2, [(2, 2, 8, 8), (2, 1, 4, 4)], [(1.0, 1.0, 1.0), (2.0, 2.0, 2.0)]),
]  # fmt: skip


@pytest.mark.parametrize(("axes", "shape", "spacing", "levels", "shapes", "spacings"), PYRAMID_CASES)
def test_pyramid_levels_shapes_and_spacing(
    tmp_path: Path,
    axes: str,
    shape: tuple[int, ...],
    spacing: tuple[float, ...],
    levels: int,
    shapes: list[tuple[int, ...]],
    spacings: list[tuple[float, ...]],
) -> None:
    data = make_array("float32", shape)
    meta = ImageMetadata(axes=axes, shape=shape, dtype="float32", spacing=spacing, unit="micrometer")
    out = write_image(tmp_path / "p.ome.zarr", data, meta, pyramid_levels=levels)
    for level in range(levels):
        image = read_image(out, level=level)
        assert image.shape == shapes[level]
        assert image.meta.spacing == spacings[level]
        assert image.meta.unit == "micrometer"
        assert image.meta.dataset == str(level)
    attrs = json.loads((out / "zarr.json").read_text())["attributes"]["ome"]
    assert attrs["version"] == "0.5"
    ms = attrs["multiscales"][0]
    assert [ax["name"] for ax in ms["axes"]] == [a.lower() for a in axes]
    assert {ax["type"] for ax in ms["axes"] if ax["name"] in "zyx"} == {"space"}
    assert len(ms["datasets"]) == levels


def test_pyramid_mean_values_and_label_nearest(tmp_path: Path) -> None:
    data = np.arange(4 * 4 * 4, dtype=np.uint16).reshape(4, 4, 4)
    out = write_image(tmp_path / "m.ome.zarr", data, pyramid_levels=2)
    expected = data.reshape(2, 2, 2, 2, 2, 2).mean(axis=(1, 3, 5)).round().astype(np.uint16)
    np.testing.assert_array_equal(read_image(out, level=1).numpy(), expected)
    labels = np.repeat(np.arange(1, 9, dtype=np.uint32), 8).reshape(4, 4, 4)
    out = write_image(tmp_path / "l.ome.zarr", labels, pyramid_levels=2, labels=True)
    np.testing.assert_array_equal(read_image(out, level=1).numpy(), labels[::2, ::2, ::2])


def test_auto_pyramid_stops_at_256(tmp_path: Path) -> None:
    data = np.zeros((2, 600, 300), dtype=np.uint8)
    out = write_image(tmp_path / "a.ome.zarr", data, chunks=(2, 128, 128))
    ms = json.loads((out / "zarr.json").read_text())["attributes"]["ome"]["multiscales"][0]
    assert len(ms["datasets"]) == 3  # 600 -> 300 -> 150
    assert read_image(out, level=2).shape == (1, 150, 75)


def _tracking_dask(data: np.ndarray, chunks: tuple[int, ...], seen: list[int]) -> Any:
    lock = threading.Lock()

    def record(block: np.ndarray) -> np.ndarray:
        with lock:
            seen.append(block.size)
        return block

    return da.from_array(data, chunks=chunks).map_blocks(record, dtype=data.dtype)


@pytest.mark.parametrize("ext", [".ome.zarr", ".h5", ".tif", ".mrc", ""])
def test_dask_write_streams_chunk_by_chunk(tmp_path: Path, ext: str) -> None:
    data = make_array("uint16", (8, 24, 20))
    seen: list[int] = []
    kwargs: dict[str, Any] = {"chunks": (2, 12, 10)} if ext in (".ome.zarr", ".h5") else {}
    out = write_image(tmp_path / f"s{ext}", _tracking_dask(data, (2, 12, 20), seen), **kwargs)
    np.testing.assert_array_equal(read_image(out).numpy(), data)
    assert seen and max(seen) <= 2 * 12 * 20 < data.size


def test_progress_callback_reports_levels(tmp_path: Path) -> None:
    calls: list[tuple[int, int | None]] = []
    write_image(
        tmp_path / "p.ome.zarr",
        np.zeros((2, 8, 8), np.uint8),
        pyramid_levels=2,
        progress=lambda done, total, msg="": calls.append((done, total)),
    )
    assert calls == [(1, 2), (2, 2)]


def test_overwrite_true_replaces(tmp_path: Path) -> None:
    path = tmp_path / "o.ome.zarr"
    write_image(path, np.zeros((2, 4, 4), np.uint8))
    write_image(path, np.ones((3, 5, 5), np.uint16), overwrite=True)
    image = read_image(path)
    assert image.shape == (3, 5, 5) and image.dtype == np.uint16
    assert [p.name for p in tmp_path.iterdir()] == ["o.ome.zarr"]


def test_imagej_tiff_spacing_is_read(tmp_path: Path) -> None:
    import tifffile

    data = make_array("uint16", (3, 8, 8))
    tifffile.imwrite(tmp_path / "ij.tif", data, imagej=True, resolution=(1 / 0.25, 1 / 0.5),
                     metadata={"spacing": 2.0, "unit": "um", "axes": "ZYX"})  # fmt: skip
    image = read_image(tmp_path / "ij.tif")
    assert image.meta.spacing == (2.0, 0.5, 0.25)
    assert image.meta.unit == "micrometer"


def test_hdf5_named_dataset_and_element_size_um(tmp_path: Path) -> None:
    import h5py

    path = tmp_path / "ilastik.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("raw", data=np.arange(24, dtype=np.uint8).reshape(2, 3, 4))
        f["raw"].attrs["element_size_um"] = [5.0, 1.0, 1.0]
        f.create_dataset("pred", data=np.zeros((2, 3, 4), np.float32))
    image = read_image(path, dataset="raw")
    assert (image.meta.spacing, image.meta.unit, image.meta.dataset) == ((5.0, 1.0, 1.0), "micrometer", "raw")
    np.testing.assert_array_equal(image.numpy(), np.arange(24).reshape(2, 3, 4))
    out = write_image(tmp_path / "w.h5", np.ones((2, 3), np.int16), dataset="group/img")
    assert read_image(out).meta.dataset == "group/img"


def test_nifti_trailing_singleton_channel_is_squeezed(tmp_path: Path) -> None:
    import nibabel as nib

    xyz1 = np.arange(5 * 6 * 7, dtype=np.uint16).reshape(5, 6, 7, 1)
    img = nib.Nifti1Image(xyz1, np.diag([0.5, 0.5, 2.0, 1.0]))
    img.header.set_xyzt_units("micron")
    nib.save(img, tmp_path / "p.nii.gz")
    image = read_image(tmp_path / "p.nii.gz")
    assert image.meta.axes == "ZYX" and image.shape == (7, 6, 5)
    assert (image.meta.spacing, image.meta.unit) == ((2.0, 0.5, 0.5), "micrometer")
    np.testing.assert_array_equal(image.numpy(), xyz1[..., 0].transpose(2, 1, 0))
    assert any("singleton" in note for note in image.meta.notes)


def test_slice_folder_natural_order(tmp_path: Path) -> None:
    import imageio.v3 as iio

    folder = tmp_path / "stack"
    folder.mkdir()
    for i in (10, 2, 1):
        iio.imwrite(folder / f"img{i}.png", np.full((4, 5), i, dtype=np.uint8))
    (folder / "notes.txt").write_text("ignored")
    image = read_image(folder)
    assert image.meta.format == "slices" and image.shape == (3, 4, 5)
    assert image.numpy()[:, 0, 0].tolist() == [1, 2, 10]


def test_png_rgba_reads_channels_first(tmp_path: Path) -> None:
    import imageio.v3 as iio

    rgba = make_array("uint8", (5, 7, 4))
    iio.imwrite(tmp_path / "c.png", rgba)
    image = read_image(tmp_path / "c.png")
    assert image.meta.axes == "CYX" and image.shape == (4, 5, 7)
    np.testing.assert_array_equal(image.numpy(), rgba.transpose(2, 0, 1))


DETECT_CASES = [
    ("a.tif", "tiff"), ("a.TIFF", "tiff"), ("a.ome.tif", "ome-tiff"), ("a.ome.zarr", "ome-zarr"),
    ("a.zarr", "ome-zarr"), ("a.nii.gz", "nifti"), ("a.nii", "nifti"), ("a.hdf", "hdf5"), ("a.h5", "hdf5"),
    ("a.rec", "mrc"), ("a.map", "mrc"), ("a.png", "png"), ("a.jpg", "jpeg"), ("folder", "slices"),
]  # fmt: skip


@pytest.mark.parametrize(("path", "expected"), DETECT_CASES)
def test_detect_format(tmp_path: Path, path: str, expected: str) -> None:
    assert detect_format(tmp_path / path) == expected


@settings(max_examples=25, deadline=None)
@given(
    shape=st.tuples(st.integers(1, 6), st.integers(1, 9), st.integers(1, 9)),
    method=st.sampled_from(["mean", "nearest"]),
)
def test_downsample_matches_numpy(shape: tuple[int, int, int], method: str) -> None:
    data = np.random.default_rng(sum(shape)).integers(0, 1000, size=shape).astype(np.float64)
    factors = tuple(2 if n > 1 else 1 for n in shape)
    got = downsample(da.from_array(data, chunks=3), factors, method).compute()
    if method == "nearest":
        expected = data[tuple(slice(None, None, f) for f in factors)]
    else:
        padded = np.pad(data, [(0, (-n) % f) for n, f in zip(shape, factors, strict=True)], mode="edge")
        z, y, x = (s // f for s, f in zip(padded.shape, factors, strict=True))
        expected = padded.reshape(z, factors[0], y, factors[1], x, factors[2]).mean(axis=(1, 3, 5))
    np.testing.assert_allclose(got, expected)


@settings(max_examples=25, deadline=None)
@given(st.lists(st.integers(0, 10_000), min_size=1, max_size=12, unique=True))
def test_natural_key_orders_numbers_by_value(numbers: list[int]) -> None:
    names = [f"img{n}.png" for n in numbers]
    assert sorted(names, key=natural_key) == [f"img{n}.png" for n in sorted(numbers)]


def test_level_factors_refuses_too_many_levels() -> None:
    from fmscope.errors import InvalidInputError

    with pytest.raises(InvalidInputError, match="pyramid_levels: shape"):
        level_factors("ZYX", (1, 2, 2), (1.0, 1.0, 1.0), 3)


@pytest.mark.parametrize("bigtiff", [True, False])
def test_forced_bigtiff_round_trip(tmp_path: Path, bigtiff: bool) -> None:
    import tifffile

    from fmscope.io.tiff import write_tiff

    data = make_array("float32", (3, 7, 9))
    path = write_tiff(tmp_path / "big.tif", data, bigtiff=bigtiff)
    with tifffile.TiffFile(path) as tif:
        assert tif.is_bigtiff is bigtiff
    np.testing.assert_array_equal(read_image(path).numpy(), data)
