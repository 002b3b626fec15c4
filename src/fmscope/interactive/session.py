"""The human-in-the-loop segmentation session: prompts per object, masks, accept, undo/redo, kept on disk.

A :class:`Session` holds a raw 2D ``(Y, X)`` or 3D ``(Z, Y, X)`` image (any dtype, numpy or lazily read: dask, zarr;
never modified, read one slice at a time; a 2D image is slice ``z = 0`` of a one-slice stack inside and comes back 2D
from :meth:`Session.label_image` and the exports), a promptable backend, the prompts of each object (3D ``(z, y, x)``
coordinates, boxes ``(z, y0, x0, y1, x1)``, strokes, also for a 2D image) and the current masks as uint32 label
planes (0 = background, object id elsewhere; only slices holding labels take memory). Slice embeddings are those of
propagation (:class:`~fmscope.interactive.propagate.SliceEmbeddings`: one intensity window for the whole volume,
optionally an on-disk embedding cache), computed lazily once per slice.

Edits. Every successful call of an edit method (``new_object``, ``delete_object``, ``set_prompt``, ``add_point``,
``remove_point``, ``set_box``, ``add_stroke``, ``clear_slice``, ``set_mask``, ``paint``, ``accept``,
``accept_slice``, ``set_mode``, ``propagate``, ``interpolate``) is exactly one undoable step (also when it changes
nothing); a call that raises changes nothing. A prompt edit re-predicts only the slices whose 2D prompt changed
(normally the edited slice; moving the box also recomputes the slice it left); a slice left with nothing positive
loses that object.

Overwrite rule: the edited object replaces its own old pixels on the slice and takes only *background* pixels; the
pixels of other objects are never overwritten (``set_mask(..., replace_others=True)`` lets a painted correction take
them). An object segmented inside another (``new_object(parent=...)``, Zenesis' "further segment") lives inside its
parent's region: it takes its parent's pixels and gives them back. In ``semantic`` mode (phases) with a backend that
learns phases (:class:`~fmscope.interactive.protocol.SupportsPhases`) a prompt edit re-predicts the whole slice at
once: one forest learns every phase from the prompts of all phases on all prompted slices.

Accepting. ``accept(object)`` marks an object for export (``accepted_only``); ``accept_slice(object, z)`` fixes its
mask on one slice: propagation starts from it and never overwrites it, and :meth:`interpolate` fills between two of
them.

Persistence. With a ``folder`` the session writes every change to disk at once
(:class:`~fmscope.interactive.session_store.SessionStore`: a journal of steps, atomic files), and
:meth:`Session.open` restores prompts, masks and the undo/redo history after a reload, a restart or a kill.
:attr:`revision` counts changes, so two views of one session can tell when the other changed it.

Export for ``fmscope finetune``: :meth:`export_labels` writes ``NAME_label.tif`` or ``.ome.zarr``; fine-tuning reads
mask values as class indices 0..K-1, so export instance ids with ``binary=True`` (0/1) for foreground segmentation, or
pass ``--map-labels 0=0,other=1``.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from fmscope.errors import InvalidInputError
from fmscope.interactive import raster
from fmscope.interactive.history import MODES, parse_object
from fmscope.interactive.prompts import ObjectPrompt, Stroke, check_box
from fmscope.interactive.protocol import PromptableModel, SupportsPhases
from fmscope.interactive.session_core import SessionCore, is_int

logger = logging.getLogger(__name__)


def _paint(
    plane: np.ndarray, oid: int, mask: NDArray[np.bool_] | None, replace_others: bool, parent: int | None = None
) -> np.ndarray:
    """``plane`` with object ``oid`` replaced by ``mask`` (None = removed), following the overwrite rule; a child
    of ``parent`` lives in the parent's region and gives its pixels back to it."""
    new = plane.copy()
    new[new == oid] = 0 if parent is None else parent
    if mask is not None:
        if parent is not None:
            new[mask & (new == parent)] = oid
        else:
            new[mask if replace_others else mask & (new == 0)] = oid
    return new


