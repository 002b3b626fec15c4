"""The human-in-the-loop segmentation session: prompts per object, a label volume, accept, undo/redo, save, export.

A :class:`Session` holds a raw 2D ``(Y, X)`` or 3D ``(Z, Y, X)`` image (any dtype, never modified; a 2D image is
slice ``z = 0`` of a one-slice stack inside and comes back 2D from :meth:`Session.label_image` and the exports), a
promptable backend, the prompts of each object (3D ``(z, y, x)`` coordinates, boxes ``(z, y0, x0, y1, x1)``, also for
a 2D image), the current masks as one ``(Z, Y, X)`` uint32 label volume (0 = background, object id elsewhere) and the
accepted ids. Embeddings are computed lazily, once per slice, and cached (LRU when ``cache_size`` is set).

Edits. Every successful call of ``new_object``, ``delete_object``, ``set_prompt``, ``add_point``, ``remove_point``,
``set_box``, ``set_mask`` and ``accept`` is exactly one undoable step (also when it changes nothing); a call that
raises changes nothing. A prompt edit re-predicts only the slices whose 2D prompt changed (normally the edited slice;
moving the box also recomputes the slice it left); a slice left with no positive point and no box loses that object.

Overwrite rule: the edited object replaces its own old pixels on the slice and takes only *background* pixels; the
pixels of other objects are never overwritten (``set_mask(..., replace_others=True)`` lets a painted correction take
them). Pixels an object gives up become background; masks live only in the label volume, so another object does not
win them back until it is recomputed. ``set_mask`` is how painted corrections and propagated masks come in; a later
prompt edit of that object on that slice replaces them with the backend's prediction.

History holds compact diffs: per step, the changed pixels of each touched slice (flat indices, old and new values),
the old and new prompt of each touched object, the accepted ids and the id counter. A new edit clears the redo list.

Saving. :meth:`Session.save` writes a folder, atomically as a whole: ``session.json`` (format version, image shape,
dtype and SHA-256 of its bytes, backend name, object ids, accepted ids, next id, prompts in the prompts-JSON form of
:mod:`fmscope.interactive.prompts`) and ``labels.npz`` (the uint32 ``(Z, Y, X)`` volume). :meth:`Session.load`
refuses an image whose shape, dtype or content differs. The undo history is not saved: a loaded session starts with
empty undo/redo lists.

Export for ``fmscope finetune``: write the labels beside the image as ``NAME_label.tif`` (or ``_labels``, ``_mask``,
``_seg``) next to ``NAME.tif`` (layouts of :mod:`fmscope.tasks.labelled`). Fine-tuning reads mask values as class
indices 0..K-1, so instance ids 1, 2, 3 would be read as three classes: export with ``binary=True`` (0/1, uint8) for
foreground segmentation, or keep ids and pass ``--map-labels 0=0,other=1``.
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from fmscope.errors import FileFormatError, InvalidInputError
from fmscope.intensity import IntensityProfile
from fmscope.interactive.cache import image_hash
from fmscope.interactive.morphometry import ObjectMeasurement, measure_objects, write_morphometry
from fmscope.interactive.prompts import ObjectPrompt, check_box, check_number, parse_prompts
from fmscope.interactive.protocol import PromptableModel
from fmscope.utils.atomic import atomic_output

logger = logging.getLogger(__name__)

FORMAT = "fmscope-session"
FORMAT_VERSION = 1
SESSION_FILE = "session.json"
LABELS_FILE = "labels.npz"


@dataclass(frozen=True)
class _PlaneDiff:
    z: int
    index: NDArray[np.intp]  # flat indices of the changed pixels of slice z
    before: NDArray[np.uint32]
    after: NDArray[np.uint32]


@dataclass(frozen=True)
class _Step:
    action: str
    planes: tuple[_PlaneDiff, ...]
    prompts: tuple[tuple[int, ObjectPrompt | None, ObjectPrompt | None], ...]  # (id, before, after); None = absent
    accepted: tuple[frozenset[int], frozenset[int]]
    next_id: tuple[int, int]


def _is_int(v: Any) -> bool:
    return isinstance(v, int | np.integer) and not isinstance(v, bool)


def _parse_object(obj: dict[str, Any], shape: tuple[int, ...]) -> ObjectPrompt:
    """One object of the prompts-JSON form, checked; unlike :func:`parse_prompts` it allows an object with no
    positive point, box or phrase (a new object, or negative clicks only)."""
    if isinstance(obj, dict) and not any(obj.get(k) for k in ("positive", "box", "text")):
        (p,) = parse_prompts([{**obj, "text": "-"}], shape)
        return ObjectPrompt(p.id, p.positive, p.negative, p.box, None)
    (p,) = parse_prompts([obj], shape)
    return p


def _paint(plane: np.ndarray, oid: int, mask: NDArray[np.bool_] | None, replace_others: bool) -> np.ndarray:
    """``plane`` with object ``oid`` replaced by ``mask`` (None = removed), following the overwrite rule."""
    new = plane.copy()
    new[new == oid] = 0
    if mask is not None:
        new[mask if replace_others else mask & (new == 0)] = oid
    return new


class Session:
    """Interactive segmentation of one image (see the module doc)."""

    def __init__(
        self,
        image: np.ndarray,
        backend: PromptableModel,
        *,
        profile: IntensityProfile | None = None,
        cache_size: int | None = None,
        history_limit: int | None = None,
    ) -> None:
        """``image`` (Y, X) or (Z, Y, X), any numeric dtype; ``cache_size``: embeddings kept (None = all slices);
        ``history_limit``: undo steps kept (None = all)."""
        arr = np.asarray(image)
        if arr.ndim not in (2, 3) or arr.size == 0 or arr.dtype.kind not in "biuf":
            raise InvalidInputError(
                f"image: expected a non-empty 2D (Y, X) or 3D (Z, Y, X) numeric array, got {arr.shape} {arr.dtype}"
            )
        if not isinstance(backend, PromptableModel):
            raise InvalidInputError(f"backend: expected a PromptableModel (name, embed, predict), got {backend!r}")
        for name, value in (("cache_size", cache_size), ("history_limit", history_limit)):
            if value is not None and not (_is_int(value) and value >= 1):
                raise InvalidInputError(f"{name}: expected None or an integer >= 1, got {value!r}")
        self.image_shape: tuple[int, ...] = tuple(int(s) for s in arr.shape)
        self._image = arr if arr.ndim == 3 else arr[None]
        nz, ny, nx = self._image.shape
        self.shape: tuple[int, int, int] = (int(nz), int(ny), int(nx))
        self.backend, self.profile = backend, profile
        self._cache: OrderedDict[int, Any] = OrderedDict()
        self._cache_size, self._history_limit = cache_size, history_limit
        self._labels = np.zeros(self.shape, np.uint32)
        self._prompts: dict[int, ObjectPrompt] = {}
        self._accepted: frozenset[int] = frozenset()
        self._next_id = 1
        self._undo: list[_Step] = []
        self._redo: list[_Step] = []

    # ---- read-only state ----------------------------------------------------------------------------------------

    @property
    def labels(self) -> np.ndarray:
        """The (Z, Y, X) uint32 label volume (Z = 1 for a 2D image), as a read-only view."""
        view = self._labels.view()
        view.flags.writeable = False
        return view

    @property
    def prompts(self) -> dict[int, ObjectPrompt]:
        """Object id -> its prompts (a copy; an object without prompts has an empty ObjectPrompt)."""
        return dict(self._prompts)

    @property
    def object_ids(self) -> tuple[int, ...]:
        return tuple(sorted(self._prompts))

    @property
    def accepted(self) -> frozenset[int]:
        return self._accepted

    @property
    def can_undo(self) -> bool:
        return bool(self._undo)

    @property
    def can_redo(self) -> bool:
        return bool(self._redo)

    def mask(self, object_id: int, z: int) -> NDArray[np.bool_]:
        """The current 2D mask of one object on slice ``z``."""
        oid, z = self._check_object(object_id), self._check_z(z)
        return np.asarray(self._labels[z] == oid)

    def label_image(self, *, accepted_only: bool = False, binary: bool = False) -> np.ndarray:
        """A copy of the labels in the image's own shape (2D for a 2D image): uint32 ids, or uint8 0/1 if ``binary``."""
        out = self._labels.copy()
        if accepted_only:
            out[~np.isin(out, sorted(self._accepted))] = 0
        if binary:
            out = (out > 0).astype(np.uint8)
        return out if len(self.image_shape) == 3 else out[0]

    def embedding(self, z: int) -> Any:
        """The backend's embedding of slice ``z`` (computed on first use, then cached)."""
        z = self._check_z(z)
        if z in self._cache:
            self._cache.move_to_end(z)
            return self._cache[z]
        logger.debug("embedding slice %d with backend %s", z, self.backend.name)
        emb = self.backend.embed(self._image[z], self.profile)
        self._cache[z] = emb
        if self._cache_size is not None and len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)
        return emb

    # ---- validation ---------------------------------------------------------------------------------------------

    def _check_object(self, object_id: Any) -> int:
        if not _is_int(object_id) or int(object_id) not in self._prompts:
            raise InvalidInputError(f"object_id: unknown object {object_id!r}; known ids: {list(self.object_ids)}")
        return int(object_id)

    def _check_z(self, z: Any) -> int:
        if not _is_int(z) or not 0 <= z < self.shape[0]:
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
        lengths = {len(q) for q in (*prompt.positive, *prompt.negative)} | (
            {len(prompt.box) - 2} if prompt.box else set()
        )
        if len(self.image_shape) == 3 or lengths == {3}:
            return _parse_object(prompt.to_dict(), self.shape)
        p = _parse_object(prompt.to_dict(), self.image_shape)
        lift = lambda pts: tuple((0.0, *q) for q in pts)  # noqa: E731
        return ObjectPrompt(p.id, lift(p.positive), lift(p.negative), None if p.box is None else (0.0, *p.box), p.text)

    # ---- history ------------------------------------------------------------------------------------------------

    def _commit(
        self,
        action: str,
        planes: dict[int, np.ndarray],
        prompts: dict[int, ObjectPrompt | None],
        accepted: frozenset[int] | None = None,
        next_id: int | None = None,
    ) -> None:
        diffs = []
        for z, new in sorted(planes.items()):
            old = self._labels[z]
            index = np.flatnonzero(old != new)
            diffs.append(_PlaneDiff(z, index, old.ravel()[index], new.ravel()[index]))
        step = _Step(
            action,
            tuple(diffs),
            tuple((oid, self._prompts.get(oid), p) for oid, p in sorted(prompts.items())),
            (self._accepted, self._accepted if accepted is None else accepted),
            (self._next_id, self._next_id if next_id is None else next_id),
        )
        self._apply(step, forward=True)
        self._undo.append(step)
        if self._history_limit is not None and len(self._undo) > self._history_limit:
            del self._undo[0]
        self._redo.clear()
        logger.debug("%s: %d slice(s), %d pixel(s) changed", action, len(diffs), sum(d.index.size for d in diffs))

    def _apply(self, step: _Step, forward: bool) -> None:
        for d in step.planes:
            np.put(self._labels[d.z], d.index, d.after if forward else d.before)
        for oid, before, after in step.prompts:
            value = after if forward else before
            if value is None:
                self._prompts.pop(oid, None)
            else:
                self._prompts[oid] = value
        self._accepted = step.accepted[1 if forward else 0]
        self._next_id = step.next_id[1 if forward else 0]

    def undo(self) -> bool:
        """Revert the last step; False when there is none."""
        if not self._undo:
            return False
        step = self._undo.pop()
        self._apply(step, forward=False)
        self._redo.append(step)
        return True

    def redo(self) -> bool:
        """Re-apply the last undone step; False when there is none (a new edit after an undo clears the redo list)."""
        if not self._redo:
            return False
        step = self._redo.pop()
        self._apply(step, forward=True)
        self._undo.append(step)
        return True

    # ---- edits --------------------------------------------------------------------------------------------------

    def _predict_plane(self, oid: int, z: int, prompt: ObjectPrompt) -> np.ndarray:
        p2 = prompt.on_slice(z)
        mask = None
        if p2.positive or p2.box is not None:
            result = self.backend.predict(self.embedding(z), p2)
            mask = np.asarray(result.mask, dtype=bool)
            if mask.shape != self.shape[1:]:
                raise InvalidInputError(
                    f"backend '{self.backend.name}': predicted a mask of shape {mask.shape} for a slice of shape "
                    f"{self.shape[1:]}"
                )
            logger.debug("object %d slice %d: %d px, score %.3f", oid, z, int(mask.sum()), result.score)
        return _paint(self._labels[z], oid, mask, replace_others=False)

    def _edit_prompt(self, action: str, new: ObjectPrompt, z: int | None = None) -> None:
        old = self._prompts.get(new.id, ObjectPrompt(new.id))
        candidates = set(old.slices()) | set(new.slices()) | ({z} if z is not None else set())
        affected = sorted(s for s in candidates if s == z or old.on_slice(s) != new.on_slice(s))
        planes = {s: self._predict_plane(new.id, s, new) for s in affected}
        next_id = max(self._next_id, new.id + 1)
        self._commit(action, planes, {new.id: new}, next_id=next_id)

    def new_object(self, object_id: int | None = None) -> int:
        """Create an object without prompts; its id is ``object_id`` or the next unused one. Returns the id."""
        if object_id is None:
            oid = self._next_id
        elif not _is_int(object_id) or object_id < 1 or int(object_id) in self._prompts:
            raise InvalidInputError(f"object_id: expected a new positive integer id, got {object_id!r}")
        else:
            oid = int(object_id)
        if oid > np.iinfo(np.uint32).max:
            raise InvalidInputError(f"object_id: {oid} does not fit in the uint32 label volume")
        self._commit("new_object", {}, {oid: ObjectPrompt(oid)}, next_id=max(self._next_id, oid + 1))
        return oid

    def delete_object(self, object_id: int) -> None:
        """Remove an object: its prompts, its pixels on every slice and its accepted mark."""
        oid = self._check_object(object_id)
        zs = np.flatnonzero((self._labels == oid).any(axis=(1, 2)))
        planes = {int(z): _paint(self._labels[z], oid, None, False) for z in zs}
        self._commit("delete_object", planes, {oid: None}, accepted=self._accepted - {oid})

    def set_prompt(self, prompt: ObjectPrompt) -> None:
        """Replace all prompts of one object (created when its id is new) and re-predict the slices that changed.
        Coordinates as the image: (z, y, x) for a stack, (y, x) or (z=0, y, x) for a 2D image."""
        new = self._lift(prompt)
        if new.id not in self._prompts and new.id > np.iinfo(np.uint32).max:
            raise InvalidInputError(f"prompt.id: {new.id} does not fit in the uint32 label volume")
        self._edit_prompt("set_prompt", new)

    def add_point(self, object_id: int, z: int, y: float, x: float, positive: bool = True) -> None:
        """Add a positive (or negative) click on slice ``z`` and re-predict that slice of the object."""
        oid, z = self._check_object(object_id), self._check_z(z)
        y, x = self._check_yx(y, x)
        old = self._prompts[oid]
        point = ((float(z), y, x),)
        pos, neg = (old.positive + point, old.negative) if positive else (old.positive, old.negative + point)
        self._edit_prompt("add_point", ObjectPrompt(oid, pos, neg, old.box, old.text), z)

    def remove_point(self, object_id: int, z: int, y: float, x: float) -> None:
        """Remove the object's point (positive or negative) on slice ``z`` nearest to ``(y, x)``; re-predict."""
        oid, z = self._check_object(object_id), self._check_z(z)
        y, x = self._check_yx(y, x)
        old = self._prompts[oid]
        found = [(math.hypot(p[1] - y, p[2] - x), sign, k) for sign, pts in ((1, old.positive), (0, old.negative))
                 for k, p in enumerate(pts) if round(p[0]) == z]  # fmt: skip
        if not found:
            raise InvalidInputError(f"z: object {oid} has no point on slice {z}")
        _, sign, k = min(found)
        pos = tuple(p for i, p in enumerate(old.positive) if not (sign == 1 and i == k))
        neg = tuple(p for i, p in enumerate(old.negative) if not (sign == 0 and i == k))
        self._edit_prompt("remove_point", ObjectPrompt(oid, pos, neg, old.box, old.text), z)

    def set_box(self, object_id: int, z: int, box: Sequence[float] | None) -> None:
        """Set the object's box to ``(y_min, x_min, y_max, x_max)`` on slice ``z`` (an object has one box: a box on
        another slice moves here and that slice is recomputed too), or remove it with ``None``."""
        oid, z = self._check_object(object_id), self._check_z(z)
        old = self._prompts[oid]
        if box is None:
            if old.box is None or round(old.box[0]) != z:
                raise InvalidInputError(f"box: object {oid} has no box on slice {z} to remove")
            new_box = None
        else:
            new_box = (float(z), *check_box(box, self.shape[1:], "box"))
        self._edit_prompt("set_box", ObjectPrompt(oid, old.positive, old.negative, new_box, old.text), z)

    def set_mask(self, object_id: int, z: int, mask: np.ndarray, *, replace_others: bool = False) -> None:
        """Put a 2D mask (a painted correction, a propagated result) for one object on slice ``z``: it replaces the
        object's pixels there and takes background only, or every pixel it covers with ``replace_others``."""
        oid, z = self._check_object(object_id), self._check_z(z)
        arr = np.asarray(mask)
        if arr.shape != self.shape[1:] or arr.dtype.kind not in "biu":
            raise InvalidInputError(
                f"mask: expected a bool or integer mask of shape {self.shape[1:]}, got {arr.shape} {arr.dtype}"
                + (" (threshold probabilities first)" if arr.dtype.kind == "f" else "")
            )
        self._commit("set_mask", {z: _paint(self._labels[z], oid, arr != 0, bool(replace_others))}, {})

    def accept(self, object_id: int | None = None) -> None:
        """Mark one object (all current objects when None) as accepted: exported with ``accepted_only=True``. It stays
        accepted through later edits (undo the accept to withdraw it)."""
        ids = set(self._prompts) if object_id is None else {self._check_object(object_id)}
        self._commit("accept", {}, {}, accepted=self._accepted | ids)

    # ---- save / load --------------------------------------------------------------------------------------------

    def save(self, folder: str | os.PathLike[str], *, overwrite: bool = False) -> Path:
        """Write the session folder atomically (see the module doc); an existing folder is replaced only with
        ``overwrite=True`` and only when it is a session folder or empty. The undo history is not saved."""
        out = Path(folder)
        if (
            out.exists()
            and overwrite
            and (not out.is_dir() or (any(out.iterdir()) and not (out / SESSION_FILE).exists()))
        ):
            raise InvalidInputError(f"folder: '{out}' exists and is not a session folder; refusing to replace it")
        with_prompts = [p for p in self._prompts.values() if p.positive or p.negative or p.box is not None or p.text]
        meta = {
            "format": FORMAT,
            "version": FORMAT_VERSION,
            "image": {
                "shape": list(self.image_shape),
                "dtype": str(self._image.dtype),
                "sha256": image_hash(self._image),
            },
            "backend": self.backend.name,
            "objects": list(self.object_ids),
            "accepted": sorted(self._accepted),
            "next_id": self._next_id,
            "prompts": {"objects": [p.to_dict() for p in sorted(with_prompts, key=lambda p: p.id)]},
            "labels": LABELS_FILE,
        }
        with atomic_output(out, overwrite=overwrite) as tmp:
            tmp.mkdir()
            np.savez_compressed(tmp / LABELS_FILE, labels=self._labels)
            (tmp / SESSION_FILE).write_text(json.dumps(meta, indent=1) + "\n")
        logger.info("saved session (%d objects) to %s", len(self._prompts), out)
        return out

    @classmethod
    def load(
        cls,
        folder: str | os.PathLike[str],
        image: np.ndarray,
        backend: PromptableModel,
        *,
        profile: IntensityProfile | None = None,
        cache_size: int | None = None,
        history_limit: int | None = None,
    ) -> Session:
        """Reopen a saved session on the same image (refused, naming ``image``, when it differs); empty history."""
        p = Path(folder)
        try:
            meta = json.loads((p / SESSION_FILE).read_text())
            with np.load(p / LABELS_FILE) as npz:
                labels = npz["labels"]
            if meta.get("format") != FORMAT or meta.get("version") != FORMAT_VERSION:
                raise ValueError(f"expected {FORMAT} version {FORMAT_VERSION}")
            saved, ids = meta["image"], [int(i) for i in meta["objects"]]
            accepted, next_id, objects = meta["accepted"], int(meta["next_id"]), meta["prompts"]["objects"]
        except FileNotFoundError as exc:
            raise FileFormatError(f"folder: '{p}' is not a session folder ({exc.filename} is missing)") from None
        except (ValueError, KeyError, TypeError, AttributeError, OSError) as exc:
            raise FileFormatError(f"folder: '{p}' holds no readable session: {exc}") from None
        session = cls(image, backend, profile=profile, cache_size=cache_size, history_limit=history_limit)
        got = (list(session.image_shape), str(session._image.dtype))
        if got != (saved["shape"], saved["dtype"]):
            raise InvalidInputError(
                f"image: shape {tuple(got[0])} {got[1]} differs from the session's image {tuple(saved['shape'])} "
                f"{saved['dtype']} ('{p}')"
            )
        if image_hash(session._image) != saved["sha256"]:
            raise InvalidInputError(f"image: its content differs from the image the session '{p}' was made on")
        if meta.get("backend") != backend.name:
            logger.warning(
                "session '%s' was made with backend %r, reopened with %r", p, meta.get("backend"), backend.name
            )
        if labels.shape != session.shape or labels.dtype != np.uint32:
            raise FileFormatError(f"'{p / LABELS_FILE}': expected uint32 labels of shape {session.shape}")
        stray = sorted(set(np.unique(labels).tolist()) - set(ids) - {0})
        if stray:
            raise FileFormatError(f"'{p / LABELS_FILE}': label values {stray[:10]} are not objects of the session")
        prompts = {o.id: o for o in (_parse_object(d, session.shape) for d in objects)}
        session._prompts = {i: prompts.get(i, ObjectPrompt(i)) for i in ids}
        session._labels = np.ascontiguousarray(labels)
        session._accepted = frozenset(int(i) for i in accepted)
        session._next_id = next_id
        return session

    # ---- outputs ------------------------------------------------------------------------------------------------

    def export_labels(
        self,
        path: str | os.PathLike[str],
        *,
        accepted_only: bool = True,
        binary: bool = False,
        spacing: Sequence[float] | None = None,
        unit: str | None = None,
        overwrite: bool = False,
    ) -> Path:
        """Write the label image with :func:`fmscope.io.write_image` (format by extension: ``NAME_label.tif``,
        ``.ome.zarr``...): uint32 ids, or uint8 0/1 with ``binary`` (see the module doc for fine-tuning)."""
        from fmscope.io import ImageMetadata, write_image

        data = self.label_image(accepted_only=accepted_only, binary=binary)
        if not data.any():
            logger.warning(
                "export_labels: no %sobject pixels; writing an empty label image", "accepted " * accepted_only
            )
        meta = ImageMetadata.for_array(data, spacing=tuple(spacing or ()), unit=unit, source="fmscope.session")
        return write_image(path, data, meta, overwrite=overwrite, labels=True)

    def morphometry(
        self,
        path: str | os.PathLike[str] | None = None,
        *,
        spacing: Sequence[float] | None = None,
        accepted_only: bool = False,
        overwrite: bool = False,
    ) -> list[ObjectMeasurement]:
        """Measure each object with pixels (accepted ones only if asked) with :func:`measure_objects`; ``spacing`` in
        the image's axis order, (z, y, x) or (y, x); the CSV is written atomically when ``path`` is given."""
        ndim = len(self.image_shape)
        if spacing is not None:
            spacing = tuple(check_number(s, "spacing") for s in spacing)
            if len(spacing) != ndim or any(s <= 0 for s in spacing):
                raise InvalidInputError(f"spacing: expected {ndim} positive values, got {spacing}")
            spacing = spacing if ndim == 3 else (1.0, *spacing)
        labels = self._labels
        if accepted_only:
            labels = np.where(np.isin(labels, sorted(self._accepted)), labels, 0)
        out = measure_objects(labels, self._image, spacing=spacing, accepted=self._accepted)
        if path is not None:
            write_morphometry(out, path, is_2d=ndim == 2, overwrite=overwrite)
        return out
