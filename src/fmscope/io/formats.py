"""The supported formats as one table of :class:`FormatSpec`: what each format holds, how it is read and written.

Every other view of the formats comes from :data:`FORMATS`: dispatch in :mod:`fmscope.io.registry` (``read_image`` /
``write_image`` look the format up, check its options, dtypes, axes and compression once, then call its reader or
writer), ``SUPPORTED_FORMATS``, the support matrix (:func:`format_table_markdown`, which is the README's table) and the
round-trip tests. The reader and writer are named as ``"module:function"`` and imported on first use, so that
``import fmscope.io`` imports none of tifffile, zarr, h5py, nibabel, mrcfile or imageio.

Adding a format: a module ``io/<fmt>.py`` with ``read_<fmt>(path, *, lazy, <read options>)`` and
``write_<fmt>(path, data, meta, *, overwrite, compression, progress, <write options>)`` (``meta`` already validated
against the table), and one :class:`FormatSpec` in :data:`FORMATS`.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, NamedTuple

from fmscope.errors import InvalidInputError
from fmscope.io._common import ALL_DTYPES
from fmscope.io.types import CANONICAL_AXES


class Option(NamedTuple):
    """A keyword option of ``read_image`` / ``write_image`` that only some formats have.

    ``unset``: the value meaning "not given"; ``has`` / ``have``: what having it means, for the error that names the
    formats having it (``"only HDF5 files have named datasets"``); ``refused``: whether a format without it refuses
    a given value (a hint such as ``labels`` is passed to the formats that use it and ignored by the others).
    """

    unset: Any
    has: str
    have: str
    refused: bool = True


READ_OPTIONS: Mapping[str, Option] = MappingProxyType(
    {
        "dataset": Option(None, "has datasets", "have datasets"),
        "level": Option(0, "has multiscale levels", "have multiscale levels"),
    }
)
WRITE_OPTIONS: Mapping[str, Option] = MappingProxyType(
    {
        "dataset": Option(None, "files have named datasets", "files have named datasets"),
        "chunks": Option(None, "is chunked", "are chunked"),
        "pyramid_levels": Option(None, "holds pyramids", "hold pyramids"),
        "labels": Option(False, "samples labels by nearest", "sample labels by nearest", refused=False),
    }
)


@dataclass(frozen=True)
class FormatSpec:
    """One file format.

    Attributes:
        name: the format name (``ImageMetadata.format``, ``detect_format``).
        label: its name in messages (``'OME-Zarr'``).
        extensions: lower-case name endings, most specific first within the format; ``()`` = a folder.
        read: the reader as ``"module:function"``.
        write: the writer as ``"module:function"``, ``None`` for a read-only format.
        dtypes: the dtypes a write-then-read gives back identically (read-only format: the dtypes it reads).
        axes: the axes it writes (read-only format: the axes it reads).
        lazy: what ``lazy=None`` gives on read (the support matrix's "lazy read" cell).
        read_options / write_options: which of :data:`READ_OPTIONS` / :data:`WRITE_OPTIONS` the reader / writer take.
        compressions: ``compression=`` values accepted besides ``None`` and ``'default'`` (what ``'default'`` means is
            the writer's, see :mod:`fmscope.io.registry`).
        compression_note: said after the accepted values (in the error for any other, and in the matrix).
        cells: support-matrix cell of a dtype other than ``yes`` (``yes*``: stored as another type with a marker).
        title: the support matrix's format cell (default: ``label``).
        read_only: why there is no writer (the error's wording), for a read-only format.
    """

    name: str
    label: str
    extensions: tuple[str, ...]
    read: str
    write: str | None
    dtypes: tuple[str, ...]
    axes: tuple[str, ...]
    lazy: str
    read_options: tuple[str, ...] = ()
    write_options: tuple[str, ...] = ()
    compressions: tuple[str, ...] = ()
    compression_note: str = ""
    cells: Mapping[str, str] = field(default_factory=dict)
    title: str = ""
    read_only: str = ""

    def __post_init__(self) -> None:
        checks = [
            ("dtypes", self.dtypes, ALL_DTYPES),
            ("axes", self.axes, CANONICAL_AXES),
            ("read_options", self.read_options, tuple(READ_OPTIONS)),
            ("write_options", self.write_options, tuple(WRITE_OPTIONS)),
            ("cells", tuple(self.cells), self.dtypes),
        ]
        for what, values, allowed in checks:
            bad = [v for v in values if v not in allowed]
            if bad:
                raise InvalidInputError(f"{what}: format '{self.name}' lists {bad}; expected a subset of {allowed}")
        if (self.write is None) != bool(self.read_only):
            raise InvalidInputError(f"read_only: format '{self.name}' needs a reason exactly when it has no writer")

    def reader(self) -> Callable[..., Any]:
        return _resolve(self.read)

    def writer(self) -> Callable[..., Any] | None:
        return None if self.write is None else _resolve(self.write)


def _resolve(ref: str) -> Callable[..., Any]:
    module, _, name = ref.partition(":")
    func: Callable[..., Any] = getattr(importlib.import_module(module), name)
    return func


_ALL_AXES = CANONICAL_AXES
_TIFF_COMPRESSIONS = ("zlib", "lzw", "zstd", "packbits")

#: the formats, in detection order (``detect_format`` takes the first whose extension matches, so ``.ome.tif`` comes
#: before ``.tif``) and in the support matrix's row order.
FORMATS: tuple[FormatSpec, ...] = (
    FormatSpec(
        "ome-tiff", "OME-TIFF", (".ome.tif", ".ome.tiff"), "fmscope.io.tiff:read_tiff", "fmscope.io.tiff:write_tiff",
        ALL_DTYPES, _ALL_AXES, "as TIFF", compressions=_TIFF_COMPRESSIONS, title="OME-TIFF (physical sizes)",
    ),
    FormatSpec(
        "tiff", "TIFF", (".tif", ".tiff"), "fmscope.io.tiff:read_tiff", "fmscope.io.tiff:write_tiff",
        ALL_DTYPES, _ALL_AXES, "uncompressed (memmap), or > 1 GiB", compressions=_TIFF_COMPRESSIONS,
        title="TIFF / BigTIFF",
    ),
    FormatSpec(
        "ome-zarr", "OME-Zarr", (".ome.zarr", ".zarr"), "fmscope.io.omezarr:read_omezarr",
        "fmscope.io.omezarr:write_omezarr", ALL_DTYPES, _ALL_AXES, "yes (any level)",
        read_options=("dataset", "level"), write_options=("chunks", "pyramid_levels", "labels"),
        compressions=("zstd", "gzip", "blosc"), title="OME-Zarr v3 / NGFF 0.5 (multiscale pyramid on write)",
    ),
    FormatSpec(
        "nifti", "NIfTI", (".nii", ".nii.gz"), "fmscope.io.nifti:read_nifti", "fmscope.io.nifti:write_nifti",
        ALL_DTYPES, ("YX", "ZYX", "CYX", "CZYX"), "no", compressions=("gzip",),
        compression_note="the extension decides: .nii.gz", cells={"bool": "yes*"},
    ),
    FormatSpec(
        "hdf5", "HDF5", (".h5", ".hdf5", ".hdf"), "fmscope.io.hdf5:read_hdf5", "fmscope.io.hdf5:write_hdf5",
        ALL_DTYPES, _ALL_AXES, "yes", read_options=("dataset",), write_options=("dataset", "chunks"),
        compressions=("gzip", "lzf"), title="HDF5 (named dataset)",
    ),
    FormatSpec(
        "mrc", "MRC", (".mrc", ".mrcs", ".rec", ".map"), "fmscope.io.mrc:read_mrc", "fmscope.io.mrc:write_mrc",
        ("uint8", "int16", "uint16", "float32"), ("YX", "ZYX"), "yes (mmap)",
        compression_note="written uncompressed", cells={"uint8": "yes*"},
    ),
    FormatSpec(
        "png", "PNG", (".png",), "fmscope.io.image2d:read_image2d", "fmscope.io.image2d:write_png",
        ("uint8", "uint16", "bool"), ("YX", "CYX"), "no", compression_note="always deflate-compressed",
        title="PNG (CYX: RGB(A) uint8)",
    ),
    FormatSpec(
        "jpeg", "JPEG", (".jpg", ".jpeg"), "fmscope.io.image2d:read_image2d", None, ("uint8",), ("YX", "CYX"), "no",
        cells={"uint8": "read only"}, title="JPEG (lossy: read only)",
        read_only="JPEG is lossy and read-only in fmscope; write PNG or TIFF instead",
    ),
    FormatSpec(
        "slices", "folder of slices", (), "fmscope.io.slices:read_slices", "fmscope.io.slices:write_slices",
        ALL_DTYPES, ("ZYX",), "no", compressions=("zlib", "lzw", "zstd"),
        compression_note="TIFF slices only; PNG slices are always deflate-compressed",
        cells={"uint8": "png", "uint16": "png", "bool": "png", "int16": "tif", "uint32": "tif", "float32": "tif",
               "float64": "tif"},
        title="folder of 2D slices (natural sort)",
    ),
)  # fmt: skip

_BY_NAME: dict[str, FormatSpec] = {spec.name: spec for spec in FORMATS}


def get_format(name: str) -> FormatSpec:
    """The :class:`FormatSpec` called ``name``; an unknown name raises, listing the known ones."""
    if name not in _BY_NAME:
        raise InvalidInputError(f"format: expected one of {list(_BY_NAME)}, got {name!r}")
    return _BY_NAME[name]


def formats_with(option: str, *, write: bool) -> list[FormatSpec]:
    """The formats whose reader (``write=False``) or writer takes ``option``, in table order."""
    return [s for s in FORMATS if option in (s.write_options if write else s.read_options)]


def _axes_cell(axes: tuple[str, ...]) -> str:
    plain = [a for a in axes if "T" not in a]
    return " ".join(plain) + (" (+T)" if len(plain) < len(axes) else "")


def _options_cell(spec: FormatSpec) -> str:
    parts = []
    if spec.read_options:
        parts.append("read: " + ", ".join(spec.read_options))
    if spec.write_options:
        parts.append("write: " + ", ".join(spec.write_options))
    return "; ".join(parts) or "-"


def format_table_markdown() -> str:
    """The support matrix as a Markdown table, one row per format of :data:`FORMATS` (the README shows it)."""
    header = ["format", "extensions", *ALL_DTYPES, "axes written", "lazy read", "options", "compression"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for spec in FORMATS:
        cells = [spec.cells.get(dt, "yes") if dt in spec.dtypes else "-" for dt in ALL_DTYPES]
        compression = ", ".join(spec.compressions)
        if spec.compression_note:
            compression = f"{compression} ({spec.compression_note})" if compression else spec.compression_note
        row = [
            spec.title or spec.label,
            " ".join(spec.extensions) or "folder",
            *cells,
            _axes_cell(spec.axes),
            spec.lazy,
            _options_cell(spec),
            compression or "-",
        ]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines) + "\n"
