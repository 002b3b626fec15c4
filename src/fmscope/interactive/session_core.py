"""The state and history of a segmentation session; :class:`~fmscope.interactive.session.Session` adds the edits.

:class:`SessionCore` holds the image (read slice by slice), the slice embeddings, the label planes (only slices
holding labels), the prompts, the small state (:class:`~fmscope.interactive.history.SessionMeta`), the undo and redo
lists and, for a session kept on disk, its :class:`~fmscope.interactive.session_store.SessionStore`; it commits,
undoes and redoes steps and validates indices. See :mod:`fmscope.interactive.session` for the rules.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from fmscope.errors import InvalidInputError
from fmscope.intensity import IntensityProfile
from fmscope.interactive.cache import image_fingerprint
from fmscope.interactive.history import MODES, SessionMeta, Step, diff_planes, parse_object
from fmscope.interactive.prompts import ObjectPrompt, Stroke, check_number
from fmscope.interactive.propagate import SliceEmbeddings
from fmscope.interactive.protocol import PromptableModel
from fmscope.interactive.session_store import SessionStore, Snapshot

logger = logging.getLogger(__name__)

SNAPSHOT_EVERY = 200  # steps between snapshots of an on-disk session


def is_int(v: Any) -> bool:
    """An integer (numpy's too), not a bool."""
    return isinstance(v, int | np.integer) and not isinstance(v, bool)


class SessionCore:
    """State, history and validation of a session (see the module doc)."""

    def __init__(
        self,
        image: Any,
        backend: PromptableModel,
        *,
        profile: IntensityProfile | None = None,
        cache_size: int | None = None,
        history_limit: int | None = None,
        cache_dir: str | os.PathLike[str] | None = None,
        folder: str | os.PathLike[str] | None = None,
        mode: str = "instance",
        settings: Mapping[str, Any] | None = None,
        _store: SessionStore | None = None,
    ) -> None:
        """``image`` (Y, X) or (Z, Y, X), any numeric dtype, numpy or lazy; ``profile``: the intensity window
        (default: fitted to the whole image once); ``cache_size``: slice embeddings kept in memory (None = all);
        ``history_limit``: undo steps kept (None = all); ``cache_dir``: on-disk embedding cache; ``folder``: a new
        folder the session is written to at every change (:meth:`open` reopens it); ``settings``: what the caller
        wants to find again in the folder (e.g. the backend's options)."""
        shape = tuple(int(s) for s in np.shape(image))
        dtype = np.dtype(image.dtype if hasattr(image, "dtype") else np.asarray(image).dtype)  # never read a lazy one
        if len(shape) not in (2, 3) or 0 in shape or dtype.kind not in "biuf":
            raise InvalidInputError(
                f"image: expected a non-empty 2D (Y, X) or 3D (Z, Y, X) numeric array, got {shape} {dtype}"
            )
        if not isinstance(backend, PromptableModel):
            raise InvalidInputError(f"backend: expected a PromptableModel (name, embed, predict), got {backend!r}")
        for name, value in (("cache_size", cache_size), ("history_limit", history_limit)):
            if value is not None and not (is_int(value) and value >= 1):
                raise InvalidInputError(f"{name}: expected None or an integer >= 1, got {value!r}")
        if mode not in MODES:
            raise InvalidInputError(f"mode: expected one of {', '.join(MODES)}, got {mode!r}")
        self.image_shape: tuple[int, ...] = shape
        self.dtype = dtype
        self._image = image if len(shape) == 3 else np.asarray(image)[None]
        nz, ny, nx = (int(s) for s in np.shape(self._image))
        self.shape: tuple[int, int, int] = (nz, ny, nx)
        self._history_limit = history_limit
        self._planes: dict[int, NDArray[np.uint32]] = {}
        self._ids: dict[int, frozenset[int]] = {}  # slice -> ids on it (only slices holding labels)
        self._versions: dict[int, int] = {}  # slice -> a counter bumped whenever its plane changes
        self._tick = 0
        self._prompts: dict[int, ObjectPrompt] = {}
        self._meta = SessionMeta(mode=mode)
        self._undo: list[Step] = []
        self._redo: list[Step] = []
        self._lock = threading.RLock()
        self._cache_size, self._cache_dir = cache_size, cache_dir
        self.embeddings = SliceEmbeddings(backend, self._image, profile, cache_dir=cache_dir, max_slices=cache_size)
        self.profile = self.embeddings.profile
        self._store = _store
        self._snapshot_at = 0
        self._revision = 0
        if folder is not None:
            header = {
                "image": {"shape": list(shape), "dtype": dtype.name, "fingerprint": image_fingerprint(image)},
                "backend": backend.name,
                "settings": dict(settings or {}),
                "profile": self.profile.to_dict(),
            }
            self._store = SessionStore.create(folder, header)
            self._store.write_snapshot(Snapshot(0, {}, {}, self._meta))

    # ---- read-only state ----------------------------------------------------------------------------------------

    @property
    def backend(self) -> PromptableModel:
        return self.embeddings.backend

    @property
    def folder(self) -> Path | None:
        """The folder the session is kept in (None: in memory only)."""
        return None if self._store is None else self._store.folder

    @property
    def revision(self) -> int:
        """Changes made so far (edits, undos and redos): a view compares it with what it last saw."""
        return self._revision if self._store is None else self._store.state.revision

    def update_settings(self, settings: Mapping[str, Any]) -> None:
        """Replace the caller's settings kept in the session folder (e.g. the app's backend options)."""
        if self._store is not None:
            self._store.update_header(settings=dict(settings))

    def set_backend(self, backend: PromptableModel) -> None:
        """Segment with another backend from now on (same image, window and embedding cache folder); masks and
        prompts stay, slices are embedded again by the new backend when needed."""
        if not isinstance(backend, PromptableModel):
            raise InvalidInputError(f"backend: expected a PromptableModel (name, embed, predict), got {backend!r}")
        with self._lock:
            self.embeddings = SliceEmbeddings(
                backend, self._image, self.profile, cache_dir=self._cache_dir, max_slices=self._cache_size,
                max_bytes=self.embeddings.max_bytes,
            )  # fmt: skip
            if self._store is not None:
                self._store.update_header(backend=backend.name)

    @property
    def lock(self) -> threading.RLock:
        """Held by every edit; hold it to read several properties consistently from another thread."""
        return self._lock

    @property
    def labels(self) -> np.ndarray:
        """The (Z, Y, X) uint32 label volume (Z = 1 for a 2D image), a read-only copy (dense: for large stacks
        prefer :meth:`plane`)."""
        out = np.zeros(self.shape, np.uint32)
        with self._lock:  # a job may be committing a propagation
            for z, plane in self._planes.items():
                out[z] = plane
        out.flags.writeable = False
        return out

    def plane(self, z: int) -> NDArray[np.uint32]:
        """The uint32 labels of slice ``z`` (read-only)."""
        z = self.check_z(z)
        plane = self._planes.get(z)
        view = np.zeros(self.shape[1:], np.uint32) if plane is None else plane.view()
        view.flags.writeable = False
        return view

    def labelled_slices(self, object_id: int | None = None) -> list[int]:
        """Slices holding any label (of ``object_id`` only, when given); read from an index of the ids on each slice
        kept up to date by every step, so this costs nothing per pixel."""
        if object_id is None:
            return sorted(self._ids)
        oid = self._check_object(object_id)
        return sorted(z for z, ids in self._ids.items() if oid in ids)

    def object_slices(self) -> dict[int, list[int]]:
        """Every object id -> the slices holding it (from the same index)."""
        out: dict[int, list[int]] = {oid: [] for oid in self._prompts}
        for z in sorted(self._ids):
            for oid in self._ids[z]:
                out.setdefault(oid, []).append(z)
        return out

    def plane_version(self, z: int) -> int:
        """A number that changes whenever slice ``z``'s labels change (0 for a slice never changed in this
        process): a long computation compares it before it writes a result."""
        return self._versions.get(z, 0)

    def _index(self, z: int) -> None:
        """Refresh the ids present on slice ``z`` and its version (after its plane changed)."""
        self._tick += 1
        self._versions[z] = self._tick
        plane = self._planes.get(z)
        if plane is None:
            self._ids.pop(z, None)
            return
        top = int(plane.max())
        present = np.flatnonzero(np.bincount(plane.ravel())) if top < 1 << 20 else np.unique(plane)
        self._ids[z] = frozenset(int(i) for i in present if i)

    @property
    def prompts(self) -> dict[int, ObjectPrompt]:
        """Object id -> its prompts (a copy; an object without prompts has an empty ObjectPrompt)."""
        return dict(self._prompts)

    @property
    def object_ids(self) -> tuple[int, ...]:
        return tuple(sorted(self._prompts))

    @property
    def accepted(self) -> frozenset[int]:
        return self._meta.accepted

    @property
    def accepted_slices(self) -> frozenset[tuple[int, int]]:
        """(object id, z) pairs whose mask is fixed."""
        return self._meta.accepted_slices

    @property
    def parents(self) -> dict[int, int]:
        """Child object id -> the object it was segmented inside."""
        return self._meta.parent_of

    @property
    def mode(self) -> str:
        return self._meta.mode

    @property
    def can_undo(self) -> bool:
        return bool(self._undo)

    @property
    def can_redo(self) -> bool:
        return bool(self._redo)

    def history(self) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """Summaries of the undo steps (oldest first) and of the redo steps (next first)."""
        return [s.summary() for s in self._undo], [s.summary() for s in reversed(self._redo)]

    def mask(self, object_id: int, z: int) -> NDArray[np.bool_]:
        """The current 2D mask of one object on slice ``z``."""
        oid, z = self._check_object(object_id), self.check_z(z)
        return np.asarray(self.plane(z) == oid)

    def label_image(self, *, accepted_only: bool = False, binary: bool = False) -> np.ndarray:
        """A copy of the labels in the image's own shape (2D for a 2D image): uint32 ids, or uint8 0/1 if ``binary``."""
        out = self.labels
        out.flags.writeable = True  # our own copy
        if accepted_only:
            out[~np.isin(out, sorted(self.accepted))] = 0
        if binary:
            out = (out > 0).astype(np.uint8)
        return out if len(self.image_shape) == 3 else out[0]

    def image_slice(self, z: int) -> np.ndarray:
        """Slice ``z`` of the raw image (read on demand)."""
        return np.asarray(self._image[self.check_z(z)])

    def embedding(self, z: int) -> Any:
        """The backend's embedding of slice ``z`` (computed on first use, then cached)."""
        return self.embeddings[self.check_z(z)]

    # ---- validation ---------------------------------------------------------------------------------------------

    def _check_object(self, object_id: Any) -> int:
        if not is_int(object_id) or int(object_id) not in self._prompts:
            raise InvalidInputError(f"object_id: unknown object {object_id!r}; known ids: {list(self.object_ids)}")
        return int(object_id)

    def check_z(self, z: Any) -> int:
        """``z`` as a slice index of this session, refused naming ``z`` otherwise."""
        if not is_int(z) or not 0 <= z < self.shape[0]:
            raise InvalidInputError(f"z: expected a slice index in 0..{self.shape[0] - 1}, got {z!r}")
        return int(z)

    def _check_yx(self, y: Any, x: Any) -> tuple[float, float]:
        out = []
        for name, value, n in (("y", y, self.shape[1]), ("x", x, self.shape[2])):
            v = check_number(value, name)
            if not 0 <= v <= n - 1:
                raise InvalidInputError(f"{name}: point coordinate {v:g} is outside the image (expected 0..{n - 1})")
            out.append(v)
        return out[0], out[1]

    def _lift(self, prompt: ObjectPrompt) -> ObjectPrompt:
        """A checked prompt in 3D coordinates (2D prompts of a 2D image get z = 0)."""
        if not isinstance(prompt, ObjectPrompt):
            raise InvalidInputError(f"prompt: expected an ObjectPrompt, got {prompt!r}")
        coords = [*prompt.positive, *prompt.negative, *(p for s in prompt.strokes for p in s.points)]
        lengths = {len(q) for q in coords} | ({len(prompt.box) - 2} if prompt.box else set())
        if len(self.image_shape) == 3 or lengths == {3}:
            return parse_object(prompt.to_dict(), self.shape)
        p = parse_object(prompt.to_dict(), self.image_shape)
        lift = lambda pts: tuple((0.0, *q) for q in pts)  # noqa: E731
        strokes = tuple(Stroke(lift(s.points), s.width, s.positive) for s in p.strokes)
        box = None if p.box is None else (0.0, *p.box)
        return ObjectPrompt(p.id, lift(p.positive), lift(p.negative), box, p.text, strokes)

    # ---- history ------------------------------------------------------------------------------------------------

    def _commit(
        self,
        action: str,
        planes: dict[int, np.ndarray],
        prompts: dict[int, ObjectPrompt | None],
        meta: SessionMeta | None = None,
    ) -> None:
        zero = np.zeros(self.shape[1:], np.uint32)
        step = Step(
            action,
            diff_planes({z: self._planes.get(z, zero) for z in planes}, planes),
            tuple((oid, self._prompts.get(oid), p) for oid, p in sorted(prompts.items())),
            (self._meta, self._meta if meta is None else meta),
        )
        if self._store is not None:
            if self._snapshot_at > self._store.state.head:  # the snapshot lies in the redo future this step drops
                self._write_snapshot()
            self._store.record(step)
        self._apply(step, forward=True)
        self._undo.append(step)
        self._redo.clear()
        if self._history_limit is not None and len(self._undo) > self._history_limit:
            self._forget(len(self._undo) - self._history_limit)
        elif self._store is not None and self._store.state.head - self._snapshot_at >= SNAPSHOT_EVERY:
            self._write_snapshot()
        self._revision += 1
        logger.debug("%s: %d slice(s), %d pixel(s) changed", action, len(step.planes), step.summary()["pixels"])

    def _write_snapshot(self) -> None:
        if self._store is not None:
            at = self._store.state.head
            self._store.write_snapshot(Snapshot(at, dict(self._planes), dict(self._prompts), self._meta))
            self._snapshot_at = at

    def _forget(self, n: int) -> None:
        """Drop the ``n`` oldest undo steps; their files on disk go in batches (a snapshot of the current state, then
        the files), so that a long session does not write a snapshot at every edit."""
        del self._undo[:n]
        store = self._store
        if store is not None:
            store.forget_before(store.state.head - len(self._undo) + 1)
            if store.state.first - store.state.kept > max(8, len(self._undo)):
                self._write_snapshot()
                store.drop_forgotten()

    def _apply(self, step: Step, forward: bool) -> None:
        for d in step.planes:
            plane = self._planes.get(d.z)
            if plane is None:
                plane = self._planes[d.z] = np.zeros(self.shape[1:], np.uint32)
            np.put(plane, d.index, d.after if forward else d.before)
            if not plane.any():
                del self._planes[d.z]
            self._index(d.z)
        for oid, before, after in step.prompts:
            value = after if forward else before
            if value is None:
                self._prompts.pop(oid, None)
            else:
                self._prompts[oid] = value
        self._meta = step.meta[1 if forward else 0]

    def undo(self) -> bool:
        """Revert the last step; False when there is none."""
        return self._move(forward=False)

    def redo(self) -> bool:
        """Re-apply the last undone step; False when there is none (a new edit after an undo clears the redo list)."""
        return self._move(forward=True)

    def _move(self, forward: bool) -> bool:
        """One step from the undo list back (or from the redo list forward), on disk first."""
        source, target = (self._redo, self._undo) if forward else (self._undo, self._redo)
        with self._lock:
            if not source:
                return False
            if self._store is not None:
                self._store.move(self._store.state.head + (1 if forward else -1))
            step = source.pop()
            self._apply(step, forward=forward)
            target.append(step)
            self._revision += 1
            return True

    def _restore(self, store: SessionStore | None, snapshot: Snapshot, undo: list[Step], redo: list[Step]) -> None:
        """Put a reopened state in place (used by :func:`~fmscope.interactive.session_files.open_session`)."""
        self._planes = {z: p for z, p in snapshot.planes.items() if p.any()}
        self._ids = {}
        for z in self._planes:
            self._index(z)
        self._prompts, self._meta = dict(snapshot.prompts), snapshot.meta
        self._store = store
        self._snapshot_at = snapshot.at
        self._undo, self._redo = undo, redo
