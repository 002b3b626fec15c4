"""Typed contracts of the I/O layer: image metadata and an image (array + metadata).

Axes are written as a string of letters from ``C`` (channel), ``T`` (time), ``Z``, ``Y``, ``X`` in array order.
Canonical orders are ``YX``, ``ZYX``, ``CYX``, ``CZYX`` (``T`` before ``C`` when present). Readers convert every format
to a canonical order; a trailing singleton channel (e.g. ``(96, 96, 96, 1)`` light-sheet patches) is squeezed away and
recorded in ``notes``. ``spacing`` has one entry per *spatial* axis (Z, Y, X), in the same order as in ``axes``.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from fmscope.errors import InvalidInputError

SPATIAL_AXES = "ZYX"
CANONICAL_AXES = ("YX", "ZYX", "CYX", "CZYX", "TYX", "TZYX", "TCYX", "TCZYX")


def spatial_axes(axes: str) -> str:
    """The spatial letters of ``axes`` in order, e.g. ``'CZYX' -> 'ZYX'``."""
    return "".join(a for a in axes if a in SPATIAL_AXES)


def default_axes(ndim: int) -> str:
    """Axes assumed for a bare array of ``ndim`` dimensions: 2 -> YX, 3 -> ZYX, 4 -> CZYX."""
    try:
        return {2: "YX", 3: "ZYX", 4: "CZYX", 5: "TCZYX"}[ndim]
    except KeyError:
        raise InvalidInputError(f"array: expected 2 to 5 dimensions, got {ndim}") from None


@dataclass(frozen=True)
class ImageMetadata:
    """What is known about an image besides its voxels.

    Attributes:
        axes: axis letters in array order (see module doc).
        shape: array shape, same length as ``axes``.
        dtype: numpy dtype name (``'uint16'``...).
        spacing: physical voxel size per spatial axis, in ``axes`` order; 1.0 where unknown.
        unit: physical unit of ``spacing`` (``'micrometer'``, ``'nanometer'``...), ``None`` when unknown.
        source: where the image came from (a path, or ``'memory'``/a generator name).
        format: file format name (``'tiff'``, ``'ome-tiff'``, ``'ome-zarr'``, ``'nifti'``, ``'hdf5'``, ``'mrc'``,
            ``'slices'``, ``'png'``) or ``'array'``.
        dataset: dataset path inside a container (HDF5), or the multiscale level read (Zarr), else ``None``.
        notes: human-readable remarks made while reading (e.g. a squeezed channel).
    """

    axes: str
    shape: tuple[int, ...]
    dtype: str
    spacing: tuple[float, ...] = ()
    unit: str | None = None
    source: str = "memory"
    format: str = "array"
    dataset: str | None = None
    notes: tuple[str, ...] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        if len(self.axes) != len(self.shape):
            raise InvalidInputError(f"axes '{self.axes}' do not match shape {self.shape}")
        bad = set(self.axes) - set("TCZYX")
        if bad or len(set(self.axes)) != len(self.axes):
            raise InvalidInputError(f"axes: expected distinct letters from 'TCZYX', got '{self.axes}'")
        n_spatial = len(spatial_axes(self.axes))
        if not self.spacing:
            object.__setattr__(self, "spacing", (1.0,) * n_spatial)
        object.__setattr__(self, "spacing", tuple(float(s) for s in self.spacing))
        object.__setattr__(self, "shape", tuple(int(s) for s in self.shape))
        object.__setattr__(self, "notes", tuple(self.notes))
        if len(self.spacing) != n_spatial:
            raise InvalidInputError(
                f"spacing: expected {n_spatial} values (one per spatial axis of '{self.axes}'), got {self.spacing}"
            )
        if any(not np.isfinite(s) or s <= 0 for s in self.spacing):
            raise InvalidInputError(f"spacing: expected positive finite values, got {self.spacing}")

    @classmethod
    def for_array(cls, array: Any, axes: str | None = None, **kwargs: Any) -> ImageMetadata:
        """Metadata for an in-memory array, with default axes for its dimensionality."""
        return cls(axes=axes or default_axes(array.ndim), shape=tuple(array.shape), dtype=str(array.dtype), **kwargs)

    @property
    def spatial_axes(self) -> str:
        return spatial_axes(self.axes)

    @property
    def spatial_shape(self) -> tuple[int, ...]:
        return tuple(s for s, a in zip(self.shape, self.axes, strict=True) if a in SPATIAL_AXES)

    @property
    def n_channels(self) -> int:
        return self.shape[self.axes.index("C")] if "C" in self.axes else 1

    def replace(self, **changes: Any) -> ImageMetadata:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["shape"] = list(self.shape)
        d["spacing"] = list(self.spacing)
        d["notes"] = list(self.notes)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ImageMetadata:
        return cls(**{**d, "shape": tuple(d["shape"]), "spacing": tuple(d["spacing"]), "notes": tuple(d["notes"])})

    def to_json(self) -> str:
        return json.dumps(self.to_dict())


@dataclass(frozen=True)
class Image:
    """An image: its voxels (numpy, or dask when read lazily) and its metadata."""

    data: Any
    meta: ImageMetadata

    def __post_init__(self) -> None:
        if tuple(self.data.shape) != self.meta.shape:
            raise InvalidInputError(f"image data shape {tuple(self.data.shape)} != metadata shape {self.meta.shape}")

    @property
    def shape(self) -> tuple[int, ...]:
        return self.meta.shape

    @property
    def ndim(self) -> int:
        return len(self.meta.shape)

    @property
    def dtype(self) -> np.dtype[Any]:
        return np.dtype(self.meta.dtype)

    @property
    def is_lazy(self) -> bool:
        return not isinstance(self.data, np.ndarray)

    def numpy(self) -> np.ndarray:
        """The voxels as a numpy array (computes a lazy array; loads it whole into memory)."""
        if isinstance(self.data, np.ndarray):
            return self.data
        compute = getattr(self.data, "compute", None)
        return np.asarray(compute() if compute is not None else self.data)

    def channel(self, index: int) -> Image:
        """The image of one channel (drops the ``C`` axis); an image without a ``C`` axis accepts only index 0."""
        if "C" not in self.meta.axes:
            if index != 0:
                raise InvalidInputError(f"channel: image has no channel axis (axes '{self.meta.axes}'), got {index}")
            return self
        c = self.meta.axes.index("C")
        n = self.meta.shape[c]
        if not 0 <= index < n:
            raise InvalidInputError(f"channel: expected an index in 0..{n - 1}, got {index}")
        data = self.data[(slice(None),) * c + (index,)]
        axes = self.meta.axes.replace("C", "")
        meta = self.meta.replace(axes=axes, shape=tuple(data.shape), notes=(*self.meta.notes, f"channel {index}"))
        return Image(data, meta)
