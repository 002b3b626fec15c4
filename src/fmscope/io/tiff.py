"""TIFF and OME-TIFF (tifffile): multi-page stacks, BigTIFF, physical sizes.

Metadata written: a plain ``.tif`` carries tifffile's JSON description with ``axes`` and an ``fmscope`` entry (spacing,
unit); an ``.ome.tif`` carries OME-XML (``PhysicalSize{X,Y,Z}`` and units; ``unit=None`` is written as ``pixel``).
Metadata read, first found wins: fmscope JSON, OME-XML, ImageJ (``spacing``/``unit`` and the X/Y resolution tags).

Default compression: ``zlib`` (deflate; lossless, read by Fiji/ImageJ, Bio-Formats, napari). Pass
``compression=None`` for an uncompressed TIFF, which is memory-mappable and therefore read lazily.
BigTIFF is used automatically above ~4 GB, or when ``bigtiff=True``.
Laziness (``lazy=None``): uncompressed contiguous files are memory-mapped (dask over ``tifffile.memmap``); compressed
files are read eagerly unless they exceed 1 GiB (or ``lazy=True``), in which case they are read through tifffile's
zarr store, one page or tile per chunk.
"""

from __future__ import annotations

import logging
import os
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from fmscope.errors import FileFormatError
from fmscope.io._common import (
    apply_laziness,
    check_exists,
    iter_blocks,
    make_meta,
    normalize_unit,
    resolve_meta,
    wrap_read_errors,
)
from fmscope.io.types import Image, ImageMetadata, spatial_axes
from fmscope.utils import atomic_output, make_progress
from fmscope.utils.progress import ProgressCallback

logger = logging.getLogger(__name__)

BIGTIFF_THRESHOLD = 2**32 - 2**27  # bytes; leaves room for the IFDs below the 4 GiB classic-TIFF limit
EAGER_LIMIT = 2**30  # compressed TIFFs above this many bytes are read lazily by default

# OME unit symbols <-> canonical names
_OME_UNITS = {
    "picometer": "pm",
    "angstrom": "Å",
    "nanometer": "nm",
    "micrometer": "µm",
    "millimeter": "mm",
    "centimeter": "cm",
    "meter": "m",
}


def _rename_axes(axes: str) -> list[str]:
    """Rename tifffile's stack letters: pages (I) or unknown (Q) become Z, samples (S) become C."""
    letters = list(axes)
    if "Z" not in letters:
        for stack_letter in ("I", "Q"):
            if stack_letter in letters:
                letters[letters.index(stack_letter)] = "Z"
                break
    if "S" in letters and "C" not in letters:
        letters[letters.index("S")] = "C"
    return letters


def _standardize(data: Any, axes: str, path: Path) -> tuple[Any, str]:
    """Squeeze singleton non-canonical axes and transpose to T, C, Z, Y, X order."""
    letters = _rename_axes(axes)
    keep = [i for i, a in enumerate(letters) if a in "TCZYX" or data.shape[i] != 1]
    unknown = [a for i, a in enumerate(letters) if i in keep and a not in "TCZYX"]
    if unknown or len(set(letters[i] for i in keep)) != len(keep):
        raise FileFormatError(f"'{path}': cannot map TIFF axes '{axes}' (shape {tuple(data.shape)}) to T/C/Z/Y/X")
    squeeze = tuple(i for i in range(len(letters)) if i not in keep)
    if squeeze:
        data = data.reshape(tuple(s for i, s in enumerate(data.shape) if i not in squeeze))
    kept = "".join(letters[i] for i in keep)
    target = "".join(a for a in "TCZYX" if a in kept)
    order = [kept.index(a) for a in target]
    if order != list(range(len(order))):
        data = data.transpose(order)
    return data, target


def _ome_spacing(xml: str, axes: str) -> tuple[tuple[float, ...] | None, str | None]:
    root = ET.fromstring(xml)
    pixels = next((el for el in root.iter() if el.tag.endswith("Pixels")), None)
    if pixels is None:
        return None, None
    sizes, units = [], set()
    for a in spatial_axes(axes):
        value = pixels.get(f"PhysicalSize{a}")
        sizes.append(float(value) if value is not None else 1.0)
        if value is not None:
            units.add(normalize_unit(pixels.get(f"PhysicalSize{a}Unit", "µm")))
    if not units:
        return None, None
    known = sorted(u for u in units if u is not None)
    if len(units) > 1:
        logger.warning("OME-XML has mixed units %s; keeping '%s'", units, known[0] if known else None)
    return tuple(sizes), known[0] if known else None


def _imagej_spacing(tif: Any, axes: str) -> tuple[tuple[float, ...] | None, str | None]:
    ij = tif.imagej_metadata or {}
    page = tif.pages.first
    spacing: dict[str, float] = {"Z": float(ij.get("spacing", 1.0))}
    for letter, tag in (("X", "XResolution"), ("Y", "YResolution")):
        value = page.tags.get(tag)
        if value is not None and value.value[0] > 0:
            num, den = value.value
            spacing[letter] = den / num
    unit = ij.get("unit")
    return tuple(spacing.get(a, 1.0) for a in spatial_axes(axes)), unit


