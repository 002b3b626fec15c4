"""A folder of 2D slices (``.png``, ``.tif``, ``.tiff``), one file per Z, read as ZYX in natural order.

Natural sort: ``img2`` comes before ``img10``. All slices must share shape and dtype. Written slices are PNG for
uint8, uint16 and bool, and TIFF (zlib unless ``compression=None``) for int16, uint32, float32, float64; the files are
``slice_0000.png``... and a sidecar ``fmscope.json`` keeps axes, spacing and unit (read back when present).
``lazy=True`` reads one slice per dask chunk.
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path
from typing import Any

import numpy as np

from fmscope.errors import FileFormatError, InvalidInputError
from fmscope.io._common import check_exists, iter_blocks, make_meta, wrap_read_errors
from fmscope.io.image2d import read_plane
from fmscope.io.types import Image, ImageMetadata
from fmscope.utils import atomic_output, make_progress
from fmscope.utils.progress import ProgressCallback

logger = logging.getLogger(__name__)

SLICE_EXTENSIONS = (".png", ".tif", ".tiff")
SIDECAR = "fmscope.json"
_PNG_DTYPES = ("uint8", "uint16", "bool")


def natural_key(name: str) -> list[Any]:
    """Sort key that orders embedded numbers by value: ``img2 < img10``."""
    return [int(tok) if tok.isdigit() else tok.lower() for tok in re.split(r"(\d+)", name)]


def list_slices(folder: Path) -> list[Path]:
    """The slice files of ``folder`` in natural order (hidden files skipped)."""
    files = [
        p
        for p in folder.iterdir()
        if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in SLICE_EXTENSIONS
    ]
    return sorted(files, key=lambda p: natural_key(p.name))


def _read_checked(path: Path, shape: tuple[int, ...], dtype: np.dtype[Any], first: str) -> np.ndarray:
    plane = read_plane(path)
    if plane.shape != shape or plane.dtype != dtype:
        raise FileFormatError(
            f"'{path}': slice shape {plane.shape} / dtype {plane.dtype} differs from {shape} / {dtype} of '{first}'"
        )
    return plane


def read_slices(path: Path, *, lazy: bool | None = None) -> Image:
    """Read a folder of 2D slices as a ZYX volume."""
    import dask
    import dask.array as da

    check_exists(path)
    if not path.is_dir():
        raise FileFormatError(f"'{path}' is not a folder of slices")
    files = list_slices(path)
    if not files:
        raise FileFormatError(f"'{path}' holds no {'/'.join(SLICE_EXTENSIONS)} slices")
    first = read_plane(files[0])
    if first.ndim != 2:
        raise FileFormatError(f"'{files[0]}': slices must be 2D grayscale, got shape {first.shape}")
    if lazy:
        planes = [da.from_array(first, chunks=first.shape)] + [
            da.from_delayed(
                dask.delayed(_read_checked)(f, first.shape, first.dtype, files[0].name), first.shape, first.dtype
            )
            for f in files[1:]
        ]
        data: Any = da.stack(planes)
    else:
        out = np.empty((len(files), *first.shape), dtype=first.dtype)
        out[0] = first
        for i, f in enumerate(files[1:], start=1):
            out[i] = _read_checked(f, first.shape, first.dtype, files[0].name)
        data = out
    spacing, unit = None, None
    sidecar = path / SIDECAR
    if sidecar.is_file():
        with wrap_read_errors(sidecar, "fmscope slice metadata"):
            side = json.loads(sidecar.read_text())
            spacing, unit = side.get("spacing"), side.get("unit")
    return Image(data, make_meta(path, "slices", data.shape, data.dtype, "ZYX", spacing, unit))


def write_slices(
    path: Path,
    data: Any,
    meta: ImageMetadata,
    *,
    overwrite: bool = False,
    compression: str | None = "default",
    progress: ProgressCallback | bool | None = None,
) -> Path:
    """Write a ZYX volume as a folder of PNG (uint8/uint16/bool) or TIFF (other dtypes) slices.

    ``meta`` and ``compression`` come validated from ``write_image``; a TIFF compression for PNG slices raises.
    """
    import imageio.v3 as iio
    import tifffile

    use_png = meta.dtype in _PNG_DTYPES
    if compression == "default":
        compression = None if use_png else "zlib"
    if compression is not None and use_png:
        raise InvalidInputError(
            f"compression: slices of {meta.dtype} are PNG files, always deflate-compressed; got {compression!r}"
        )
    n = meta.shape[0]
    width = max(4, len(str(n - 1)))
    ext = ".png" if use_png else ".tif"
    with atomic_output(path, overwrite) as tmp, make_progress(progress, n, f"writing {path.name}") as advance:
        tmp.mkdir()
        for start, block in iter_blocks(data):
            for k, plane in enumerate(block):
                name = tmp / f"slice_{start + k:0{width}d}{ext}"
                if use_png:
                    iio.imwrite(name, np.ascontiguousarray(plane), extension=".png")
                else:
                    tifffile.imwrite(name, plane, photometric="minisblack", compression=compression)
            advance(len(block))
        side = {"axes": meta.axes, "spacing": list(meta.spacing), "unit": meta.unit}
        (tmp / SIDECAR).write_text(json.dumps(side))
    return path
