"""HDF5 (``.h5``, ``.hdf5``, ``.hdf``) with h5py.

One image = one dataset (``dataset=``, default ``'data'`` on write). Metadata are dataset attributes: ``axes``,
``spacing`` (one per spatial axis), ``unit`` (absent when unknown); ``element_size_um`` (ilastik/Fiji) is also written
when the unit is micrometer, and read when the fmscope attributes are absent. All seven dtypes are held natively
(bool as an HDF5 enum). Reads are lazy (dask over the open dataset; the file stays open while the array lives).
Writes are chunked; a dask array is stored chunk by chunk. Default compression: gzip level 4.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from fmscope.errors import FileFormatError
from fmscope.io._common import apply_laziness, check_exists, make_meta, wrap_read_errors
from fmscope.io.omezarr import default_chunks
from fmscope.io.types import CANONICAL_AXES, Image, ImageMetadata, default_axes
from fmscope.utils import atomic_output, make_progress
from fmscope.utils.progress import ProgressCallback

logger = logging.getLogger(__name__)

DEFAULT_DATASET = "data"


def list_datasets(path: Path) -> list[str]:
    """Paths of all array datasets in an HDF5 file."""
    import h5py

    found: list[str] = []
    with h5py.File(path, "r") as f:
        f.visititems(lambda name, obj: found.append(name) if isinstance(obj, h5py.Dataset) and obj.ndim > 0 else None)
    return found


def external_references(path: Path) -> list[str]:
    """What an HDF5 file reads from other files: external links, datasets whose raw data live in another file, and
    virtual datasets (each mapped onto other files); one line each, empty for a self-contained file."""
    import h5py

    found: list[str] = []
    with h5py.File(path, "r") as f:

        def link(name: str, item: Any) -> None:
            if isinstance(item, h5py.ExternalLink):
                found.append(f"{name}: an external link to '{Path(item.filename).name}'")

        def stored(name: str, obj: Any) -> None:
            if isinstance(obj, h5py.Dataset):
                if obj.external:
                    found.append(f"{name}: raw data stored in '{Path(str(obj.external[0][0])).name}'")
                if obj.is_virtual:
                    found.append(f"{name}: a virtual dataset mapped onto other files")

        f.visititems_links(link)
        f.visititems(stored)
    return found


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def read_hdf5(path: Path, *, dataset: str | None = None, lazy: bool | None = None) -> Image:
    """Read one dataset of an HDF5 file (lazily by default)."""
    import dask.array as da
    import h5py

    check_exists(path)
    with wrap_read_errors(path, "HDF5"):
        names = list_datasets(path)
        if dataset is None:
            if len(names) != 1:
                raise FileFormatError(
                    f"'{path}' holds {len(names)} array datasets {names}; pass dataset= to choose one"
                )
            dataset = names[0]
        f = h5py.File(path, "r")
        try:
            if dataset not in f or not isinstance(f[dataset], h5py.Dataset):
                raise FileFormatError(f"'{path}': no dataset '{dataset}'; it holds {names}")
            dset = f[dataset]
            attrs = dict(dset.attrs)
            axes = _text(attrs["axes"]) if "axes" in attrs else default_axes(dset.ndim)
            if axes not in CANONICAL_AXES or len(axes) != dset.ndim:
                raise FileFormatError(f"'{path}': dataset '{dataset}' has axes '{axes}' for shape {dset.shape}")
            spacing: Any = None
            unit = _text(attrs["unit"]) if "unit" in attrs else None
            if "spacing" in attrs:
                spacing = [float(s) for s in np.atleast_1d(attrs["spacing"])]
            elif "element_size_um" in attrs:
                spacing, unit = [float(s) for s in np.atleast_1d(attrs["element_size_um"])], "micrometer"
            chunks = dset.chunks if dset.chunks is not None else "auto"
            data: Any = da.from_array(dset, chunks=chunks)
            data = apply_laziness(data, lazy, True)
        except BaseException:
            f.close()
            raise
        if not isinstance(data, da.Array):
            f.close()
        meta = make_meta(path, "hdf5", data.shape, data.dtype, axes, spacing, unit, dataset=dataset)
    return Image(data, meta)


def write_hdf5(
    path: Path,
    data: Any,
    meta: ImageMetadata,
    *,
    overwrite: bool = False,
    dataset: str | None = None,
    chunks: tuple[int, ...] | None = None,
    compression: str | None = "default",
    progress: ProgressCallback | bool | None = None,
) -> Path:
    """Write one dataset (a new file; ``overwrite`` replaces the whole file).

    ``meta``, ``chunks`` and ``compression`` come validated from ``write_image``.
    """
    import dask.array as da
    import h5py

    if compression == "default":
        compression = "gzip"
    chunks = tuple(min(c, s) for c, s in zip(chunks or default_chunks(meta.axes, meta.shape), meta.shape, strict=True))
    name = dataset or DEFAULT_DATASET
    with atomic_output(path, overwrite) as tmp, make_progress(progress, 1, f"writing {path.name}") as advance:
        with h5py.File(tmp, "w") as f:
            kwargs: dict[str, Any] = {"compression": compression}
            if compression == "gzip":
                kwargs["compression_opts"] = 4
            dset = f.create_dataset(name, shape=meta.shape, dtype=np.dtype(meta.dtype), chunks=chunks, **kwargs)
            if isinstance(data, da.Array):
                da.store(data.rechunk(chunks), dset, lock=True)
            else:
                dset[...] = np.asarray(data)
            dset.attrs["axes"] = meta.axes
            dset.attrs["spacing"] = np.asarray(meta.spacing, dtype=np.float64)
            if meta.unit is not None:
                dset.attrs["unit"] = meta.unit
            if meta.unit == "micrometer":
                dset.attrs["element_size_um"] = np.asarray(meta.spacing, dtype=np.float64)
        advance(1)
    return path
