"""Images for the page: listing a folder, opening an image lazily, and slices as raw bytes for display.

Slices go to the browser as raw little-endian pixels in the image's own dtype (uint8 / uint16 / float32 ...); the
page windows them itself, so 16-bit and float data stay raw. A slice (or the visible region of one) is sent at a
resolution of at most :data:`MAX_SIDE` pixels per side: a strided read of the image, or a coarser level of an
OME-Zarr pyramid when that is enough. The display window comes from a histogram of a few slices, so opening a stack
of any size reads a handful of slices, never the volume.
"""

from __future__ import annotations

import logging
import math
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from fmscope.app.paths import PathRefused, is_under, relative_to
from fmscope.errors import InvalidInputError
from fmscope.io import SUPPORTED_FORMATS, Image, detect_format, read_spatial

logger = logging.getLogger(__name__)

MAX_SIDE = 2048  # the largest side of a slice or region sent for display
HISTOGRAM_SLICES = 5  # slices sampled (evenly) for the histogram and the display window
HISTOGRAM_BINS = 256
IMAGE_SUFFIXES = tuple(e for exts in SUPPORTED_FORMATS.values() for e in exts)
SLICE_SUFFIXES = (".tif", ".tiff", ".png")
DISPLAY_DTYPES = ("uint8", "uint16", "int16", "uint32", "float32")


def is_image_name(name: str) -> bool:
    return name.lower().endswith(IMAGE_SUFFIXES)


def _looks_like_slices(folder: Path) -> bool:
    """A folder of at least two 2D image files and no sub-folders (a stack saved as slices)."""
    try:
        entries = list(folder.iterdir())
    except OSError:
        return False
    files = [e for e in entries if e.is_file() and e.name.lower().endswith(SLICE_SUFFIXES)]
    return len(files) >= 2 and not any(e.is_dir() for e in entries)


def list_folder(root: Path, folder: Path) -> list[dict[str, Any]]:
    """The entries of ``folder`` (inside ``root``): sub-folders, images (files, OME-Zarr folders, slice folders)
    and other files, folders first; links that lead outside ``root`` are left out."""
    out: list[dict[str, Any]] = []
    base = root.resolve()
    for entry in sorted(folder.iterdir(), key=lambda e: (not e.is_dir(), e.name.lower())):
        if entry.name.startswith(".") or not entry.exists():  # hidden, or a broken link
            continue
        if not is_under(base, Path(entry).resolve()):
            continue
        rel = relative_to(root, entry)
        if entry.is_dir():
            if detect_format(entry) == "ome-zarr":
                out.append({"name": entry.name, "path": rel, "kind": "image", "format": "ome-zarr"})
            else:
                slices = _looks_like_slices(entry)
                out.append({"name": entry.name, "path": rel, "kind": "folder", "slices": slices})
        elif is_image_name(entry.name):
            fmt = detect_format(entry)
            out.append({"name": entry.name, "path": rel, "kind": "image", "format": fmt, "size": entry.stat().st_size})
        else:
            out.append({"name": entry.name, "path": rel, "kind": "file", "size": entry.stat().st_size})
    return out


def sampling(
    shape: tuple[int, int], region: tuple[int, int, int, int] | None, max_side: int = MAX_SIDE
) -> tuple[tuple[int, int, int, int], int]:
    """A checked region ``(y0, x0, y1, x1)`` of a slice of ``shape`` (default: all of it) and the step that keeps
    it at most ``max_side`` pixels per side (slices and label planes are sampled alike)."""
    ny, nx = shape
    y0, x0, y1, x1 = region if region is not None else (0, 0, ny, nx)
    if not (0 <= y0 < y1 <= ny and 0 <= x0 < x1 <= nx):
        raise InvalidInputError(f"region: expected 0 <= y0 < y1 <= {ny} and 0 <= x0 < x1 <= {nx}, got {region}")
    if isinstance(max_side, bool) or not isinstance(max_side, int) or not 16 <= max_side <= MAX_SIDE:
        raise InvalidInputError(f"max_side: expected 16..{MAX_SIDE}, got {max_side}")
    return (y0, x0, y1, x1), max(1, math.ceil(max(y1 - y0, x1 - x0) / max_side))