def referenced_files(path: Path) -> list[Path]:
    """The other files an OME-TIFF's metadata points at (a multi-file OME series reads them), resolved against its
    folder; empty for a plain TIFF or a single-file OME-TIFF."""
    import re

    import tifffile

    with tifffile.TiffFile(path) as tif:
        xml = tif.ome_metadata or ""
    own = Path(os.path.realpath(path))
    targets = {Path(os.path.realpath(path.parent / n)) for n in re.findall(r'FileName="([^"]*)"', xml)}
    return sorted(t for t in targets if t != own)


def read_tiff(path: Path, *, lazy: bool | None = None) -> Image:
    """Read a (multi-page, Big-, OME-, ImageJ-) TIFF as a canonical-axes image."""
    import tifffile

    check_exists(path)
    with wrap_read_errors(path, "TIFF"):
        tif = tifffile.TiffFile(path)
    close = True
    try:
        with wrap_read_errors(path, "TIFF"):
            series = tif.series[0]
            shaped = tif.shaped_metadata[0] if tif.shaped_metadata else {}
            offset = series.dataoffset
            memmappable = offset is not None
            nbytes = int(np.prod(series.shape)) * series.dtype.itemsize
            if offset is not None and offset + nbytes > path.stat().st_size:
                raise FileFormatError(
                    f"'{path}': TIFF is truncated: its pixel data need {offset + nbytes} bytes, "
                    f"the file has {path.stat().st_size}"
                )
            default_lazy = memmappable or nbytes > EAGER_LIMIT
            want_lazy = default_lazy if lazy is None else lazy
            if want_lazy and memmappable:
                import dask.array as da

                data: Any = da.from_array(tifffile.memmap(path, series=0, mode="r"), chunks="auto")
            elif want_lazy:
                import dask.array as da
                import zarr

                data = da.from_zarr(zarr.open(series.aszarr(), mode="r"))
                close = False  # the zarr store reads from the open file while the array lives
            else:
                data = series.asarray()
            data, axes = _standardize(data, series.axes, path)
            fm = shaped.get("fmscope") if isinstance(shaped, dict) else None
            fmt = "ome-tiff" if tif.is_ome else "tiff"
            spacing: tuple[float, ...] | None = None
            unit = None
            notes: list[str] = []
            if isinstance(fm, dict):
                spacing, unit = tuple(fm.get("spacing") or ()) or None, fm.get("unit")
            elif tif.is_ome and tif.ome_metadata:
                spacing, unit = _ome_spacing(tif.ome_metadata, axes)
            elif tif.is_imagej:
                spacing, unit = _imagej_spacing(tif, axes)
                notes.append("spacing and unit read from ImageJ metadata")
            if fm is not None and fm.get("dtype") == "bool" and data.dtype != bool:
                data = data.astype(bool)
            data = apply_laziness(data, lazy, default_lazy)
            meta = make_meta(path, fmt, data.shape, data.dtype, axes, spacing, unit, notes=notes)
    finally:
        if close:
            tif.close()
    return Image(data, meta)


def _pages(data: Any) -> Iterator[np.ndarray]:
    """Yield 2D pages in C order, one dask chunk along axis 0 at a time."""
    if data.ndim == 2:
        yield np.asarray(data)
        return
    for _, block in iter_blocks(data):
        yield from block.reshape(-1, *block.shape[-2:])


def write_tiff(
    path: Path,
    data: Any,
    meta: ImageMetadata | None = None,
    *,
    overwrite: bool = False,
    ome: bool | None = None,
    compression: str | None = "default",
    bigtiff: bool | None = None,
    progress: ProgressCallback | bool | None = None,
) -> Path:
    """Write ``data`` as TIFF (``ome=None``: OME-TIFF when the name ends in ``.ome.tif(f)``).

    ``write_image`` validates ``meta`` and ``compression`` against the format table; called directly (for
    ``bigtiff=``), ``meta=None`` means the default metadata of the array. A dask array is written page by page, never
    materialised whole.
    """
    import tifffile

    if meta is None:
        meta = resolve_meta(data, None)
    if ome is None:
        ome = path.name.lower().endswith((".ome.tif", ".ome.tiff"))
    if compression == "default":
        compression = "zlib"
    nbytes = int(np.prod(meta.shape)) * np.dtype(meta.dtype).itemsize
    use_bigtiff = bool(bigtiff) if bigtiff is not None else nbytes > BIGTIFF_THRESHOLD
    spatial = meta.spatial_axes
    metadata: dict[str, Any] = {"axes": meta.axes}
    if ome:
        unit_symbol = _OME_UNITS.get(meta.unit, meta.unit) if meta.unit is not None else "pixel"
        for a, s in zip(spatial, meta.spacing, strict=True):
            metadata[f"PhysicalSize{a}"] = s
            metadata[f"PhysicalSize{a}Unit"] = unit_symbol
    else:
        metadata["fmscope"] = {"spacing": list(meta.spacing), "unit": meta.unit, "dtype": meta.dtype}
    n_pages = int(np.prod(meta.shape[:-2])) if len(meta.shape) > 2 else 1
    with atomic_output(path, overwrite) as tmp, make_progress(progress, 1, f"writing {path.name}") as advance:
        tifffile.imwrite(
            tmp,
            _pages(data),
            shape=meta.shape,
            dtype=np.dtype(meta.dtype),
            photometric="minisblack",
            compression=compression,
            bigtiff=use_bigtiff,
            ome=ome,
            metadata=metadata,
        )
        advance(1)
    logger.debug("wrote %s (%d pages, bigtiff=%s, compression=%s)", path, n_pages, use_bigtiff, compression)
    return path
