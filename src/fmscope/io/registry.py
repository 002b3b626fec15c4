"""Format detection and dispatch: ``read_image`` / ``write_image`` for every supported format.

Support matrix (write then read gives the identical array, axes, spacing and unit; "-" = refused with
InvalidInputError naming the format, the dtype and the dtypes it holds; never a silent conversion):

=========  ===========================  =====  ======  =====  ======  =======  =======  ====  =====================
format     extensions                   uint8  uint16  int16  uint32  float32  float64  bool  axes written
=========  ===========================  =====  ======  =====  ======  =======  =======  ====  =====================
tiff       .tif .tiff                   yes    yes     yes    yes     yes      yes      yes   YX ZYX CYX CZYX (+T)
ome-tiff   .ome.tif .ome.tiff           yes    yes     yes    yes     yes      yes      yes   YX ZYX CYX CZYX (+T)
ome-zarr   .zarr .ome.zarr (folder)     yes    yes     yes    yes     yes      yes      yes   YX ZYX CYX CZYX (+T)
hdf5       .h5 .hdf5 .hdf               yes    yes     yes    yes     yes      yes      yes   YX ZYX CYX CZYX (+T)
nifti      .nii .nii.gz                 yes    yes     yes    yes     yes      yes      yes*  YX ZYX CYX CZYX
mrc        .mrc .mrcs .rec .map         yes*   yes     yes    -       yes      -        -     YX ZYX
slices     folder, no extension         png    png     tif    tif     tif      tif      png   ZYX
png        .png                         yes    yes     -      -       -        -        yes   YX, CYX (3/4 x uint8)
jpeg       .jpg .jpeg                   read only (lossy): YX or CYX uint8
=========  ===========================  =====  ======  =====  ======  =======  =======  ====  =====================

``*``: stored as another type (NIfTI bool as uint8, MRC uint8 as uint16) with a marker in the header, so the round
trip gives the original dtype back. Spacing and unit: kept by every format except png (dropped, with a warning).

Lazy reads (``lazy=None``): ome-zarr, hdf5, mrc and uncompressed TIFF (memory-mapped) give dask arrays; compressed
TIFF, NIfTI, PNG/JPEG and slice folders give numpy. ``lazy=True``/``False`` forces dask/numpy.
Default compression (``compression="default"``): TIFF zlib, OME-Zarr zstd, HDF5 gzip, NIfTI per extension
(``.nii.gz``), slices: PNG deflate / TIFF zlib; MRC uncompressed. ``None`` writes uncompressed where possible.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from fmscope.errors import FileFormatError, InvalidInputError
from fmscope.io._common import as_path
from fmscope.io.types import Image, ImageMetadata
from fmscope.utils.progress import ProgressCallback

logger = logging.getLogger(__name__)

SUPPORTED_FORMATS: dict[str, tuple[str, ...]] = {
    "ome-tiff": (".ome.tif", ".ome.tiff"),
    "tiff": (".tif", ".tiff"),
    "ome-zarr": (".ome.zarr", ".zarr"),
    "nifti": (".nii", ".nii.gz"),
    "hdf5": (".h5", ".hdf5", ".hdf"),
    "mrc": (".mrc", ".mrcs", ".rec", ".map"),
    "png": (".png",),
    "jpeg": (".jpg", ".jpeg"),
    "slices": (),
}


def detect_format(path: str | os.PathLike[str]) -> str:
    """Format name of ``path`` from its extension, or from its content for a folder.

    A folder is OME-Zarr when named ``*.zarr`` or holding ``zarr.json``/``.zgroup``/``.zarray``, else a folder of
    slices; a path with no extension that does not exist yet means a folder of slices (for writing).
    """
    p = as_path(path)
    name = p.name.lower()
    for fmt, extensions in SUPPORTED_FORMATS.items():
        if any(name.endswith(ext) for ext in extensions):
            return fmt
    if p.is_dir():
        if any((p / marker).exists() for marker in ("zarr.json", ".zgroup", ".zarray")):
            return "ome-zarr"
        return "slices"
    if not p.suffix and not p.exists():
        return "slices"
    known = ", ".join(ext for exts in SUPPORTED_FORMATS.values() for ext in exts)
    raise FileFormatError(f"'{p}': unknown extension '{p.suffix or p.name}'; supported: {known}, or a folder of slices")


def read_image(
    path: str | os.PathLike[str], *, dataset: str | None = None, level: int = 0, lazy: bool | None = None
) -> Image:
    """Read an image file (or folder) into an ``Image`` with canonical axes (YX, ZYX, CYX, CZYX).

    Args:
        path: file or folder; the format comes from ``detect_format``.
        dataset: HDF5 dataset path (optional when the file holds exactly one), or OME-Zarr sub-group.
        level: OME-Zarr multiscale level (0 = full resolution); spacing is that level's.
        lazy: ``None`` = the format's default (see the module doc), ``True`` = dask, ``False`` = numpy.

    Raises:
        FileFormatError: missing path, unknown extension, unreadable/corrupt file, ambiguous HDF5 dataset.
        InvalidInputError: ``dataset``/``level`` given for a format that has none, or out of range.
    """
    p = as_path(path)
    if not p.exists():
        raise FileFormatError(f"'{p}' does not exist")
    fmt = detect_format(p)
    if dataset is not None and fmt not in ("hdf5", "ome-zarr"):
        raise InvalidInputError(f"dataset: only HDF5 and OME-Zarr have datasets; got {dataset!r} for '{p}' ({fmt})")
    if level != 0 and fmt != "ome-zarr":
        raise InvalidInputError(f"level: only OME-Zarr has multiscale levels; got {level} for '{p}' ({fmt})")
    if fmt in ("tiff", "ome-tiff"):
        from fmscope.io.tiff import read_tiff

        return read_tiff(p, lazy=lazy)
    if fmt == "ome-zarr":
        from fmscope.io.omezarr import read_omezarr

        return read_omezarr(p, level=level, dataset=dataset, lazy=lazy)
    if fmt == "nifti":
        from fmscope.io.nifti import read_nifti

        return read_nifti(p, lazy=lazy)
    if fmt == "hdf5":
        from fmscope.io.hdf5 import read_hdf5

        return read_hdf5(p, dataset=dataset, lazy=lazy)
    if fmt == "mrc":
        from fmscope.io.mrc import read_mrc

        return read_mrc(p, lazy=lazy)
    if fmt == "slices":
        from fmscope.io.slices import read_slices

        return read_slices(p, lazy=lazy)
    from fmscope.io.image2d import read_image2d

    return read_image2d(p, lazy=lazy)


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
    fmt = detect_format(p)
    if dataset is not None and fmt != "hdf5":
        raise InvalidInputError(f"dataset: only HDF5 files have named datasets; got {dataset!r} for '{p}' ({fmt})")
    if chunks is not None and fmt not in ("hdf5", "ome-zarr"):
        raise InvalidInputError(f"chunks: only OME-Zarr and HDF5 are chunked; got {chunks} for '{p}' ({fmt})")
    if pyramid_levels is not None and fmt != "ome-zarr":
        raise InvalidInputError(f"pyramid_levels: only OME-Zarr holds pyramids; got {pyramid_levels} for '{p}'")
    common: dict[str, Any] = {"overwrite": overwrite, "compression": compression, "progress": progress}
    if fmt in ("tiff", "ome-tiff"):
        from fmscope.io.tiff import write_tiff

        return write_tiff(p, data, meta, ome=fmt == "ome-tiff", **common)
    if fmt == "ome-zarr":
        from fmscope.io.omezarr import write_omezarr

        return write_omezarr(p, data, meta, chunks=chunks, pyramid_levels=pyramid_levels, labels=labels, **common)
    if fmt == "nifti":
        from fmscope.io.nifti import write_nifti

        return write_nifti(p, data, meta, **common)
    if fmt == "hdf5":
        from fmscope.io.hdf5 import write_hdf5

        return write_hdf5(p, data, meta, dataset=dataset, chunks=chunks, **common)
    if fmt == "mrc":
        from fmscope.io.mrc import write_mrc

        return write_mrc(p, data, meta, **common)
    if fmt == "slices":
        from fmscope.io.slices import write_slices

        return write_slices(p, data, meta, **common)
    from fmscope.io.image2d import write_png

    return write_png(p, data, meta, **common)
