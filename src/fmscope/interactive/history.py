"""The undo history of a :class:`~fmscope.interactive.session.Session`: compact steps, and their files on disk.

A :class:`Step` is one edit: per touched slice the changed pixels (flat indices, old and new values), per touched
object its prompt before and after, and the session's small state before and after (:class:`SessionMeta`: accepted
objects and slices, parents of objects segmented inside others, the id counter, the mode). Applying a step forward
or backward is exact, so a session is its first state plus the steps applied since.

On disk a step is one ``.npz`` (no pickles): the pixel diffs as arrays and everything else as JSON in a string
array; :func:`write_step` writes it atomically, :func:`read_step` checks it against the image shape.
"""

from __future__ import annotations

import io
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from fmscope.errors import FileFormatError
from fmscope.interactive.prompts import ObjectPrompt, parse_prompts
from fmscope.utils.atomic import atomic_output

MODES = ("instance", "semantic")


@dataclass(frozen=True)
class SessionMeta:
    """The small state of a session besides pixels and prompts."""

    accepted: frozenset[int] = frozenset()
    accepted_slices: frozenset[tuple[int, int]] = frozenset()  # (object id, z)
    parents: tuple[tuple[int, int], ...] = ()  # (child id, parent id), sorted
    next_id: int = 1
    mode: str = "instance"

    @property
    def parent_of(self) -> dict[int, int]:
        return dict(self.parents)

    def to_dict(self) -> dict[str, Any]:
        return {
            "accepted": sorted(self.accepted),
            "accepted_slices": sorted([list(p) for p in self.accepted_slices]),
            "parents": [list(p) for p in self.parents],
            "next_id": self.next_id,
            "mode": self.mode,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SessionMeta:
        mode = str(d.get("mode", "instance"))
        if mode not in MODES:
            raise ValueError(f"mode: expected one of {MODES}, got {mode!r}")
        return cls(
            frozenset(int(i) for i in d["accepted"]),
            frozenset((int(a), int(b)) for a, b in d["accepted_slices"]),
            tuple(sorted((int(a), int(b)) for a, b in d["parents"])),
            int(d["next_id"]),
            mode,
        )


@dataclass(frozen=True)
class PlaneDiff:
    """The changed pixels of slice ``z``: flat indices and their values before and after."""

    z: int
    index: NDArray[np.intp]
    before: NDArray[np.uint32]
    after: NDArray[np.uint32]


@dataclass(frozen=True)
class Step:
    """One undoable edit (see the module doc)."""

    action: str
    planes: tuple[PlaneDiff, ...] = ()
    prompts: tuple[tuple[int, ObjectPrompt | None, ObjectPrompt | None], ...] = ()  # (id, before, after)
    meta: tuple[SessionMeta, SessionMeta] = field(default_factory=lambda: (SessionMeta(), SessionMeta()))

    @property
    def slices(self) -> tuple[int, ...]:
        return tuple(d.z for d in self.planes)

    def summary(self) -> dict[str, Any]:
        """What the step did, for a history list: action, objects and slices touched, pixels changed."""
        ids = sorted({oid for oid, _, _ in self.prompts})
        return {
            "action": self.action,
            "objects": ids,
            "slices": list(self.slices),
            "pixels": int(sum(d.index.size for d in self.planes)),
        }


def diff_planes(old: dict[int, NDArray[np.uint32]], new: dict[int, NDArray[np.uint32]]) -> tuple[PlaneDiff, ...]:
    """The pixel diffs from ``old[z]`` to ``new[z]`` for every slice in ``new`` (equal planes give empty diffs)."""
    out = []
    for z in sorted(new):
        a, b = old[z].ravel(), np.asarray(new[z], np.uint32).ravel()
        index = np.flatnonzero(a != b)
        out.append(PlaneDiff(int(z), index, a[index], b[index]))
    return tuple(out)


def _prompt_json(p: ObjectPrompt | None) -> dict[str, Any] | None:
    return None if p is None else p.to_dict()


def parse_object(obj: dict[str, Any], shape: tuple[int, ...]) -> ObjectPrompt:
    """One object of the prompts-JSON form, checked; unlike :func:`parse_prompts` it allows an object with nothing to
    segment from yet (a new object, or negative clicks only)."""
    if isinstance(obj, dict) and obj.get("text") is None:  # parsed with a placeholder phrase, which is then dropped
        (p,) = parse_prompts([{**obj, "text": "-"}], shape)
        return ObjectPrompt(p.id, p.positive, p.negative, p.box, None, p.strokes)
    (p,) = parse_prompts([obj], shape)
    return p


def write_step(path: str | os.PathLike[str], step: Step) -> None:
    """One step as an ``.npz`` file, written atomically (an existing file is replaced)."""
    offsets = np.cumsum([0, *(d.index.size for d in step.planes)]).astype(np.int64)
    empty_i, empty_v = np.zeros(0, np.int64), np.zeros(0, np.uint32)
    meta = {
        "action": step.action,
        "prompts": [[oid, _prompt_json(a), _prompt_json(b)] for oid, a, b in step.prompts],
        "meta": [step.meta[0].to_dict(), step.meta[1].to_dict()],
    }
    buffer = io.BytesIO()
    np.savez(
        buffer,
        z=np.array([d.z for d in step.planes], np.int64),
        offsets=offsets,
        index=np.concatenate([d.index.astype(np.int64) for d in step.planes]) if step.planes else empty_i,
        before=np.concatenate([d.before for d in step.planes]) if step.planes else empty_v,
        after=np.concatenate([d.after for d in step.planes]) if step.planes else empty_v,
        meta=np.array(json.dumps(meta)),
    )
    with atomic_output(path, overwrite=True) as tmp:
        tmp.write_bytes(buffer.getvalue())


def read_step(path: str | os.PathLike[str], shape: tuple[int, int, int]) -> Step:
    """A step written by :func:`write_step`, checked against the session's ``(Z, Y, X)`` shape."""
    p = Path(path)
    try:
        with np.load(p, allow_pickle=False) as npz:
            zs, offsets = npz["z"], npz["offsets"]
            index, before, after = npz["index"], npz["before"], npz["after"]
            meta = json.loads(str(npz["meta"]))
        plane = shape[1] * shape[2]
        if (zs.size and (zs.min() < 0 or zs.max() >= shape[0])) or (index.size and index.max() >= plane):
            raise ValueError(f"pixel indices outside a {shape} session")
        planes = tuple(
            PlaneDiff(int(z), index[a:b].astype(np.intp), before[a:b].astype(np.uint32), after[a:b].astype(np.uint32))
            for z, a, b in zip(zs, offsets[:-1], offsets[1:], strict=True)
        )
        prompts = tuple(
            (
                int(oid),
                None if a is None else parse_object(a, shape),
                None if b is None else parse_object(b, shape),
            )
            for oid, a, b in meta["prompts"]
        )
        metas = (SessionMeta.from_dict(meta["meta"][0]), SessionMeta.from_dict(meta["meta"][1]))
    except FileNotFoundError:
        raise FileFormatError(f"session history: step file '{p}' is missing") from None
    except (OSError, ValueError, KeyError, TypeError, IndexError) as exc:
        raise FileFormatError(f"session history: '{p}' is not a readable step ({exc})") from None
    return Step(str(meta["action"]), planes, prompts, metas)
