"""Prompts of interactive segmentation: positive and negative points, a box, strokes and a phrase per object.

Coordinates are image coordinates in (z, y, x) order for stacks and (y, x) for 2D images, in pixels (fractions
allowed). A box is ``(z, y_min, x_min, y_max, x_max)`` (2D: ``(y_min, x_min, y_max, x_max)``): its corners are pixel
edges, so ``(0, 0, H, W)`` covers a whole slice; a box lies on one slice. A stroke is a brush line: its points (a
polyline, all on one slice), its ``width`` in pixels and whether it marks the object (``positive``, the default) or
what is not the object. The prompts file is JSON::

    {"objects": [
        {"id": 1, "positive": [[12, 200, 310]], "negative": [[12, 240, 330]],
         "box": [12, 180, 290, 260, 360], "text": "mitochondrion"},
        {"id": 2, "strokes": [{"points": [[12, 40, 40], [12, 40, 90]], "width": 5, "positive": true}]},
        {"id": 3, "text": "porous ionomer layer"}
    ]}

(a bare list of objects is accepted too). Every object needs a positive point, a positive stroke, a box or a phrase;
ids are distinct positive integers (they become the label values of the output).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from numbers import Integral, Real
from pathlib import Path
from typing import Any

import numpy as np

from fmscope.errors import FileFormatError, InvalidInputError
from fmscope.utils.atomic import atomic_output

_KEYS = ("id", "positive", "negative", "box", "text", "strokes")
_STROKE_KEYS = ("points", "width", "positive")
MAX_STROKE_WIDTH = 256.0


@dataclass(frozen=True)
class Stroke:
    """A brush stroke: a polyline of points ((z, y, x) on one slice, or (y, x)), its width in pixels, and whether it
    marks the object (``positive``) or what is not the object."""

    points: tuple[tuple[float, ...], ...]
    width: float = 3.0
    positive: bool = True

    @property
    def z(self) -> int | None:
        """The slice of a 3D stroke (None for a 2D one)."""
        return round(self.points[0][0]) if self.points and len(self.points[0]) == 3 else None

    def on_slice(self) -> Stroke:
        """The same stroke with (y, x) points."""
        return Stroke(tuple(p[-2:] for p in self.points), self.width, self.positive)

    def to_dict(self) -> dict[str, Any]:
        return {"points": [list(p) for p in self.points], "width": self.width, "positive": self.positive}


@dataclass(frozen=True)
class ObjectPrompt:
    """The prompts of one object (coordinates as in the module doc, already checked against the image)."""

    id: int
    positive: tuple[tuple[float, ...], ...] = ()
    negative: tuple[tuple[float, ...], ...] = ()
    box: tuple[float, ...] | None = None
    text: str | None = None
    strokes: tuple[Stroke, ...] = ()

    def slices(self) -> tuple[int, ...]:
        """Z indices that carry a point, a stroke or the box (stacks only; empty for 2D prompts and text-only
        objects)."""
        zs = {round(p[0]) for p in (*self.positive, *self.negative) if len(p) == 3}
        zs |= {z for z in (s.z for s in self.strokes) if z is not None}
        if self.box is not None and len(self.box) == 5:
            zs.add(round(self.box[0]))
        return tuple(sorted(zs))

    def on_slice(self, z: int) -> ObjectPrompt:
        """The 2D prompts of this object on slice ``z`` (points (y, x), box (y_min, x_min, y_max, x_max), strokes)."""
        box = self.box[1:] if self.box is not None and len(self.box) == 5 and round(self.box[0]) == z else None
        return ObjectPrompt(
            self.id,
            tuple(p[1:] for p in self.positive if len(p) == 3 and round(p[0]) == z),
            tuple(p[1:] for p in self.negative if len(p) == 3 and round(p[0]) == z),
            box,
            self.text,
            tuple(s.on_slice() for s in self.strokes if s.z == z),
        )

    @property
    def has_positive(self) -> bool:
        """A positive point, a positive stroke or a box: something a backend can segment from on a slice."""
        return bool(self.positive) or self.box is not None or any(s.positive for s in self.strokes)

    @property
    def is_empty(self) -> bool:
        """No point, box, stroke or phrase."""
        return not (self.positive or self.negative or self.box is not None or self.strokes or self.text)

    def to_dict(self) -> dict[str, Any]:
        """The JSON form (empty fields left out)."""
        out: dict[str, Any] = {"id": self.id}
        if self.positive:
            out["positive"] = [list(p) for p in self.positive]
        if self.negative:
            out["negative"] = [list(p) for p in self.negative]
        if self.box is not None:
            out["box"] = list(self.box)
        if self.strokes:
            out["strokes"] = [s.to_dict() for s in self.strokes]
        if self.text:
            out["text"] = self.text
        return out


def check_number(value: Any, where: str) -> float:
    """``value`` as a float (numpy scalars too); a bool, a non-number or a non-finite value is refused naming
    ``where``."""
    if isinstance(value, Integral | Real) and not isinstance(value, bool | np.bool_):
        value = float(value)
    if not isinstance(value, float) or not math.isfinite(value):
        raise InvalidInputError(f"{where}: expected a finite number, got {value!r}")
    return float(value)


def _point(value: Any, shape: tuple[int, ...], where: str) -> tuple[float, ...]:
    if not isinstance(value, list | tuple) or len(value) != len(shape):
        axes = "(z, y, x)" if len(shape) == 3 else "(y, x)"
        raise InvalidInputError(f"{where}: expected {axes} coordinates for an image of shape {shape}, got {value!r}")
    point = tuple(check_number(v, where) for v in value)
    if any(not 0 <= c <= n - 1 for c, n in zip(point, shape, strict=True)):
        raise InvalidInputError(f"{where}: point {point} is outside the image of shape {shape}")
    return point


def _stroke(value: Any, shape: tuple[int, ...], where: str) -> Stroke:
    if not isinstance(value, dict):
        raise InvalidInputError(f"{where}: expected a mapping with 'points', 'width', 'positive', got {value!r}")
    unknown = sorted(set(value) - set(_STROKE_KEYS))
    if unknown:
        raise InvalidInputError(f"{where}: unknown key(s) {unknown}; known: {list(_STROKE_KEYS)}")
    points = value.get("points")
    if not isinstance(points, list) or not points:
        raise InvalidInputError(f"{where}.points: expected a non-empty list of points, got {points!r}")
    pts = tuple(_point(p, shape, f"{where}.points[{i}]") for i, p in enumerate(points))
    if len(shape) == 3 and len({round(p[0]) for p in pts}) > 1:
        raise InvalidInputError(f"{where}: a stroke lies on one slice, got z = {sorted({round(p[0]) for p in pts})}")
    width = check_number(value.get("width", 3.0), f"{where}.width")
    if not 0 < width <= MAX_STROKE_WIDTH:
        raise InvalidInputError(f"{where}.width: expected a width in (0, {MAX_STROKE_WIDTH:g}] pixels, got {width:g}")
    positive = value.get("positive", True)
    if not isinstance(positive, bool):
        raise InvalidInputError(f"{where}.positive: expected true or false, got {positive!r}")
    return Stroke(pts, width, positive)


def check_box(value: Any, shape: tuple[int, ...], where: str) -> tuple[float, ...]:
    """A box checked against an image of ``shape`` (see the module doc), refused naming ``where``."""
    n = 5 if len(shape) == 3 else 4
    if not isinstance(value, list | tuple) or len(value) != n:
        form = "(z, y_min, x_min, y_max, x_max)" if n == 5 else "(y_min, x_min, y_max, x_max)"
        raise InvalidInputError(f"{where}: expected {form} for an image of shape {shape}, got {value!r}")
    box = tuple(check_number(v, where) for v in value)
    if n == 5 and not 0 <= box[0] <= shape[0] - 1:
        raise InvalidInputError(f"{where}: slice z={box[0]:g} is outside the stack of {shape[0]} slices")
    y0, x0, y1, x1 = box[-4:]
    h, w = shape[-2:]
    if y1 <= y0 or x1 <= x0:
        raise InvalidInputError(f"{where}: box {box} has zero area (expected y_min < y_max and x_min < x_max)")
    if y0 < 0 or x0 < 0 or y1 > h or x1 > w:
        raise InvalidInputError(f"{where}: box {box} reaches outside the image of shape {shape}")
    return box


def parse_prompts(data: Any, shape: Sequence[int]) -> list[ObjectPrompt]:
    """Checked prompts from the JSON form (a mapping with ``objects`` or a list) for an image of ``shape``."""
    shape = tuple(int(s) for s in shape)
    if len(shape) not in (2, 3):
        raise InvalidInputError(f"shape: expected a 2D or 3D image shape, got {shape}")
    objects = data.get("objects") if isinstance(data, dict) else data
    if not isinstance(objects, list) or not objects:
        raise InvalidInputError("prompts: expected a non-empty list of objects (or {'objects': [...]})")
    out: list[ObjectPrompt] = []
    for k, obj in enumerate(objects):
        where = f"objects[{k}]"
        if not isinstance(obj, dict):
            raise InvalidInputError(f"{where}: expected a mapping, got {obj!r}")
        unknown = sorted(set(obj) - set(_KEYS))
        if unknown:
            raise InvalidInputError(f"{where}: unknown key(s) {unknown}; known: {list(_KEYS)}")
        oid = obj.get("id", k + 1)
        if isinstance(oid, bool) or not isinstance(oid, int) or oid < 1:
            raise InvalidInputError(f"{where}.id: expected a positive integer, got {oid!r}")
        points = {}
        for key in ("positive", "negative"):
            values = obj.get(key, [])
            if not isinstance(values, list):
                raise InvalidInputError(f"{where}.{key}: expected a list of points, got {values!r}")
            points[key] = tuple(_point(p, shape, f"{where}.{key}[{i}]") for i, p in enumerate(values))
        box = None if obj.get("box") is None else check_box(obj["box"], shape, f"{where}.box")
        text = obj.get("text")
        if text is not None and (not isinstance(text, str) or not text.strip()):
            raise InvalidInputError(f"{where}.text: expected a non-empty phrase, got {text!r}")
        strokes = obj.get("strokes", [])
        if not isinstance(strokes, list):
            raise InvalidInputError(f"{where}.strokes: expected a list of strokes, got {strokes!r}")
        lines = tuple(_stroke(v, shape, f"{where}.strokes[{i}]") for i, v in enumerate(strokes))
        prompt = ObjectPrompt(oid, points["positive"], points["negative"], box, text.strip() if text else None, lines)
        if not prompt.has_positive and text is None:
            raise InvalidInputError(
                f"{where}: object {oid} needs a positive point, a positive stroke, a box or a text phrase"
            )
        out.append(prompt)
    ids = [o.id for o in out]
    if len(set(ids)) != len(ids):
        raise InvalidInputError(f"prompts: object ids must be distinct, got {ids}")
    return out


def load_prompts(path: str | os.PathLike[str], shape: Sequence[int]) -> list[ObjectPrompt]:
    """Read and check a prompts JSON file for an image of ``shape``."""
    p = Path(path)
    if not p.is_file():
        raise FileFormatError(f"prompts: '{p}' does not exist")
    try:
        data = json.loads(p.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise FileFormatError(f"prompts: '{p}' is not valid JSON: {exc}") from None
    return parse_prompts(data, shape)


def save_prompts(path: str | os.PathLike[str], prompts: Sequence[ObjectPrompt], overwrite: bool = True) -> Path:
    """Write prompts as JSON (atomically), readable by :func:`load_prompts`."""
    with atomic_output(path, overwrite=overwrite) as tmp:
        tmp.write_text(json.dumps({"objects": [o.to_dict() for o in prompts]}, indent=1) + "\n")
    return Path(path)
