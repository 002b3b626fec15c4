"""The format table (fmscope.io.formats.FORMATS): what the README shows, what dispatch and SUPPORTED_FORMATS read."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from fmscope.errors import InvalidInputError
from fmscope.io import FORMATS, SUPPORTED_FORMATS, FormatSpec, detect_format, format_table_markdown, get_format

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_support_matrix_is_the_rendered_table() -> None:
    table = format_table_markdown()
    assert table.count("\n") == len(FORMATS) + 2
    assert table in README.read_text(encoding="utf-8"), "README's ## Formats table: paste format_table_markdown()"


def test_supported_formats_come_from_the_table() -> None:
    assert list(SUPPORTED_FORMATS.items()) == [  # the value (and order) other modules have always read
        ("ome-tiff", (".ome.tif", ".ome.tiff")),
        ("tiff", (".tif", ".tiff")),
        ("ome-zarr", (".ome.zarr", ".zarr")),
        ("nifti", (".nii", ".nii.gz")),
        ("hdf5", (".h5", ".hdf5", ".hdf")),
        ("mrc", (".mrc", ".mrcs", ".rec", ".map")),
        ("png", (".png",)),
        ("jpeg", (".jpg", ".jpeg")),
        ("slices", ()),
    ]
    for spec in FORMATS:
        for ext in spec.extensions:
            assert detect_format(f"x{ext.upper()}") == spec.name


def test_every_reader_and_writer_resolves() -> None:
    for spec in FORMATS:
        assert callable(spec.reader())
        writer = spec.writer()
        assert (writer is None) == (spec.write is None) == bool(spec.read_only)


def test_unknown_format_name() -> None:
    with pytest.raises(InvalidInputError, match=r"format: expected one of \['ome-tiff', .*got 'dm4'"):
        get_format("dm4")


BAD_SPECS = [
    ({"dtypes": ("int64",)}, r"dtypes: format 'x' lists \['int64'\]"),
    ({"axes": ("XY",)}, r"axes: format 'x' lists \['XY'\]"),
    ({"write_options": ("level",)}, r"write_options: format 'x' lists \['level'\]"),
    ({"cells": {"bool": "yes*"}}, r"cells: format 'x' lists \['bool'\]"),
    ({"write": None}, "read_only: format 'x' needs a reason exactly when it has no writer"),
]


@pytest.mark.parametrize(("changes", "message"), BAD_SPECS)
def test_format_spec_checks_its_row(changes: dict[str, object], message: str) -> None:
    row: dict[str, object] = {
        "name": "x", "label": "X", "extensions": (".x",), "read": "m:r", "write": "m:w", "dtypes": ("uint8",),
        "axes": ("YX",), "lazy": "no",
    }  # fmt: skip
    with pytest.raises(InvalidInputError, match=message):
        FormatSpec(**{**row, **changes})  # type: ignore[arg-type]


def test_import_fmscope_io_imports_no_format_library() -> None:
    code = (
        "import sys, fmscope.io; "
        "print(sorted(m for m in ('h5py', 'mrcfile', 'nibabel', 'zarr', 'tifffile', 'imageio', 'dask', 'torch') "
        "if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
