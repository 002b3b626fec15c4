"""The page's edits as calls of the :class:`~fmscope.interactive.session.Session` (no algorithm here).

Each edit is ``{"op": NAME, ...arguments}``; :data:`EDITS` says which arguments each takes (anything else is
refused, naming the key), and :func:`apply_edit` calls the session's method of that name. The session validates the
values (coordinates inside the image, boxes of positive area, known object ids) with messages that name them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fmscope.errors import InvalidInputError
from fmscope.interactive.session import Session


def _points(value: Any) -> list[tuple[float, float]]:
    if not isinstance(value, list) or not value or not all(isinstance(p, list | tuple) and len(p) == 2 for p in value):
        raise InvalidInputError(f"points: expected a non-empty list of (y, x) pairs, got {value!r}")
    return [(p[0], p[1]) for p in value]


# op -> (required arguments, optional arguments with defaults, call)
EDITS: dict[str, tuple[tuple[str, ...], dict[str, Any], Callable[..., Any]]] = {
    "new_object": ((), {"id": None, "parent": None}, lambda s, id, parent: s.new_object(id, parent=parent)),
    "delete_object": (("id",), {}, lambda s, id: s.delete_object(id)),
    "add_point": (("id", "z", "y", "x"), {"positive": True},
                  lambda s, id, z, y, x, positive: s.add_point(id, z, y, x, positive=bool(positive))),
    "remove_point": (("id", "z", "y", "x"), {}, lambda s, id, z, y, x: s.remove_point(id, z, y, x)),
    "set_box": (("id", "z", "box"), {}, lambda s, id, z, box: s.set_box(id, z, box)),
    "add_stroke": (("id", "z", "points"), {"width": 3.0, "positive": True},
                   lambda s, id, z, points, width, positive: s.add_stroke(id, z, _points(points), width=width,
                                                                          positive=bool(positive))),
    "paint": (("id", "z", "points"), {"width": 5.0, "erase": False, "replace_others": False},
              lambda s, id, z, points, width, erase, replace_others: s.paint(
                  id, z, _points(points), width=width, erase=bool(erase), replace_others=bool(replace_others))),
    "clear_slice": (("id", "z"), {}, lambda s, id, z: s.clear_slice(id, z)),
    "accept": ((), {"id": None}, lambda s, id: s.accept(id)),
    "accept_slice": (("id", "z"), {"accepted": True}, lambda s, id, z, accepted: s.accept_slice(id, z, bool(accepted))),
    "set_mode": (("mode",), {}, lambda s, mode: s.set_mode(mode)),
    "interpolate": (("id", "z0", "z1"), {}, lambda s, id, z0, z1: s.interpolate(id, z0, z1)),
    "undo": ((), {}, lambda s: s.undo()),
    "redo": ((), {}, lambda s: s.redo()),
}  # fmt: skip


def apply_edit(session: Session, edit: Any) -> Any:
    """Run one edit of the page on ``session`` (see the module doc); returns what the session method returned."""
    if not isinstance(edit, dict) or not isinstance(edit.get("op"), str):
        raise InvalidInputError(f"edit: expected {{'op': NAME, ...}}, got {edit!r}")
    op = edit["op"]
    if op not in EDITS:
        raise InvalidInputError(f"op: expected one of {', '.join(EDITS)}, got {op!r}")
    required, optional, call = EDITS[op]
    args = {k: v for k, v in edit.items() if k not in ("op", "revision")}
    missing = [k for k in required if k not in args]
    unknown = sorted(set(args) - set(required) - set(optional))
    if missing or unknown:
        problems = ([f"missing {missing}"] if missing else []) + ([f"unknown {unknown}"] if unknown else [])
        raise InvalidInputError(f"{op}: {'; '.join(problems)} argument(s)")
    return call(session, **{**optional, **args})
