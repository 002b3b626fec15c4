"""A session on disk, written at every change: a journal of undo steps, a snapshot, and a small state file.

Folder layout (each file written atomically: a temporary name, then a rename)::

    session.json      what the session is of: format, version, the image (shape, dtype, fingerprint), settings
    state.json        head (steps applied), count (steps on disk: the ones past head are the redo list), first
                      (oldest undoable step), kept (oldest step file still on disk, <= first: older undo steps are
                      deleted in batches, after a snapshot), revision (changes so far, for optimistic concurrency)
    snapshot.npz      the labels (non-empty slices), prompts and meta at step ``at`` (stored inside the file)
    steps/NNNNNNNN.npz  one :class:`~fmscope.interactive.history.Step` each (1-based)

The session after ``head`` steps is the snapshot moved forward (or backward) through the steps between. A change
writes its step file first and then the state, so a kill between the two loses only that change; a new change made
after an undo first drops the redo steps from the state, so a half-written journal never mixes two futures. Every
``snapshot_every`` steps (and when old steps fall off the undo limit) a new snapshot is written, which bounds the
work of reopening.
"""

from __future__ import annotations

import io
import json
import logging
import os
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from fmscope.errors import FileFormatError, InvalidInputError
from fmscope.interactive.history import SessionMeta, Step, parse_object, read_step, write_step
from fmscope.interactive.prompts import ObjectPrompt
from fmscope.utils.atomic import atomic_output

logger = logging.getLogger(__name__)

FORMAT = "fmscope-session"
VERSION = 2
HEADER = "session.json"
STATE = "state.json"
SNAPSHOT = "snapshot.npz"
STEPS = "steps"


@dataclass(frozen=True)
class StoreState:
    head: int = 0
    count: int = 0
    first: int = 1
    revision: int = 0
    kept: int = 1


@dataclass
class Snapshot:
    """The session after ``at`` steps: non-empty label planes, prompts and meta."""

    at: int
    planes: dict[int, NDArray[np.uint32]]
    prompts: dict[int, ObjectPrompt]
    meta: SessionMeta


def _write_json(path: Path, data: dict[str, Any]) -> None:
    with atomic_output(path, overwrite=True) as tmp:
        tmp.write_text(json.dumps(data, indent=1) + "\n")


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise FileFormatError(f"folder: '{path.parent}' is not a session folder ({path.name} is missing)") from None
    except (OSError, ValueError) as exc:
        raise FileFormatError(f"'{path}': not readable JSON ({exc})") from None
    if not isinstance(data, dict):
        raise FileFormatError(f"'{path}': expected a JSON object")
    return data


def is_session_folder(folder: str | os.PathLike[str]) -> bool:
    """Whether ``folder`` holds a session (its header file)."""
    return (Path(folder) / HEADER).is_file()


