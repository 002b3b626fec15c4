"""Single 2D images: PNG (read and write) and JPEG (read only: it is lossy, so a round trip could not be exact).

Read: grayscale as YX; gray+alpha, RGB and RGBA as CYX (channels first). Write: YX of uint8, uint16 or bool
(1-bit PNG); CYX with 3 (RGB) or 4 (RGBA) channels of uint8. PNG keeps no spacing: a non-default spacing or unit is
dropped with a warning (use TIFF or OME-Zarr to keep it).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from fmscope.errors import FileFormatError, InvalidInputError
from fmscope.io._common import apply_laziness, check_exists, make_meta, wrap_read_errors
from fmscope.io.types import Image, ImageMetadata
from fmscope.utils import atomic_output, make_progress
from fmscope.utils.progress import ProgressCallback

logger = logging.getLogger(__name__)


def read_plane(path: Path) -> np.ndarray:
    """Read one 2D image file (PNG/JPEG via imageio, TIFF via tifffile) as (Y, X) or (Y, X, C) numpy."""
    check_exists(path)
    with wrap_read_errors(path, "image"):
        if path.suffix.lower() in (".tif", ".tiff"):
            import tifffile

            return np.asarray(tifffile.imread(path))
        import imageio.v3 as iio

        return np.asarray(iio.imread(path, plugin="pillow"))


def read_image2d(path: Path, *, lazy: bool | None = None) -> Image:
    """Read a PNG or JPEG image as YX, or CYX for gray+alpha / RGB / RGBA."""
    data = read_plane(path)
    fmt = "png" if path.suffix.lower() == ".png" else "jpeg"
    notes: tuple[str, ...] = ()
    if data.ndim == 3:
        if data.shape[-1] not in (2, 3, 4):
            raise FileFormatError(f"'{path}': expected a 2D image with 1-4 channels, got shape {data.shape}")
        data = np.ascontiguousarray(np.moveaxis(data, -1, 0))
        notes = ("channels moved first (YXC -> CYX)",)
        axes = "CYX"
    elif data.ndim == 2:
        axes = "YX"
    else:
        raise FileFormatError(f"'{path}': expected a 2D image, got shape {data.shape}")
    data = apply_laziness(data, lazy, False)
    return Image(data, make_meta(path, fmt, data.shape, data.dtype, axes, notes=notes))


def write_png(
    path: Path,
    data: Any,
    meta: ImageMetadata,
    *,
    overwrite: bool = False,
    compression: str | None = "default",
    progress: ProgressCallback | bool | None = None,
) -> Path:
    """Write a PNG image (always deflate-compressed, lossless).

    ``meta`` (dtype, axes YX or CYX) comes validated from ``write_image``; CYX must be 3 or 4 channels of uint8.
    """
    import imageio.v3 as iio

    arr = np.asarray(data.compute() if hasattr(data, "compute") else data)
    if meta.axes == "CYX":
        if meta.shape[0] not in (3, 4) or meta.dtype != "uint8":
            raise InvalidInputError(
                f"data: PNG holds CYX images with 3 or 4 channels of uint8, got {meta.shape[0]} of {meta.dtype}"
            )
        arr = np.moveaxis(arr, 0, -1)
    if meta.unit is not None or any(s != 1.0 for s in meta.spacing):
        logger.warning("'%s': PNG keeps no spacing; dropping spacing %s %s", path, meta.spacing, meta.unit)
    with atomic_output(path, overwrite) as tmp, make_progress(progress, 1, f"writing {path.name}") as advance:
        iio.imwrite(tmp, np.ascontiguousarray(arr), extension=".png")
        advance(1)
    return path
