"""OME-Zarr (zarr v3, OME-NGFF 0.5 ``multiscales``), written with the zarr library.

Layout: a group whose ``zarr.json`` attributes hold ``{"ome": {"version": "0.5", "multiscales": [...]}}`` and one
array per level (``"0"``, ``"1"``...). Each level has a ``scale`` transform (voxel size in ``unit``), and a
``translation`` of half the extra voxel size for mean-downsampled levels (voxel centres move). Also read: NGFF 0.4
(``multiscales`` at the top of the attributes) and a bare zarr array (default axes, spacing 1).

Writing streams: level 0 is stored chunk by chunk from the input (numpy or dask); every coarser level is computed from
the stored previous level, so nothing is materialised whole. Default compression: ``zstd`` (level 3).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from fmscope.errors import FileFormatError, InvalidInputError
from fmscope.io._common import apply_laziness, check_exists, make_meta, wrap_read_errors
from fmscope.io.pyramid import auto_levels, downsample, level_factors
from fmscope.io.types import Image, ImageMetadata, default_axes
from fmscope.utils import atomic_output, make_progress
from fmscope.utils.progress import ProgressCallback

logger = logging.getLogger(__name__)

NGFF_VERSION = "0.5"
_AXIS_TYPES = {"T": "time", "C": "channel", "Z": "space", "Y": "space", "X": "space"}


def default_chunks(axes: str, shape: Sequence[int]) -> tuple[int, ...]:
    """1 per T/C, 64 in Z, 256 in Y/X for volumes and 1024 for 2D images; clipped to the shape."""
    planar = "Z" not in axes
    want = {"T": 1, "C": 1, "Z": 64, "Y": 1024 if planar else 256, "X": 1024 if planar else 256}
    return tuple(min(want[a], int(n)) for a, n in zip(axes, shape, strict=True))


def _compressors(compression: str | None) -> Any:
    """The zarr codec of ``compression`` (one of the format table's, checked by ``write_image``)."""
    from zarr.codecs import BloscCodec, GzipCodec, ZstdCodec

    codecs = {
        "default": lambda: ZstdCodec(level=3),
        "zstd": lambda: ZstdCodec(level=3),
        "gzip": lambda: GzipCodec(level=5),
        "blosc": lambda: BloscCodec(cname="zstd", clevel=5),
    }
    return None if compression is None else codecs[compression]()


def _multiscales(meta: ImageMetadata, factors: list[tuple[int, ...]], method: str, name: str) -> dict[str, Any]:
    axes_json: list[dict[str, Any]] = []
    for a in meta.axes:
        entry: dict[str, Any] = {"name": a.lower(), "type": _AXIS_TYPES[a]}
        if a in "ZYX" and meta.unit is not None:
            entry["unit"] = meta.unit
        axes_json.append(entry)
    base = {a: s for a, s in zip(meta.spatial_axes, meta.spacing, strict=True)}
    total = [1] * len(meta.axes)
    datasets = []
    for level in range(len(factors) + 1):
        if level:
            total = [t * f for t, f in zip(total, factors[level - 1], strict=True)]
        scale = [base.get(a, 1.0) * t for a, t in zip(meta.axes, total, strict=True)]
        transforms: list[dict[str, Any]] = [{"type": "scale", "scale": scale}]
        if method == "mean" and any(t > 1 for t in total):
            shift = [base.get(a, 1.0) * (t - 1) / 2 for a, t in zip(meta.axes, total, strict=True)]
            transforms.append({"type": "translation", "translation": shift})
        datasets.append({"path": str(level), "coordinateTransformations": transforms})
    return {"name": name, "axes": axes_json, "datasets": datasets, "type": method}


def write_omezarr(
    path: Path,
    data: Any,
    meta: ImageMetadata,
    *,
    overwrite: bool = False,
    chunks: tuple[int, ...] | None = None,
    pyramid_levels: int | None = None,
    compression: str | None = "default",
    labels: bool = False,
    progress: ProgressCallback | bool | None = None,
) -> Path:
    """Write an OME-Zarr multiscale image; ``pyramid_levels`` counts level 0 (``None``: automatic).

    ``meta``, ``chunks`` and ``compression`` come validated from ``write_image``.
    """
    import dask.array as da
    import zarr

    compressors = _compressors(compression)
    if chunks is None:
        chunks = default_chunks(meta.axes, meta.shape)
    n_levels = auto_levels(meta.axes, meta.shape) if pyramid_levels is None else int(pyramid_levels)
    factors = level_factors(meta.axes, meta.shape, meta.spacing, n_levels)
    method = "nearest" if labels or meta.dtype == "bool" else "mean"
    with atomic_output(path, overwrite) as tmp, make_progress(progress, n_levels, f"writing {path.name}") as advance:
        group = zarr.open_group(str(tmp), mode="w", zarr_format=3)
        previous: Any = None
        for level in range(n_levels):
            if level == 0:
                level_data: Any = data
            else:
                level_data = downsample(da.from_zarr(previous), factors[level - 1], method)
            shape = tuple(int(s) for s in level_data.shape)
            arr: Any = group.create_array(
                str(level),
                shape=shape,
                dtype=np.dtype(meta.dtype),
                chunks=tuple(min(c, s) for c, s in zip(chunks, shape, strict=True)),
                compressors=compressors,
                fill_value=False if meta.dtype == "bool" else 0,
                dimension_names=[a.lower() for a in meta.axes],
            )
            if isinstance(level_data, np.ndarray):
                arr[...] = level_data
            else:
                da.store(da.asarray(level_data).rechunk(arr.chunks), arr, lock=False)
            previous = arr
            advance(1)
        group.attrs.update(
            {
                "ome": {"version": NGFF_VERSION, "multiscales": [_multiscales(meta, factors, method, path.stem)]},
                "fmscope": {"labels": bool(labels)},
            }
        )
    logger.debug("wrote %s: %d levels, chunks %s", path, n_levels, chunks)
    return path


def _read_bare_array(path: Path, arr: Any, lazy: bool | None) -> Image:
    import dask.array as da

    axes = default_axes(arr.ndim)
    data = apply_laziness(da.from_zarr(arr), lazy, True)
    return Image(data, make_meta(path, "zarr", data.shape, data.dtype, axes, notes=("no OME-NGFF metadata",)))


def read_omezarr(path: Path, *, level: int = 0, dataset: str | None = None, lazy: bool | None = None) -> Image:
    """Read level ``level`` of an OME-Zarr image (lazily, as dask) with that level's spacing.

    ``dataset`` names a sub-group holding the multiscales (e.g. ``'labels/cells'``).
    """
    import dask.array as da
    import zarr

    check_exists(path)
    with wrap_read_errors(path, "OME-Zarr"):
        node = zarr.open(str(path), mode="r", path=dataset or "")
        if isinstance(node, zarr.Array):
            return _read_bare_array(path, node, lazy)
        attrs: dict[str, Any] = dict(node.attrs)
        ms_list = attrs.get("ome", {}).get("multiscales") or attrs.get("multiscales")
        if not ms_list:
            arrays = list(node.array_keys())
            if len(arrays) == 1:
                return _read_bare_array(path, node[arrays[0]], lazy)
            raise FileFormatError(f"'{path}': no OME-NGFF 'multiscales' metadata and arrays {arrays}")
        ms: dict[str, Any] = ms_list[0]
        datasets = ms["datasets"]
        if not 0 <= level < len(datasets):
            raise InvalidInputError(f"level: '{path}' has levels 0..{len(datasets) - 1}, got {level}")
        names = [str(ax["name"] if isinstance(ax, dict) else ax).upper() for ax in ms["axes"]]
        units = {str(ax.get("unit")) for ax in ms["axes"] if isinstance(ax, dict) and ax.get("unit")}
        scale: list[float] = [1.0] * len(names)
        for transform in datasets[level].get("coordinateTransformations", []):
            if transform.get("type") == "scale":
                scale = [float(s) for s in transform["scale"]]
        arr = node[datasets[level]["path"]]
        data: Any = da.from_zarr(arr)
        if len(names) != data.ndim or set(names) - set("TCZYX"):
            raise FileFormatError(f"'{path}': axes {names} do not fit array shape {data.shape}")
        axes = "".join(a for a in "TCZYX" if a in names)
        order = [names.index(a) for a in axes]
        if order != list(range(len(order))):
            data = data.transpose(order)
        spacing = [scale[names.index(a)] for a in axes if a in "ZYX"]
        data = apply_laziness(data, lazy, True)
        unit = sorted(units)[0] if units else None
        ds = f"{dataset}/{datasets[level]['path']}" if dataset else str(datasets[level]["path"])
        meta = make_meta(path, "ome-zarr", data.shape, data.dtype, axes, spacing, unit, dataset=ds)
    return Image(data, meta)


def count_levels(path: str | os.PathLike[str], dataset: str | None = None) -> int:
    """The number of multiscale levels of an OME-Zarr image (1 for a bare array)."""
    import zarr

    p = Path(path)
    check_exists(p)
    with wrap_read_errors(p, "OME-Zarr"):
        node = zarr.open(str(p), mode="r", path=dataset or "")
        if isinstance(node, zarr.Array):
            return 1
        attrs: dict[str, Any] = dict(node.attrs)
        ms_list = attrs.get("ome", {}).get("multiscales") or attrs.get("multiscales")
        return len(ms_list[0]["datasets"]) if ms_list else 1