class Session(SessionCore):
    """Interactive segmentation of one image (see the module doc)."""

    # ---- prediction ---------------------------------------------------------------------------------------------

    def _predict_plane(self, oid: int, z: int, prompt: ObjectPrompt) -> np.ndarray:
        p2 = prompt.on_slice(z)
        mask = None
        if p2.has_positive:
            result = self.backend.predict(self.embedding(z), p2)
            mask = np.asarray(result.mask, dtype=bool)
            if mask.shape != self.shape[1:]:
                raise InvalidInputError(
                    f"backend '{self.backend.name}': predicted a mask of shape {mask.shape} for a slice of shape "
                    f"{self.shape[1:]}"
                )
            logger.debug("object %d slice %d: %d px, score %.3f", oid, z, int(mask.sum()), result.score)
        return self._masked(oid, z, mask)

    def _predict_phases(self, zs: Sequence[int], prompts: Mapping[int, ObjectPrompt]) -> dict[int, np.ndarray]:
        """Slices ``zs`` with every phase re-predicted by one forest, fitted once on all phases' prompts (semantic
        mode). Objects segmented inside a phase and phases accepted on a slice keep their pixels."""
        from fmscope.interactive.phases import fit_session_phases, phase_plane

        children = self._meta.parent_of
        phases = {oid: p for oid, p in prompts.items() if oid not in children}
        model: Any = None
        ids: list[int] = []
        if any(p.slices() for p in phases.values()):  # else the last prompt was removed: nothing predicts phases
            model, ids = fit_session_phases(self, phases)
        out = {}
        for z in zs:
            plane = self.plane(z)
            fixed = [*children, *(oid for oid, s in self._meta.accepted_slices if s == z and oid in phases)]
            if model is None:
                new = np.zeros(self.shape[1:], np.uint32)
            else:
                new = phase_plane(self, model, ids, z, np.zeros(self.shape[1:], np.uint32), {})
            new[np.isin(new, fixed)] = 0
            out[z] = np.where(np.isin(plane, fixed), plane, new).astype(np.uint32)
        return out

    def _uses_phases(self, oid: int) -> bool:
        return (
            self._meta.mode == "semantic"
            and isinstance(self.backend, SupportsPhases)
            and oid not in self._meta.parent_of
        )

    def _edit_prompt(self, action: str, new: ObjectPrompt, z: int | None = None) -> None:
        old = self._prompts.get(new.id, ObjectPrompt(new.id))
        candidates = set(old.slices()) | set(new.slices()) | ({z} if z is not None else set())
        affected = sorted(s for s in candidates if s == z or old.on_slice(s) != new.on_slice(s))
        if self._uses_phases(new.id):
            planes = self._predict_phases(affected, {**self._prompts, new.id: new})
        else:
            planes = {s: self._predict_plane(new.id, s, new) for s in affected}
        self._commit(action, planes, {new.id: new}, replace(self._meta, next_id=max(self._meta.next_id, new.id + 1)))

    # ---- edits --------------------------------------------------------------------------------------------------

    def new_object(self, object_id: int | None = None, *, parent: int | None = None) -> int:
        """Create an object without prompts; its id is ``object_id`` or the next unused one; with ``parent`` it is
        segmented inside that object. Returns the id."""
        with self._lock:
            if object_id is None:
                oid = self._meta.next_id
            elif not is_int(object_id) or object_id < 1 or int(object_id) in self._prompts:
                raise InvalidInputError(f"object_id: expected a new positive integer id, got {object_id!r}")
            else:
                oid = int(object_id)
            if oid > np.iinfo(np.uint32).max:
                raise InvalidInputError(f"object_id: {oid} does not fit in the uint32 label volume")
            parents = self._meta.parents
            if parent is not None:
                parents = tuple(sorted((*parents, (oid, self._check_object(parent)))))
            meta = replace(self._meta, next_id=max(self._meta.next_id, oid + 1), parents=parents)
            self._commit("new_object", {}, {oid: ObjectPrompt(oid)}, meta)
            return oid

    def delete_object(self, object_id: int) -> None:
        """Remove an object: its prompts, its pixels on every slice (a child's go back to its parent), its accepted
        marks, and its children (which become top-level objects)."""
        with self._lock:
            oid = self._check_object(object_id)
            planes = {z: self._masked(oid, z, None) for z in self.labelled_slices(oid)}
            meta = replace(
                self._meta,
                accepted=self._meta.accepted - {oid},
                accepted_slices=frozenset(p for p in self._meta.accepted_slices if p[0] != oid),
                parents=tuple(p for p in self._meta.parents if oid not in p),
            )
            self._commit("delete_object", planes, {oid: None}, meta)

    def set_prompt(self, prompt: ObjectPrompt) -> None:
        """Replace all prompts of one object (created when its id is new) and re-predict the slices that changed.
        Coordinates as the image: (z, y, x) for a stack, (y, x) or (z=0, y, x) for a 2D image."""
        with self._lock:
            new = self._lift(prompt)
            if new.id not in self._prompts and new.id > np.iinfo(np.uint32).max:
                raise InvalidInputError(f"prompt.id: {new.id} does not fit in the uint32 label volume")
            self._edit_prompt("set_prompt", new)

    def add_point(self, object_id: int, z: int, y: float, x: float, positive: bool = True) -> None:
        """Add a positive (or negative) click on slice ``z`` and re-predict that slice of the object."""
        with self._lock:
            oid, z = self._check_object(object_id), self.check_z(z)
            y, x = self._check_yx(y, x)
            old = self._prompts[oid]
            point = ((float(z), y, x),)
            pos, neg = (old.positive + point, old.negative) if positive else (old.positive, old.negative + point)
            self._edit_prompt("add_point", replace(old, positive=pos, negative=neg), z)

    def remove_point(self, object_id: int, z: int, y: float, x: float) -> None:
        """Remove the object's point (positive or negative) on slice ``z`` nearest to ``(y, x)``; re-predict."""
        with self._lock:
            oid, z = self._check_object(object_id), self.check_z(z)
            y, x = self._check_yx(y, x)
            old = self._prompts[oid]
            found = [(math.hypot(p[1] - y, p[2] - x), sign, k) for sign, pts in ((1, old.positive), (0, old.negative))
                     for k, p in enumerate(pts) if round(p[0]) == z]  # fmt: skip
            if not found:
                raise InvalidInputError(f"z: object {oid} has no point on slice {z}")
            _, sign, k = min(found)
            pos = tuple(p for i, p in enumerate(old.positive) if not (sign == 1 and i == k))
            neg = tuple(p for i, p in enumerate(old.negative) if not (sign == 0 and i == k))
            self._edit_prompt("remove_point", replace(old, positive=pos, negative=neg), z)

    def set_box(self, object_id: int, z: int, box: Sequence[float] | None) -> None:
        """Set the object's box to ``(y_min, x_min, y_max, x_max)`` on slice ``z`` (an object has one box: a box on
        another slice moves here and that slice is recomputed too), or remove it with ``None``."""
        with self._lock:
            oid, z = self._check_object(object_id), self.check_z(z)
            old = self._prompts[oid]
            if box is None:
                if old.box is None or round(old.box[0]) != z:
                    raise InvalidInputError(f"box: object {oid} has no box on slice {z} to remove")
                new_box = None
            else:
                new_box = (float(z), *check_box(box, self.shape[1:], "box"))
            self._edit_prompt("set_box", replace(old, box=new_box), z)

    def add_stroke(
        self, object_id: int, z: int, points: Sequence[Sequence[float]], *, width: float = 3.0, positive: bool = True
    ) -> None:
        """Add a brush stroke prompt (a polyline of ``(y, x)`` points on slice ``z``) and re-predict that slice."""
        with self._lock:
            oid, z = self._check_object(object_id), self.check_z(z)
            checked = self._stroke(oid, z, points, width, positive)
            old = self._prompts[oid]
            self._edit_prompt("add_stroke", replace(old, strokes=(*old.strokes, checked)), z)

    def _stroke(
        self, oid: int, z: int, points: Sequence[Sequence[float]], width: float, positive: bool = True
    ) -> Stroke:
        """A checked stroke of ``(y, x)`` points on slice ``z`` (parsed as a prompt file's stroke would be)."""
        stroke = {"points": [[z, *p] for p in points], "width": width, "positive": positive}
        (checked,) = parse_object({"id": oid, "strokes": [stroke]}, self.shape).strokes
        return checked

    def clear_slice(self, object_id: int, z: int) -> None:
        """Remove all prompts of an object on slice ``z`` (and its mask there)."""
        with self._lock:
            oid, z = self._check_object(object_id), self.check_z(z)
            old = self._prompts[oid]
            keep = lambda pts: tuple(p for p in pts if round(p[0]) != z)  # noqa: E731
            box = None if old.box is not None and round(old.box[0]) == z else old.box
            strokes = tuple(s for s in old.strokes if s.z != z)
            self._edit_prompt("clear_slice", replace(old, positive=keep(old.positive), negative=keep(old.negative),
                                                     box=box, strokes=strokes), z)  # fmt: skip

    def set_mask(self, object_id: int, z: int, mask: np.ndarray, *, replace_others: bool = False) -> None:
        """Put a 2D mask (a painted correction, a propagated result) for one object on slice ``z``: it replaces the
        object's pixels there and takes background only, or every pixel it covers with ``replace_others``."""
        with self._lock:
            oid, z = self._check_object(object_id), self.check_z(z)
            arr = self._check_mask(mask)
            self._commit("set_mask", {z: self._masked(oid, z, arr, replace_others)}, {})

    def _check_mask(self, mask: np.ndarray) -> NDArray[np.bool_]:
        arr = np.asarray(mask)
        if arr.shape != self.shape[1:] or arr.dtype.kind not in "biu":
            raise InvalidInputError(
                f"mask: expected a bool or integer mask of shape {self.shape[1:]}, got {arr.shape} {arr.dtype}"
                + (" (threshold probabilities first)" if arr.dtype.kind == "f" else "")
            )
        return arr != 0

    def _masked(
        self,
        oid: int,
        z: int,
        mask: NDArray[np.bool_] | None,
        replace_others: bool = False,
        base: np.ndarray | None = None,
    ) -> np.ndarray:
        """Slice ``z`` (or ``base``, a plane being built) with object ``oid`` replaced by ``mask``."""
        plane = self.plane(z) if base is None else base
        parent = self._meta.parent_of.get(oid)
        return _paint(plane, oid, mask, replace_others, parent)

    def paint(
        self,
        object_id: int,
        z: int,
        points: Sequence[Sequence[float]],
        *,
        width: float = 5.0,
        erase: bool = False,
        replace_others: bool = False,
    ) -> None:
        """Paint (or erase) the object's mask on slice ``z`` along a brush stroke of ``(y, x)`` points."""
        with self._lock:
            oid, z = self._check_object(object_id), self.check_z(z)
            brush = raster.stroke_mask(self._stroke(oid, z, points, width).on_slice(), self.shape[1:])
            current = self.plane(z) == oid
            mask = current & ~brush if erase else current | brush
            self._commit("erase" if erase else "paint", {z: self._masked(oid, z, mask, replace_others)}, {})

    def accept(self, object_id: int | None = None) -> None:
        """Mark one object (all current objects when None) as accepted: exported with ``accepted_only=True``. It stays
        accepted through later edits (undo the accept to withdraw it)."""
        with self._lock:
            ids = set(self._prompts) if object_id is None else {self._check_object(object_id)}
            self._commit("accept", {}, {}, replace(self._meta, accepted=self._meta.accepted | ids))

    def accept_slice(self, object_id: int, z: int, accepted: bool = True) -> None:
        """Fix (or release) an object's mask on slice ``z``: a key slice of propagation that it never overwrites."""
        with self._lock:
            pair = (self._check_object(object_id), self.check_z(z))
            pairs = self._meta.accepted_slices | {pair} if accepted else self._meta.accepted_slices - {pair}
            self._commit("accept_slice", {}, {}, replace(self._meta, accepted_slices=frozenset(pairs)))

    def set_mode(self, mode: str) -> None:
        """``instance`` (objects) or ``semantic`` (phases: every phase learnt at once, with a forest backend)."""
        with self._lock:
            if mode not in MODES:
                raise InvalidInputError(f"mode: expected one of {', '.join(MODES)}, got {mode!r}")
            self._commit("set_mode", {}, {}, replace(self._meta, mode=mode))

    def set_planes(self, action: str, planes: Mapping[int, np.ndarray], *, create: bool = False) -> None:
        """One step that replaces whole label planes (slice -> uint32 labels of known objects), e.g. a phase map;
        with ``create`` an unknown id becomes a new object (without prompts) in the same step, e.g. a painted one."""
        with self._lock:
            known = set(self._prompts) | {0}
            checked, found = {}, set()
            for z, plane in planes.items():
                arr = np.asarray(plane)
                ids = set(np.unique(arr).tolist()) if arr.dtype.kind in "iu" else set()
                if arr.shape != self.shape[1:] or arr.dtype.kind not in "iu" or not (create or ids <= known):
                    raise InvalidInputError(f"planes[{z}]: expected integer labels of shape {self.shape[1:]} holding "
                                            f"{'ids >= 0' if create else 'known ids'}")  # fmt: skip
                if min(ids, default=0) < 0 or max(ids, default=0) > np.iinfo(np.uint32).max:
                    raise InvalidInputError(f"planes[{z}]: ids must lie in 0..{np.iinfo(np.uint32).max}")
                checked[self.check_z(z)] = arr.astype(np.uint32)
                found |= ids
            new = sorted(found - known)
            meta = replace(self._meta, next_id=max(self._meta.next_id, *(oid + 1 for oid in new))) if new else None
            self._commit(action, checked, {oid: ObjectPrompt(oid) for oid in new}, meta)

    def set_masks(self, action: str, masks: Mapping[int, Mapping[int, NDArray[np.bool_]]]) -> None:
        """One step that puts ``masks`` (object id -> slice -> 2D mask, empty to clear) in place, each by the overwrite
        rule (background only; a child inside its parent), e.g. the result of a propagation."""
        with self._lock:
            planes: dict[int, np.ndarray] = {}
            for oid in sorted(masks):
                self._check_object(oid)
                for z, mask in sorted(masks[oid].items()):
                    z = self.check_z(z)
                    planes[z] = self._masked(oid, z, self._check_mask(mask), base=planes.get(z))
            self._commit(action, planes, {})

    def add_objects(self, action: str, labels: Mapping[int, np.ndarray]) -> list[int]:
        """One step that adds every id of ``labels`` (slice -> 2D label plane, e.g. automatic mode) as a new object
        (numbered after the existing ones) on the background pixels; returns the new ids."""
        with self._lock:
            arrays = {self.check_z(z): np.asarray(plane) for z, plane in labels.items()}
            for z, arr in arrays.items():
                if arr.shape != self.shape[1:] or arr.dtype.kind not in "iu" or (arr.size and arr.min() < 0):
                    raise InvalidInputError(f"labels[{z}]: expected ids >= 0 of shape {self.shape[1:]}, got {arr.shape}"
                                            f" {arr.dtype}")  # fmt: skip
            found = sorted({int(v) for arr in arrays.values() for v in np.unique(arr) if v})
            lut = np.zeros(max(found, default=0) + 1, np.uint32)
            lut[found] = np.arange(self._meta.next_id, self._meta.next_id + len(found), dtype=np.uint32)
            planes: dict[int, np.ndarray] = {}
            for z, arr in arrays.items():
                old = self.plane(z)
                planes[z] = np.where(old == 0, lut[arr], old).astype(np.uint32)  # background pixels only
            prompts: dict[int, ObjectPrompt | None] = {int(new): ObjectPrompt(int(new)) for new in lut[found]}
            next_id = self._meta.next_id + len(found)
            self._commit(action, planes, prompts, replace(self._meta, next_id=next_id))
            return sorted(prompts)

    # ---- through the stack --------------------------------------------------------------------------------------

    def propagate(self, object_ids: Sequence[int] | None = None, **options: Any) -> dict[str, Any]:
        """Carry objects through the stack from their key slices (see
        :func:`fmscope.interactive.session_stack.propagate_session` for the options); one undoable step."""
        from fmscope.interactive.session_stack import propagate_session

        return propagate_session(self, object_ids, **options)

    def interpolate(self, object_id: int, z0: int, z1: int) -> list[int]:
        """Fill the slices between ``z0`` and ``z1`` (both holding the object) by shape interpolation; one step."""
        from fmscope.interactive.session_stack import interpolate_session

        return interpolate_session(self, object_id, z0, z1)

    # ---- save / open --------------------------------------------------------------------------------------------

    def save(self, folder: str | os.PathLike[str], *, overwrite: bool = False) -> Path:
        """Write a copy of the session (state and undo/redo history) to a new ``folder``, atomically; an existing
        folder is replaced only with ``overwrite=True`` and only when it is a session folder or empty."""
        from fmscope.interactive.session_files import save_session

        return save_session(self, folder, overwrite=overwrite)

    @classmethod
    def open(
        cls,
        folder: str | os.PathLike[str],
        image: Any,
        backend: PromptableModel,
        *,
        autosave: bool = True,
        **kwargs: Any,
    ) -> Session:
        """Reopen a session folder on the same image (refused, naming ``image``, when it differs), with its undo and
        redo history; with ``autosave`` the session keeps writing every change there."""
        from fmscope.interactive.session_files import open_session

        return open_session(cls, folder, image, backend, autosave=autosave, **kwargs)

    # ---- outputs ------------------------------------------------------------------------------------------------

    def export_labels(self, path: str | os.PathLike[str], **options: Any) -> Path:
        """Write the label image (see :func:`fmscope.interactive.session_files.export_labels`)."""
        from fmscope.interactive.session_files import export_labels

        return export_labels(self, path, **options)

    def morphometry(self, path: str | os.PathLike[str] | None = None, **options: Any) -> list[Any]:
        """Measure each object (see :func:`fmscope.interactive.session_files.session_morphometry`)."""
        from fmscope.interactive.session_files import session_morphometry

        return session_morphometry(self, path, **options)

    def __repr__(self) -> str:
        return (
            f"Session(shape={self.image_shape}, backend={self.backend.name!r}, mode={self.mode!r}, "
            f"objects={list(self.object_ids)}, revision={self.revision})"
        )
