"""NIfTI-1 (``.nii``, ``.nii.gz``) with nibabel.

NIfTI stores (X, Y, Z[, T, C]); fmscope converts to (Z, Y, X) on read and back on write. Spacing comes from the header
zooms (float32, read back as their shortest decimal, so 0.994 stays 0.994); the unit from ``xyzt_units`` (meter,
millimeter, micrometer). What the header cannot say is kept in a short marker in ``descrip``
(``fmscope axes=CYX dtype=bool unit=nanometer``): bool is stored as uint8 and given back as bool.

Read: a 4D image with a trailing singleton (the LSM patches, (96, 96, 96, 1)) is squeezed, with a note; a 4D image
with more than one volume along the 4th axis is read as channels (CZYX, as MONAI does). Writing materialises a dask
array (nibabel writes whole images); compression follows the extension (``.nii.gz`` = gzip).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from fmscope.errors import FileFormatError, InvalidInputError
from fmscope.io._common import (
    apply_laziness,
    check_exists,
    float32_exact,
    format_marker,
    make_meta,
    parse_marker,
    wrap_read_errors,
)
from fmscope.io.types import Image, ImageMetadata
from fmscope.utils import atomic_output, make_progress
from fmscope.utils.progress import ProgressCallback

logger = logging.getLogger(__name__)

_NIFTI_UNITS = {"meter": "meter", "mm": "millimeter", "micron": "micrometer"}
_TO_NIFTI_UNITS = {v: k for k, v in _NIFTI_UNITS.items()}


def read_nifti(path: Path, *, lazy: bool | None = None) -> Image:
    """Read a NIfTI image as YX / ZYX / CYX / CZYX (eager by default)."""
    import nibabel as nib

    check_exists(path)
    with wrap_read_errors(path, "NIfTI"):
        img: Any = nib.load(str(path))
        header = img.header
        proxy = img.dataobj
        slope, inter = getattr(proxy, "slope", 1.0), getattr(proxy, "inter", 0.0)
        scaled = not (slope in (1.0, None) or np.isnan(slope)) or not (inter in (0.0, None) or np.isnan(inter))
        data: Any = np.asanyarray(proxy) if scaled else np.asarray(proxy.get_unscaled())
        marker = parse_marker(header["descrip"].tobytes().split(b"\0")[0].decode("ascii", "replace"))
        zooms = [float32_exact(z) for z in header.get_zooms()]
        space_unit = header.get_xyzt_units()[0]
    notes: list[str] = []
    vector = data.ndim == 5  # NIfTI's (X, Y, Z, 1, C) vector layout, as written by fmscope
    if data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]
        notes.append(f"squeezed a trailing singleton axis: NIfTI shape {tuple(img.shape)}")
    elif data.ndim == 5 and data.shape[3] == 1:
        data = data[:, :, :, 0, :]
    if data.ndim == 2:
        data, axes, sp = data.T, "YX", zooms[1::-1]
    elif data.ndim == 3:
        data, axes, sp = data.transpose(2, 1, 0), "ZYX", zooms[2::-1]
    elif data.ndim == 4:
        data, axes, sp = data.transpose(3, 2, 1, 0), "CZYX", zooms[2::-1]
        if not vector:
            notes.append(f"read the 4th NIfTI axis ({data.shape[0]} volumes) as channels")
    else:
        raise FileFormatError(f"'{path}': cannot map a {data.ndim}D NIfTI image (shape {img.shape}) to ZYX/CZYX")
    if marker.get("axes") == "CYX" and axes == "CZYX" and data.shape[1] == 1:
        data, axes, sp = data[:, 0], "CYX", sp[1:]
    unit = _NIFTI_UNITS.get(space_unit) or marker.get("unit")
    if marker.get("dtype") == "bool":
        data = data.astype(bool)
    data = np.ascontiguousarray(data)
    data = apply_laziness(data, lazy, False)
    return Image(data, make_meta(path, "nifti", data.shape, data.dtype, axes, sp, unit, notes=notes))


def write_nifti(
    path: Path,
    data: Any,
    meta: ImageMetadata,
    *,
    overwrite: bool = False,
    compression: str | None = "default",
    progress: ProgressCallback | bool | None = None,
) -> Path:
    """Write a NIfTI-1 image (identity affine scaled by the spacing); ``compression`` is the extension's.

    ``meta`` (dtype and axes included) comes validated from ``write_image``.
    """
    import nibabel as nib

    arr = np.asarray(data.compute() if hasattr(data, "compute") else data)
    marker: dict[str, str] = {}
    if meta.axes in ("CYX",):
        marker["axes"] = meta.axes
    if arr.dtype == bool:
        marker["dtype"] = "bool"
        arr = arr.astype(np.uint8)
    # to NIfTI order: (X, Y), (X, Y, Z), or (X, Y, Z, 1, C) for channels (NIfTI's vector-valued layout)
    if meta.axes == "YX":
        xyz, zooms = arr.T, list(meta.spacing[::-1])
    elif meta.axes == "ZYX":
        xyz, zooms = arr.transpose(2, 1, 0), list(meta.spacing[::-1])
    elif meta.axes == "CZYX":
        xyz, zooms = arr.transpose(3, 2, 1, 0)[:, :, :, np.newaxis, :], [*meta.spacing[::-1], 1.0, 1.0]
    else:  # CYX
        xyz = arr.transpose(2, 1, 0)[:, :, np.newaxis, np.newaxis, :]
        zooms = [*meta.spacing[::-1], 1.0, 1.0, 1.0]
    unit_code = "unknown"
    if meta.unit is not None:
        if meta.unit in _TO_NIFTI_UNITS:
            unit_code = _TO_NIFTI_UNITS[meta.unit]
        else:
            marker["unit"] = meta.unit
    text = format_marker(marker) if marker else ""
    if len(text) > 79:
        raise InvalidInputError(f"meta.unit: '{meta.unit}' is too long to be kept in a NIfTI header")
    affine = np.diag([*(zooms + [1.0, 1.0])[:3], 1.0])
    img = nib.Nifti1Image(np.asfortranarray(xyz), affine)
    img.header.set_data_dtype(xyz.dtype)
    img.header.set_zooms(tuple(zooms))
    img.header.set_xyzt_units(xyz=unit_code)
    img.header["descrip"] = text.encode("ascii")
    with atomic_output(path, overwrite) as tmp, make_progress(progress, 1, f"writing {path.name}") as advance:
        nib.save(img, str(tmp))
        advance(1)
    return path