class SessionStore:
    """Reads and writes one session folder (see the module doc)."""

    def __init__(self, folder: Path, header: dict[str, Any], state: StoreState) -> None:
        self.folder, self.header, self.state = folder, header, state

    # ---- open / create ---------------------------------------------------------------------------------------

    @classmethod
    def create(cls, folder: str | os.PathLike[str], header: dict[str, Any]) -> SessionStore:
        """A new session folder (it must not exist, or be empty)."""
        out = Path(folder)
        if out.exists() and (not out.is_dir() or any(out.iterdir())):
            raise InvalidInputError(f"folder: '{out}' exists and is not empty; choose a new session folder")
        out.mkdir(parents=True, exist_ok=True)
        (out / STEPS).mkdir()
        full = {"format": FORMAT, "version": VERSION, **header}
        store = cls(out, full, StoreState())
        _write_json(out / HEADER, full)
        store._write_state()
        return store

    @classmethod
    def open(cls, folder: str | os.PathLike[str]) -> SessionStore:
        """An existing session folder; refuses another format or version."""
        p = Path(folder)
        header = _read_json(p / HEADER)
        if header.get("format") != FORMAT or header.get("version") != VERSION:
            raise FileFormatError(
                f"folder: '{p}' is not an {FORMAT} version {VERSION} folder "
                f"(found {header.get('format')!r} version {header.get('version')!r})"
            )
        raw = _read_json(p / STATE)
        try:
            state = StoreState(int(raw["head"]), int(raw["count"]), int(raw["first"]), int(raw["revision"]),
                               int(raw.get("kept", raw["first"])))  # fmt: skip
        except (KeyError, TypeError, ValueError) as exc:
            raise FileFormatError(f"'{p / STATE}': not a session state ({exc})") from None
        if not 0 <= state.head <= state.count or not 1 <= state.kept <= state.first <= state.head + 1:
            raise FileFormatError(f"'{p / STATE}': inconsistent state {asdict(state)}")
        return cls(p, header, state)

    def update_header(self, **changes: Any) -> None:
        self.header = {**self.header, **changes}
        _write_json(self.folder / HEADER, self.header)

    # ---- the journal -----------------------------------------------------------------------------------------

    def _step_path(self, index: int) -> Path:
        return self.folder / STEPS / f"{index:08d}.npz"

    def _write_state(self, state: StoreState | None = None) -> None:
        """Write ``state`` (default: the current one) and make it current once it is on disk."""
        state = self.state if state is None else state
        _write_json(self.folder / STATE, asdict(state))
        self.state = state

    def record(self, step: Step) -> None:
        """Append a new step after ``head`` (the redo steps are dropped)."""
        s = self.state
        if s.count > s.head:  # drop the redo list first, so that the journal never holds two futures
            self._write_state(replace(s, count=s.head))
        index = s.head + 1
        write_step(self._step_path(index), step)
        self._write_state(replace(self.state, head=index, count=index, revision=s.revision + 1))
        for stale in (self.folder / STEPS).glob("*.npz"):
            if stale.stem.isdigit() and int(stale.stem) > index:
                stale.unlink(missing_ok=True)

    def move(self, head: int) -> None:
        """Undo or redo: ``head`` moves within ``first - 1 .. count``."""
        if not self.state.first - 1 <= head <= self.state.count:
            raise InvalidInputError(f"head: expected {self.state.first - 1}..{self.state.count}, got {head}")
        self._write_state(replace(self.state, head=head, revision=self.state.revision + 1))

    def read_steps(self, shape: tuple[int, int, int]) -> dict[int, Step]:
        """Every step file on disk (``kept .. count``): the undoable and redoable ones, and older ones still needed
        to move from the snapshot to ``first``."""
        return {i: read_step(self._step_path(i), shape) for i in range(self.state.kept, self.state.count + 1)}

    def forget_before(self, first: int) -> None:
        """Make ``first`` the oldest undoable step (the files before it stay until :meth:`drop_forgotten`)."""
        first = min(first, self.state.head + 1)
        if first > self.state.first:
            self._write_state(replace(self.state, first=first))

    def drop_forgotten(self) -> None:
        """Delete the step files before ``first`` (call after a snapshot at ``first - 1`` or later)."""
        old, first = self.state.kept, self.state.first
        if first > old:
            self._write_state(replace(self.state, kept=first))
            for i in range(old, first):
                self._step_path(i).unlink(missing_ok=True)

    # ---- snapshots -------------------------------------------------------------------------------------------

    def write_snapshot(self, snapshot: Snapshot) -> None:
        zs = sorted(z for z, p in snapshot.planes.items() if p.any())
        meta = {
            "at": snapshot.at,
            "prompts": [p.to_dict() for _, p in sorted(snapshot.prompts.items())],
            "objects": sorted(snapshot.prompts),
            "meta": snapshot.meta.to_dict(),
        }
        planes = np.stack([snapshot.planes[z] for z in zs]) if zs else np.zeros((0, 1, 1), np.uint32)
        buffer = io.BytesIO()
        np.savez_compressed(buffer, z=np.array(zs, np.int64), planes=planes, meta=np.array(json.dumps(meta)))
        with atomic_output(self.folder / SNAPSHOT, overwrite=True) as tmp:
            tmp.write_bytes(buffer.getvalue())
        logger.debug("session snapshot at step %d: %d labelled slices", snapshot.at, len(zs))

    def read_snapshot(self, shape: tuple[int, int, int]) -> Snapshot:
        """The snapshot (an empty session at step 0 when none was written yet)."""
        path = self.folder / SNAPSHOT
        if not path.exists():
            return Snapshot(0, {}, {}, SessionMeta())
        try:
            with np.load(path, allow_pickle=False) as npz:
                zs, planes, meta = npz["z"], npz["planes"], json.loads(str(npz["meta"]))
            if zs.size and (planes.shape[1:] != shape[1:] or zs.min() < 0 or zs.max() >= shape[0]):
                raise ValueError(f"planes of shape {planes.shape} do not fit a {shape} session")
            prompts = {int(d["id"]): parse_object(d, shape) for d in meta["prompts"]}
            prompts = {int(i): prompts.get(int(i), ObjectPrompt(int(i))) for i in meta["objects"]}
            snapshot = Snapshot(
                int(meta["at"]),
                {int(z): np.ascontiguousarray(p, np.uint32) for z, p in zip(zs, planes, strict=True)},
                prompts,
                SessionMeta.from_dict(meta["meta"]),
            )
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise FileFormatError(f"'{path}': not a readable session snapshot ({exc})") from None
        if not self.state.kept - 1 <= snapshot.at <= self.state.count:
            raise FileFormatError(
                f"'{path}': a snapshot at step {snapshot.at}, outside the journal ({self.state.kept}.."
                f"{self.state.count})"
            )
        return snapshot