@dataclass
class ImageHandle:
    """One opened image: its spatial ``(Z, Y, X)`` voxels (lazy where the format allows), metadata, and, for
    OME-Zarr, its pyramid levels (for downsampled views)."""

    path: Path
    source: str  # how the page named it ("data:..." or "upload:...")
    image: Image
    channel: int | None
    dataset: str | None
    levels: list[Any] = field(default_factory=list)
    direct: Any = None  # the zarr array itself (an OME-Zarr in the canonical axis order): slices without dask
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _histogram: dict[str, Any] | None = None

    @property
    def shape(self) -> tuple[int, int, int]:
        shape = self.image.shape
        return (1, int(shape[0]), int(shape[1])) if len(shape) == 2 else (int(shape[0]), int(shape[1]), int(shape[2]))

    @property
    def dtype(self) -> np.dtype[Any]:
        return self.image.dtype

    def volume(self) -> Any:
        """The voxels as a ``(Y, X)`` or ``(Z, Y, X)`` array-like (what a session segments)."""
        return self.image.data

    def info(self) -> dict[str, Any]:
        meta = self.image.meta
        return {
            "source": self.source,
            "name": self.path.name,
            "shape": list(meta.shape),
            "axes": meta.axes,
            "dtype": meta.dtype,
            "spacing": list(meta.spacing),
            "unit": meta.unit,
            "format": meta.format,
            "lazy": self.image.is_lazy,
            "channel": self.channel,
            "levels": 1 + len(self.levels),
            "notes": list(meta.notes),
            "histogram": self.histogram(),
        }

    def _plane(self, z: int, level: int = 0) -> Any:
        data = (self.direct or self.image.data) if level == 0 else self.levels[level - 1]
        return data if data.ndim == 2 else data[z]

    def read(
        self, z: int, region: tuple[int, int, int, int] | None = None, max_side: int = MAX_SIDE
    ) -> tuple[np.ndarray, dict[str, Any]]:
        """Slice ``z`` (or its ``region`` ``(y0, x0, y1, x1)``) at most ``max_side`` pixels per side, and how it
        was sampled: ``step`` (full-resolution pixels per sent pixel) and the region covered."""
        nz, ny, nx = self.shape
        if isinstance(z, bool) or not isinstance(z, int) or not 0 <= z < nz:
            raise InvalidInputError(f"z: expected a slice index in 0..{nz - 1}, got {z!r}")
        (y0, x0, y1, x1), step = sampling((ny, nx), region, max_side)
        level, factor = 0, 1
        for k, arr in enumerate(self.levels, start=1):  # the coarsest pyramid level that is still fine enough
            f = round(nx / arr.shape[-1])
            same_slices = arr.ndim == 2 or arr.shape[0] == nz  # a level averaged along Z would show other slices
            if same_slices and f <= step and step % f == 0:
                level, factor = k, f
        plane = self._plane(z, level)
        s = step // factor
        out = np.asarray(plane[y0 // factor : y1 // factor : s, x0 // factor : x1 // factor : s])
        return np.ascontiguousarray(out), {"step": step, "region": [y0, x0, y1, x1], "level": level}

    def histogram(self) -> dict[str, Any]:
        """Counts of a few evenly spaced slices (downsampled to 512 px) and the 1st/99.8th percentile window."""
        with self._lock:
            if self._histogram is None:
                nz = self.shape[0]
                zs = sorted({round(v) for v in np.linspace(0, nz - 1, min(nz, HISTOGRAM_SLICES))})
                values = np.concatenate([self.read(z, max_side=512)[0].ravel() for z in zs]).astype(np.float64)
                finite = values[np.isfinite(values)]
                if finite.size == 0:
                    finite = np.zeros(1)
                lo, hi = float(finite.min()), float(finite.max())
                counts, edges = np.histogram(finite, bins=HISTOGRAM_BINS, range=(lo, hi if hi > lo else lo + 1))
                p1, p99 = (float(v) for v in np.percentile(finite, [1.0, 99.8]))
                self._histogram = {
                    "counts": counts.tolist(), "edges": edges.tolist(), "min": lo, "max": hi,
                    "window": [p1, p99 if p99 > p1 else p1 + 1], "slices": zs,
                }  # fmt: skip
            return self._histogram


def check_self_contained(path: Path, root: Path) -> None:
    """Refuse a file that would make the reader open files outside ``root``: an HDF5 file with external links,
    external raw storage or virtual datasets, an OME-TIFF whose series names other files outside the root."""
    fmt = detect_format(path)
    outside: list[str] = []
    if fmt == "hdf5":
        from fmscope.io.hdf5 import external_references

        outside = external_references(path)
    elif fmt == "ome-tiff":
        from fmscope.io.tiff import referenced_files

        base = root.resolve()
        outside = [f"'{t.name}'" for t in referenced_files(path) if not is_under(base, t)]
    if outside:
        raise PathRefused(f"{path.name}: reads other files ({'; '.join(outside[:3])}); the app opens only files that "
                          "stay inside the data folder")  # fmt: skip


def open_image(
    path: Path, source: str, *, dataset: str | None = None, channel: int | None = None, root: Path | None = None
) -> ImageHandle:
    """Open an image file or folder for the page: lazily where the format allows, reduced to one channel, 2D or
    3D; refused with the reader's message otherwise (a 4D array needs a channel, a time series is refused); with
    ``root``, a file that reads other files outside it is refused (:func:`check_self_contained`)."""
    if root is not None:
        check_self_contained(path, root)
    image = read_spatial(path, dataset=dataset, channel=channel)
    handle = ImageHandle(path, source, image, channel, dataset, direct=_zarr_array(path, image))
    if image.meta.format == "ome-zarr":
        from fmscope.io.omezarr import count_levels

        for level in range(1, count_levels(path, dataset)):
            extra = read_spatial(path, dataset=dataset, channel=channel, level=level)
            handle.levels.append(_zarr_array(path, extra) or extra.data)
    return handle


def _zarr_array(path: Path, image: Image) -> Any:
    """The OME-Zarr array an image was read from, when it holds exactly these voxels in this order (then a slice is
    read straight from zarr, a few times faster than through dask); None otherwise."""
    if image.meta.format != "ome-zarr" or image.meta.dataset is None:
        return None
    import zarr

    try:
        arr = zarr.open(str(path), mode="r", path=image.meta.dataset)
    except Exception:  # zarr raises several types; the dask array is then used
        return None
    same = isinstance(arr, zarr.Array) and tuple(arr.shape) == tuple(image.shape) and arr.dtype == image.dtype
    return arr if same else None


def display_bytes(array: np.ndarray) -> tuple[bytes, str]:
    """Little-endian bytes of a slice and their dtype name, in a type the page can window (bool -> uint8,
    int32/64 -> float32, float64 -> float32)."""
    arr = np.asarray(array)
    if arr.dtype == np.bool_:
        arr = arr.astype(np.uint8)
    elif arr.dtype.name not in DISPLAY_DTYPES:
        arr = arr.astype(np.float32)
    arr = arr.astype(arr.dtype.newbyteorder("<"), copy=False)
    return np.ascontiguousarray(arr).tobytes(), arr.dtype.name


def label_bytes(plane: np.ndarray) -> tuple[bytes, str]:
    """A label plane in the smallest unsigned type holding its largest id."""
    top = int(plane.max()) if plane.size else 0
    dtype = np.uint8 if top < 2**8 else np.uint16 if top < 2**16 else np.uint32
    return np.ascontiguousarray(plane.astype(np.dtype(dtype).newbyteorder("<"))).tobytes(), np.dtype(dtype).name
