"""Format detection and dispatch: ``read_image`` / ``write_image`` for every format in ``fmscope.io.formats.FORMATS``.

Dispatch is a lookup in that table; the checks every format shares are done here, once: options a format does not
have (``dataset``, ``level``, ``chunks``, ``pyramid_levels``) raise InvalidInputError naming the formats that have
them; before a writer runs, the array and its metadata are validated (``resolve_meta``) and the dtype, the axes and
the ``compression`` value are checked against the format's row. The support matrix is
:func:`fmscope.io.formats.format_table_markdown` (the README's table).

Write then read gives the identical array, axes, spacing and unit; a dtype a format cannot hold is refused with
InvalidInputError naming the format, the dtype and the dtypes it holds, never converted silently. ``yes*`` in the
matrix: stored as another type (NIfTI bool as uint8, MRC uint8 as uint16) with a marker in the header, so the round
trip gives the original dtype back. Spacing and unit: kept by every format except png (dropped, with a warning).
Default compression (``compression="default"``): TIFF zlib, OME-Zarr zstd, HDF5 gzip, NIfTI per extension
(``.nii.gz``), slices: PNG deflate / TIFF zlib; MRC uncompressed. ``None`` writes uncompressed where possible.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from fmscope.errors import FileFormatError, InvalidInputError
from fmscope.io._common import as_path, check_axes, check_dtype, resolve_meta
from fmscope.io.formats import FORMATS, READ_OPTIONS, WRITE_OPTIONS, FormatSpec, formats_with, get_format
from fmscope.io.types import Image, ImageMetadata
from fmscope.utils.progress import ProgressCallback

logger = logging.getLogger(__name__)

#: format name -> extensions (from the table; a folder of slices has none).
SUPPORTED_FORMATS: dict[str, tuple[str, ...]] = {spec.name: spec.extensions for spec in FORMATS}


def detect_format(path: str | os.PathLike[str]) -> str:
    """Format name of ``path`` from its extension, or from its content for a folder.

    A folder is OME-Zarr when named ``*.zarr`` or holding ``zarr.json``/``.zgroup``/``.zarray``, else a folder of
    slices; a path with no extension that does not exist yet means a folder of slices (for writing).
    """
    p = as_path(path)
    name = p.name.lower()
    for spec in FORMATS:
        if any(name.endswith(ext) for ext in spec.extensions):
            return spec.name
    if p.is_dir():
        if any((p / marker).exists() for marker in ("zarr.json", ".zgroup", ".zarray")):
            return "ome-zarr"
        return "slices"
    if not p.suffix and not p.exists():
        return "slices"
    known = ", ".join(ext for spec in FORMATS for ext in spec.extensions)
    raise FileFormatError(f"'{p}': unknown extension '{p.suffix or p.name}'; supported: {known}, or a folder of slices")


def _options(spec: FormatSpec, given: dict[str, Any], p: Path, *, write: bool) -> dict[str, Any]:
    """The options ``spec``'s reader (writer) takes, from ``given``; a value given for an option it lacks raises."""
    table, accepted = (WRITE_OPTIONS, spec.write_options) if write else (READ_OPTIONS, spec.read_options)
    for name, value in given.items():
        option = table[name]
        if name in accepted or not option.refused or value == option.unset:
            continue
        having = formats_with(name, write=write)
        labels = " and ".join(s.label for s in having)
        raise InvalidInputError(
            f"{name}: only {labels} {option.has if len(having) == 1 else option.have}; got {value!r} for '{p}' "
            f"({spec.name})"
        )
    return {name: given[name] for name in accepted}


def read_image(
    path: str | os.PathLike[str], *, dataset: str | None = None, level: int = 0, lazy: bool | None = None
) -> Image:
    """Read an image file (or folder) into an ``Image`` with canonical axes (YX, ZYX, CYX, CZYX).

    Args:
        path: file or folder; the format comes from ``detect_format``.
        dataset: HDF5 dataset path (optional when the file holds exactly one), or OME-Zarr sub-group.
        level: OME-Zarr multiscale level (0 = full resolution); spacing is that level's.
        lazy: ``None`` = the format's default (the "lazy read" column of the support matrix), ``True`` = dask,
            ``False`` = numpy.

    Raises:
        FileFormatError: missing path, unknown extension, unreadable/corrupt file, ambiguous HDF5 dataset.
        InvalidInputError: ``dataset``/``level`` given for a format that has none, or out of range.
    """
    p = as_path(path)
    if not p.exists():
        raise FileFormatError(f"'{p}' does not exist")
    spec = get_format(detect_format(p))
    options = _options(spec, {"dataset": dataset, "level": level}, p, write=False)
    reader = spec.reader()
    image: Image = reader(p, lazy=lazy, **options)
    return image


