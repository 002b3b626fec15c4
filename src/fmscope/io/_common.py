"""Helpers shared by the format modules: input validation, units, metadata markers, laziness, error wrapping."""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from fmscope.errors import FileFormatError, InvalidInputError
from fmscope.io.types import CANONICAL_AXES, ImageMetadata, spatial_axes

logger = logging.getLogger(__name__)

#: dtypes the I/O layer handles (the support matrix in ``fmscope.io.registry`` says which format holds which).
ALL_DTYPES: tuple[str, ...] = ("uint8", "uint16", "int16", "uint32", "float32", "float64", "bool")

#: canonical unit names (OME-NGFF / UDUNITS spelling) and the aliases mapped to them.
_UNIT_ALIASES: dict[str, str] = {
    "angstrom": "angstrom",
    "å": "angstrom",
    "a": "angstrom",
    "nanometer": "nanometer",
    "nm": "nanometer",
    "micrometer": "micrometer",
    "micron": "micrometer",
    "microns": "micrometer",
    "um": "micrometer",
    "µm": "micrometer",  # micro sign
    "μm": "micrometer",  # Greek mu
    "\\u00b5m": "micrometer",
    "millimeter": "millimeter",
    "mm": "millimeter",
    "centimeter": "centimeter",
    "cm": "centimeter",
    "meter": "meter",
    "m": "meter",
    "picometer": "picometer",
    "pm": "picometer",
}
#: units meaning "no physical unit" in the wild (ImageJ writes 'pixel').
_NO_UNIT = {"", "pixel", "pixels", "px", "unknown", "none"}
#: factor from a canonical unit to angstrom (MRC stores voxel sizes in angstrom).
ANGSTROM_PER_UNIT: dict[str, float] = {
    "picometer": 1e-2,
    "angstrom": 1.0,
    "nanometer": 10.0,
    "micrometer": 1e4,
    "millimeter": 1e7,
    "centimeter": 1e8,
    "meter": 1e10,
}


def normalize_unit(unit: str | None) -> str | None:
    """Canonical spelling of a length unit (``'um'`` -> ``'micrometer'``); unknown names are returned unchanged."""
    if unit is None:
        return None
    key = str(unit).strip()
    if key.lower() in _NO_UNIT:
        return None
    return _UNIT_ALIASES.get(key.lower(), _UNIT_ALIASES.get(key, key))


def float32_exact(value: float) -> float:
    """The shortest decimal that a float32 header value stands for (``0.99400002 -> 0.994``)."""
    return float(str(np.float32(value)))


def check_exists(path: Path) -> None:
    """Readers: a missing path is a FileFormatError naming the file."""
    if not path.exists():
        raise FileFormatError(f"'{path}' does not exist")


@contextlib.contextmanager
def wrap_read_errors(path: Path, what: str) -> Iterator[None]:
    """Turn third-party read exceptions into one-line FileFormatErrors that name the file."""
    try:
        yield
    except (FileFormatError, InvalidInputError):
        raise
    except Exception as exc:  # every library has its own exception zoo
        msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise FileFormatError(f"'{path}': cannot read as {what} (truncated or corrupt?): {msg}") from exc


def check_dtype(dtype: Any, fmt: str, allowed: Sequence[str]) -> np.dtype[Any]:
    """Refuse a dtype the format cannot hold (never convert silently)."""
    dt = np.dtype(dtype)
    if dt.name not in allowed:
        raise InvalidInputError(
            f"data: format '{fmt}' cannot hold dtype {dt.name}; it holds {', '.join(allowed)} "
            "(convert the array explicitly, or choose another format)"
        )
    return dt


def check_axes(axes: str, fmt: str, allowed: Sequence[str]) -> None:
    if axes not in allowed:
        raise InvalidInputError(f"meta.axes: format '{fmt}' can store axes {', '.join(allowed)}; got '{axes}'")


