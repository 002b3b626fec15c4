"""Label values: how the raw values of a mask become class indices (:class:`LabelMapping`, :func:`check_label`)."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from fmscope.errors import InvalidInputError

logger = logging.getLogger(__name__)


def is_int(x: object) -> bool:
    return isinstance(x, int | np.integer) and not isinstance(x, bool)


@dataclass(frozen=True)
class LabelMapping:
    """How raw label values become class indices 0..n-1.

    Attributes:
        values: raw value -> class index; values not listed raise an error unless ``other`` is set.
        other: class index of every raw value not in ``values`` (e.g. 0 to select one class as foreground).
    """

    values: dict[int, int]
    other: int | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.values, Mapping) or not self.values:
            raise InvalidInputError(f"values: expected a non-empty dict raw value -> class index, got {self.values!r}")
        if not all(is_int(x) for kv in self.values.items() for x in kv):
            raise InvalidInputError(f"values: expected integer raw values and class indices, got {self.values!r}")
        if any(v < 0 for v in self.values.values()):
            raise InvalidInputError(f"values: expected class indices >= 0, got {self.values!r}")
        if self.other is not None and not (is_int(self.other) and self.other >= 0):
            raise InvalidInputError(f"other: expected None or a class index >= 0, got {self.other!r}")
        object.__setattr__(self, "values", {int(k): int(v) for k, v in self.values.items()})

    @property
    def n_classes(self) -> int:
        """Number of class indices this mapping produces (highest index + 1)."""
        return max(*self.values.values(), self.other or 0) + 1

    @classmethod
    def foreground(cls, *raw_values: int) -> LabelMapping:
        """Binary mapping: ``raw_values`` -> 1, everything else -> 0 (e.g. mitochondria out of a multi-class stack)."""
        return cls({v: 1 for v in raw_values}, other=0)


def _fmt(values: Sequence[int], limit: int = 20) -> str:
    shown = ", ".join(str(v) for v in values[:limit])
    return "{" + shown + (", ..." if len(values) > limit else "") + "}"


def _integral(label: np.ndarray, path: str) -> np.ndarray:
    """The label as an integer array (the input itself when already integer)."""
    if label.dtype == np.bool_:
        return label.view(np.uint8)
    if label.dtype.kind in "ui":
        return label
    if label.dtype.kind != "f":
        raise InvalidInputError(f"label '{path}': expected integer, bool or integral float values, got {label.dtype}")
    if not np.all(np.isfinite(label)):
        raise InvalidInputError(f"label '{path}': expected finite class values, got NaN or inf")
    off = label[label != np.round(label)]
    if off.size:
        raise InvalidInputError(
            f"label '{path}': expected integral class values, got non-integral floats (e.g. {float(off.flat[0])}); "
            "threshold a probability map before using it as a label"
        )
    return label.astype(np.int64)


def _unique(raw: np.ndarray) -> np.ndarray:
    if raw.dtype.kind == "u" and raw.dtype.itemsize <= 2:
        return np.flatnonzero(np.bincount(raw.ravel()))
    return np.unique(raw)


def _apply(raw: np.ndarray, present: np.ndarray, table: Mapping[int, int], top: int) -> np.ndarray:
    dtype = np.uint8 if top <= 255 else np.int64
    targets = np.asarray([table[int(v)] for v in present], dtype=dtype)
    if raw.dtype.kind == "u" and raw.dtype.itemsize <= 2:
        lut = np.zeros(int(present[-1]) + 1, dtype=dtype)
        lut[present] = targets
        return lut[raw]
    return targets[np.searchsorted(present, raw)]


def check_label(
    label: np.ndarray, image_shape: tuple[int, ...], *, path: str, mapping: LabelMapping | None = None
) -> np.ndarray:
    """Validate a mask against its image and return class indices (uint8, int64 past index 255); input untouched.

    Without ``mapping``: {0, 1} and bool masks are kept; a binary mask {0, k} with k > 1 (e.g. {0, 255}) becomes
    {0, 1} with a warning; more values are class indices only when they are exactly 0..K-1. With ``mapping``, raw
    values are remapped through it. Integral floats are accepted.

    Raises:
        InvalidInputError: shape mismatch (naming ``path`` and both shapes), non-integral or non-finite floats,
            values outside ``mapping`` (listing them and the allowed ones), values that are no class indices.
    """
    arr = np.asarray(label)
    shape = tuple(int(s) for s in image_shape)
    if arr.shape != shape:
        raise InvalidInputError(f"label '{path}': shape {arr.shape} does not match the image shape {shape}")
    if arr.size == 0:
        raise InvalidInputError(f"label '{path}': expected a non-empty mask, got shape {arr.shape}")
    raw = _integral(arr, path)
    present = _unique(raw)
    vals = [int(v) for v in present]
    if mapping is not None:
        unexpected = [v for v in vals if v not in mapping.values] if mapping.other is None else []
        if unexpected:
            allowed = _fmt(sorted(mapping.values))
            raise InvalidInputError(
                f"label '{path}': unexpected values {_fmt(unexpected)}; the mapping allows {allowed} "
                "(set other=... to give every other value one class)"
            )
        table = {v: mapping.values.get(v, mapping.other or 0) for v in vals}
        return _apply(raw, present, table, mapping.n_classes - 1)
    if vals == list(range(len(vals))) or vals == [1]:
        return _apply(raw, present, {v: v for v in vals}, vals[-1])
    if len(vals) <= 2 and vals[0] >= 0 and (len(vals) == 1 or vals[0] == 0):
        fmt = "label '%s': values %s read as background/foreground (%d -> 1); give a mapping if they are classes"
        logger.warning(fmt, path, _fmt(vals), vals[-1])
        return _apply(raw, present, {v: int(v > 0) for v in vals}, 1)
    raise InvalidInputError(
        f"label '{path}': values {_fmt(vals)} are neither class indices 0..K-1 nor a binary {{0, k}} mask; "
        "map them to classes with --map-labels, e.g. '255=1' or '2=1,other=0' (Python: LabelMapping({2: 1}, other=0))"
    )