def read_spatial(
    path: str | os.PathLike[str], *, dataset: str | None = None, channel: int | None = None, level: int = 0
) -> Image:
    """Read an image reduced to a single-channel 2D ``(Y, X)`` or 3D ``(Z, Y, X)`` image (what segmentation takes).

    A multi-channel image needs ``channel``; an image without a channel axis takes only ``channel`` None or 0; a time
    series or anything beyond 3 spatial axes is refused, naming the file.
    """
    p = as_path(path)
    image = read_image(p, dataset=dataset, level=level)
    meta = image.meta
    if "T" in meta.axes:
        raise InvalidInputError(f"{p}: a time series (axes {meta.axes}); expected a 2D image or a (Z, Y, X) stack")
    if "C" in meta.axes:
        if channel is None and meta.n_channels > 1:
            raise InvalidInputError(
                f"{p}: has {meta.n_channels} channels (axes {meta.axes}); choose one (channel=, CLI: --channel)"
            )
        image = image.channel(channel or 0)
    elif channel not in (None, 0):
        raise InvalidInputError(f"{p}: channel {channel} given but the image has no channel axis")
    if image.meta.axes not in ("YX", "ZYX"):
        raise InvalidInputError(
            f"{p}: expected a 2D (Y, X) or 3D (Z, Y, X) image, got axes {image.meta.axes} with shape {image.shape}"
        )
    return image


def write_image(
    path: str | os.PathLike[str],
    data: Any,
    meta: ImageMetadata | None = None,
    *,
    overwrite: bool = False,
    dataset: str | None = None,
    chunks: tuple[int, ...] | None = None,
    pyramid_levels: int | None = None,
    compression: str | None = "default",
    labels: bool = False,
    progress: ProgressCallback | bool | None = None,
) -> Path:
    """Write ``data`` (numpy or dask; axes from ``meta``, else the default for its ndim) to ``path``, atomically.

    The format comes from the extension (a path without one = a folder of slices). Options that the format does not
    have (``dataset`` outside HDF5, ``chunks`` outside OME-Zarr/HDF5, ``pyramid_levels`` outside OME-Zarr) raise
    InvalidInputError. ``labels=True`` makes OME-Zarr pyramids use nearest sampling. Returns the written path.

    Raises:
        OutputExistsError: ``path`` exists and ``overwrite`` is False.
        InvalidInputError: empty array, shape/metadata mismatch, a dtype or axes the format cannot hold.
    """
    p = as_path(path)
    spec = get_format(detect_format(p))
    given = {"dataset": dataset, "chunks": chunks, "pyramid_levels": pyramid_levels, "labels": labels}
    options = _options(spec, given, p, write=True)
    writer = spec.writer()
    if writer is None:
        raise InvalidInputError(f"path: {spec.read_only} (got '{p.name}')")
    meta = resolve_meta(data, meta)
    check_dtype(meta.dtype, spec.name, spec.dtypes)
    check_axes(meta.axes, spec.name, spec.axes)
    _check_compression(spec, compression)
    if options.get("chunks") is not None:
        options["chunks"] = _check_chunks(options["chunks"], meta.shape)
    written: Path = writer(p, data, meta, overwrite=overwrite, compression=compression, progress=progress, **options)
    return written


def _check_compression(spec: FormatSpec, compression: str | None) -> None:
    if compression in (None, "default") or compression in spec.compressions:
        return
    accepted = "".join(f"{c}, " for c in spec.compressions)
    note = f" ({spec.compression_note})" if spec.compression_note else ""
    raise InvalidInputError(
        f"compression: {spec.label} supports {accepted}None or 'default'{note}; got {compression!r}"
    )


def _check_chunks(chunks: Any, shape: tuple[int, ...]) -> tuple[int, ...]:
    try:
        out: Any = tuple(int(c) for c in chunks)
    except (TypeError, ValueError):
        out = chunks
    if not isinstance(out, tuple) or len(out) != len(shape) or any(c < 1 for c in out):
        raise InvalidInputError(f"chunks: expected {len(shape)} positive integers for shape {shape}, got {out}")
    return out