def resolve_meta(data: Any, meta: ImageMetadata | None) -> ImageMetadata:
    """Validate the array handed to a writer and return metadata that matches it."""
    shape = getattr(data, "shape", None)
    if shape is None or not hasattr(data, "dtype"):
        raise InvalidInputError(f"data: expected a numpy or dask array, got {type(data).__name__}")
    shape = tuple(int(s) for s in shape)
    if len(shape) == 0 or int(np.prod(shape)) == 0:
        raise InvalidInputError(f"data: expected a non-empty array, got shape {shape}")
    dt = np.dtype(data.dtype)
    if dt.name not in ALL_DTYPES:
        raise InvalidInputError(f"data: expected dtype one of {', '.join(ALL_DTYPES)}, got {dt.name}")
    if meta is None:
        return ImageMetadata.for_array(data)
    if tuple(meta.shape) != shape:
        raise InvalidInputError(f"meta.shape: expected the data shape {shape}, got {meta.shape}")
    if meta.axes not in CANONICAL_AXES:
        raise InvalidInputError(f"meta.axes: expected one of {', '.join(CANONICAL_AXES)}, got '{meta.axes}'")
    if np.dtype(meta.dtype) != dt:
        meta = meta.replace(dtype=dt.name)
    return meta.replace(unit=normalize_unit(meta.unit))


def make_meta(
    path: Path,
    fmt: str,
    shape: Sequence[int],
    dtype: Any,
    axes: str,
    spacing: Sequence[float] | None = None,
    unit: str | None = None,
    dataset: str | None = None,
    notes: Sequence[str] = (),
) -> ImageMetadata:
    """Metadata of an image read from ``path``; spacing defaults to 1 per spatial axis."""
    n_spatial = len(spatial_axes(axes))
    sp = tuple(float(s) for s in spacing) if spacing is not None else (1.0,) * n_spatial
    if len(sp) != n_spatial or any(not np.isfinite(s) or s <= 0 for s in sp):
        logger.warning("'%s': ignoring invalid spacing %s for axes '%s'", path, sp, axes)
        sp = (1.0,) * n_spatial
    return ImageMetadata(
        axes=axes,
        shape=tuple(int(s) for s in shape),
        dtype=np.dtype(dtype).name,
        spacing=sp,
        unit=normalize_unit(unit),
        source=str(path),
        format=fmt,
        dataset=dataset,
        notes=tuple(notes),
    )


def apply_laziness(data: Any, lazy: bool | None, default_lazy: bool) -> Any:
    """Return numpy or dask as requested (``None`` = the format's default)."""
    import dask.array as da

    want_lazy = default_lazy if lazy is None else lazy
    is_dask = isinstance(data, da.Array)
    if want_lazy and not is_dask:
        return da.from_array(np.asarray(data), chunks="auto")
    if not want_lazy and is_dask:
        return np.asarray(data.compute())
    if not want_lazy:
        return np.asarray(data)
    return data


def iter_blocks(data: Any, axis_len: int | None = None) -> Iterator[tuple[int, np.ndarray]]:
    """Yield ``(start, block)`` along axis 0 as numpy, one dask chunk (or one slice of numpy) at a time."""
    import dask.array as da

    if isinstance(data, da.Array):
        start = 0
        for size in data.chunks[0]:
            yield start, np.asarray(data[start : start + size].compute())
            start += size
    else:
        n = data.shape[0] if axis_len is None else axis_len
        for i in range(n):
            yield i, np.asarray(data[i : i + 1])


def parse_marker(text: str) -> dict[str, str]:
    """Parse ``'fmscope axes=CYX dtype=bool'`` markers (kept in header text fields of NIfTI and MRC)."""
    text = text.strip()
    if not text.startswith("fmscope"):
        return {}
    out: dict[str, str] = {}
    for item in text.split()[1:]:
        key, sep, value = item.partition("=")
        if sep:
            out[key] = value
    return out


def format_marker(fields: dict[str, str]) -> str:
    return " ".join(["fmscope", *(f"{k}={v}" for k, v in fields.items())])


def as_path(path: str | os.PathLike[str]) -> Path:
    return Path(os.fspath(path)).expanduser()
