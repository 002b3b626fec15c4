"""MRC (``.mrc``, ``.mrcs``, ``.rec``, ``.map``) with mrcfile: cryo-EM / tomography volumes and image stacks.

Holds YX and ZYX images of int16, uint16, float32 (native modes 1, 6, 2) and uint8 (stored as mode 6 by mrcfile,
given back as uint8 through a header label). The header voxel size is in angstrom: spacing in another length unit is
converted for the header, and a label ``fmscope unit=... spacing=...`` keeps the exact values, so a round trip gives
the same spacing and unit back. Files with no voxel size (0) read with spacing 1 and unit None; otherwise the unit is
``angstrom``. Reads are lazy (dask over ``mrcfile.mmap``). A dask array is written slab by slab into a memory map.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from fmscope.errors import InvalidInputError
from fmscope.io._common import (
    ANGSTROM_PER_UNIT,
    apply_laziness,
    check_exists,
    float32_exact,
    format_marker,
    iter_blocks,
    make_meta,
    parse_marker,
    wrap_read_errors,
)
from fmscope.io.types import Image, ImageMetadata
from fmscope.utils import atomic_output, make_progress
from fmscope.utils.progress import ProgressCallback

logger = logging.getLogger(__name__)

_STORED = {"uint8": np.uint16}


def _marker(mrc: Any) -> dict[str, str]:
    for i in range(int(mrc.header.nlabl)):
        found = parse_marker(bytes(mrc.header.label[i]).decode("ascii", "replace"))
        if found:
            return found
    return {}


def read_mrc(path: Path, *, lazy: bool | None = None) -> Image:
    """Read an MRC volume or image (lazily by default)."""
    import dask.array as da
    import mrcfile

    check_exists(path)
    with wrap_read_errors(path, "MRC"):
        mrc = mrcfile.mmap(str(path), mode="r", permissive=False)
        raw = mrc.data
        if raw is None:
            raise InvalidInputError(f"'{path}': MRC file holds no data")
        marker = _marker(mrc)
        voxel = mrc.voxel_size
        vsize = [float(voxel.z), float(voxel.y), float(voxel.x)]
    axes = "YX" if raw.ndim == 2 else "ZYX"
    data: Any = da.from_array(raw, chunks="auto")
    if marker.get("dtype") == "uint8":
        data = data.astype(np.uint8)
    vsize = vsize[-len(axes) :]
    spacing: list[float] | None = None
    unit: str | None = None
    if "spacing" in marker:
        spacing = [float(s) for s in marker["spacing"].split(",")]
        unit = None if marker.get("unit", "none") == "none" else marker["unit"]
    elif any(v > 0 for v in vsize):
        spacing, unit = [float32_exact(v) if v > 0 else 1.0 for v in vsize], "angstrom"
    data = apply_laziness(data, lazy, True)
    if not isinstance(data, da.Array):
        mrc.close()
    return Image(data, make_meta(path, "mrc", data.shape, data.dtype, axes, spacing, unit))


def write_mrc(
    path: Path,
    data: Any,
    meta: ImageMetadata,
    *,
    overwrite: bool = False,
    compression: str | None = "default",
    progress: ProgressCallback | bool | None = None,
) -> Path:
    """Write an MRC file (uncompressed). ``meta`` (dtype and axes included) comes validated from ``write_image``."""
    import mrcfile

    stored = np.dtype(_STORED.get(meta.dtype, meta.dtype))
    fields: dict[str, str] = {}
    if meta.dtype != stored.name:
        fields["dtype"] = meta.dtype
    to_angstrom = ANGSTROM_PER_UNIT.get(meta.unit or "angstrom")
    if meta.unit != "angstrom" or any(float32_exact(s) != s for s in meta.spacing):
        fields["unit"] = meta.unit or "none"
        fields["spacing"] = ",".join(repr(float(s)) for s in meta.spacing)
    label = format_marker(fields) if fields else ""
    if len(label) > 80:
        raise InvalidInputError(f"meta.spacing: {meta.spacing} is too long to be kept in an MRC label")
    if to_angstrom is None:
        logger.warning("'%s': unit '%s' has no angstrom conversion; header voxel size left unset", path, meta.unit)
    n_slabs = meta.shape[0] if len(meta.shape) == 3 else 1
    with atomic_output(path, overwrite) as tmp, make_progress(progress, n_slabs, f"writing {path.name}") as advance:
        mrc = mrcfile.new_mmap(str(tmp), shape=meta.shape, mrc_mode=mrcfile.utils.mode_from_dtype(stored))
        try:
            out = mrc.data
            if len(meta.shape) == 2:
                out[...] = np.asarray(data.compute() if hasattr(data, "compute") else data).astype(stored, copy=False)
                advance(1)
            else:
                for start, block in iter_blocks(data):
                    out[start : start + len(block)] = block.astype(stored, copy=False)
                    advance(len(block))
            if to_angstrom is not None and (meta.unit is not None or any(s != 1.0 for s in meta.spacing)):
                sp = [s * to_angstrom for s in meta.spacing[::-1]] + ([1.0] if len(meta.spacing) == 2 else [])
                mrc.voxel_size = tuple(sp)
            if label:
                mrc.add_label(label)
            with np.errstate(over="ignore", invalid="ignore"):
                mrc.update_header_stats()
        finally:
            mrc.close()
    return path
