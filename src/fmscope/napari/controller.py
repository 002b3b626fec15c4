"""What the dock widget does, without Qt: napari layer contents in, :class:`~fmscope.interactive.session.Session`
calls out.

The widget keeps one session per image layer and three layers beside it: positive points, negative points (Points
layers) and boxes (a Shapes layer) that hold the *current object's* prompts, and one Labels layer that shows the
session's labels and is the brush. :class:`SessionController` turns those layers' data (in the image's data
coordinates, ``(z, y, x)`` for a stack, ``(y, x)`` for a 2D image) into session edits and back: the algorithms all
live in :mod:`fmscope.interactive`; nothing here segments.

Checks. A layer of the wrong kind or dimensionality raises :class:`~fmscope.errors.InvalidInputError` naming the
layer before anything changes (the widget shows the message). With a session folder, every edit is on disk as it is
made (the session's journal), and reopening the folder on the same image restores objects, prompts and undo history.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from fmscope.errors import InvalidInputError
from fmscope.interactive.backends import make_backend
from fmscope.interactive.enhance import EnhanceConfig
from fmscope.interactive.prompts import ObjectPrompt
from fmscope.interactive.propagate import PropagationConfig
from fmscope.interactive.session import Session
from fmscope.interactive.session_store import is_session_folder
from fmscope.interactive.session_training import TrainingRound, round_config, train_round
from fmscope.models.shipped import DEFAULT_INIT
from fmscope.utils.progress import ProgressCallback

logger = logging.getLogger(__name__)

# the enhancement steps the widget switches on and off (EnhanceConfig fields; off = the step's neutral value)
ENHANCE_SWITCHES: dict[str, tuple[str, Any]] = {
    "bridge gaps": ("bridge", 0),
    "re-segment outliers": ("resegment", False),
    "fill missing slices": ("fill", False),
    "drop small pieces": ("min_size", 0),
}
SMALL_PIECE = 20  # voxels: the size below which "drop small pieces" removes a piece


def check_image(data: Any, name: str, *, rgb: bool = False, multiscale: bool = False) -> Any:
    """The array a session segments from an Image layer's ``data``: full resolution of a pyramid, 2D (Y, X) or 3D
    (Z, Y, X), one channel, numeric; refused naming the layer otherwise."""
    array = data[0] if multiscale else data
    shape = tuple(int(s) for s in np.shape(array))
    dtype = np.dtype(array.dtype if hasattr(array, "dtype") else np.asarray(array).dtype)  # never read a lazy one
    if rgb:
        raise InvalidInputError(f"layer '{name}': an RGB image; the widget segments one channel (split it first)")
    if len(shape) not in (2, 3):
        raise InvalidInputError(
            f"layer '{name}': expected a 2D (Y, X) or 3D (Z, Y, X) image, got {len(shape)}D {shape} "
            "(open a multichannel file with one layer per channel and pick one)"
        )
    if dtype.kind not in "biuf" or 0 in shape:
        raise InvalidInputError(f"layer '{name}': expected a non-empty numeric image, got {shape} {dtype}")
    return array


def _points(data: Any, ndim: int, name: str) -> np.ndarray:
    arr = np.asarray(data, dtype=float)
    if arr.size == 0:
        return np.zeros((0, ndim))
    if arr.ndim != 2 or arr.shape[1] != ndim:
        raise InvalidInputError(f"layer '{name}': expected points with {ndim} coordinates, got {arr.shape}")
    return arr


@dataclass(frozen=True)
class LayerPrompts:
    """The prompt layers' contents for one object, in image data coordinates: positive and negative points
    ``(N, ndim)`` and boxes (each a rectangle's vertices ``(4, ndim)``, as a napari Shapes layer holds them)."""

    positive: np.ndarray
    negative: np.ndarray
    boxes: tuple[np.ndarray, ...] = ()


class SessionController:
    """One image, one session, the object being edited (see the module doc)."""

    def __init__(self, session: Session, *, name: str = "image") -> None:
        self.session = session
        self.name = name
        self.ndim = len(session.image_shape)
        ids = session.object_ids
        self.current: int | None = ids[-1] if ids else None  # None: the next segment creates the object

    @classmethod
    def start(
        cls,
        data: Any,
        name: str,
        backend: str = "rf",
        *,
        folder: str | os.PathLike[str] | None = None,
        model_dir: str | os.PathLike[str] | None = None,
        checkpoint: str | os.PathLike[str] | None = None,
        device: str = "cpu",
        rgb: bool = False,
        multiscale: bool = False,
    ) -> SessionController:
        """A session on an Image layer's ``data`` with the named backend (see
        :func:`fmscope.interactive.backends.make_backend`); ``folder``: where it is kept (a session folder there is
        reopened, with its history; a new one is created otherwise); None: in memory only."""
        image = check_image(data, name, rgb=rgb, multiscale=multiscale)
        model = make_backend(backend, model_dir=model_dir, checkpoint=checkpoint, device=device)
        settings = {"backend": backend, "model_dir": None if model_dir is None else str(model_dir),
                    "checkpoint": None if checkpoint is None else str(checkpoint), "layer": name}  # fmt: skip
        try:
            if folder is not None and is_session_folder(folder):
                session = Session.open(folder, image, model)
            else:
                session = Session(image, model, folder=folder, settings=settings)
        except InvalidInputError as exc:
            raise InvalidInputError(f"layer '{name}', folder '{folder}': {exc}") from None
        logger.info("napari session on layer '%s' (%s, backend %s, folder %s)", name, image.shape, backend, folder)
        return cls(session, name=name)

    # ---- objects and prompts ------------------------------------------------------------------------------------

    def new_object(self) -> int:
        """A new empty object, made current."""
        self.current = self.session.new_object()
        return self.current

    def select(self, object_id: int) -> None:
        """Make an existing object current (its prompts go back into the prompt layers)."""
        if object_id not in self.session.prompts:
            raise InvalidInputError(
                f"object: {object_id} is not an object of this session ({list(self.session.object_ids)})"
            )
        self.current = int(object_id)

    def layer_prompts(self, object_id: int | None = None) -> LayerPrompts:
        """The object's prompts as the prompt layers show them (image data coordinates)."""
        oid = self.current if object_id is None else object_id
        if oid is None or oid not in self.session.prompts:  # no object yet (or undone away): empty layers
            return LayerPrompts(np.zeros((0, self.ndim)), np.zeros((0, self.ndim)))
        prompt = self.session.prompts[oid]
        cut = 0 if self.ndim == 3 else 1  # the session keeps (z, y, x); a 2D image's prompts at z = 0

        def pts(points: tuple[tuple[float, ...], ...]) -> np.ndarray:
            return np.array([p[cut:] for p in points], float).reshape(-1, self.ndim)

        boxes: tuple[np.ndarray, ...] = ()
        if prompt.box is not None:
            *z, y0, x0, y1, x1 = prompt.box
            corners = [(y0, x0), (y0, x1), (y1, x1), (y1, x0)]
            boxes = (np.array([[*z[: 1 - cut], y, x] for y, x in corners], float),)
        return LayerPrompts(pts(prompt.positive), pts(prompt.negative), boxes)

    def segment(self, layers: LayerPrompts, *, points_layer: str = "points", boxes_layer: str = "boxes") -> list[int]:
        """Make the layers' points and the last box the current object's prompts and re-predict the slices whose
        prompts changed (one undoable step). Returns the slices that hold the object afterwards."""
        pos = _points(layers.positive, self.ndim, f"{points_layer} +")
        neg = _points(layers.negative, self.ndim, f"{points_layer} -")
        box: tuple[float, ...] | None = None
        if layers.boxes:
            rect = np.asarray(layers.boxes[-1], float)
            if rect.ndim != 2 or rect.shape[1] != self.ndim:
                raise InvalidInputError(f"layer '{boxes_layer}': expected rectangles with {self.ndim} coordinates, "
                                        f"got vertices of shape {rect.shape}")  # fmt: skip
            if self.ndim == 3 and np.ptp(rect[:, 0]) > 0.5:
                raise InvalidInputError(f"layer '{boxes_layer}': the box spans several slices; draw it on one slice")
            lo, hi = rect[:, -2:].min(0), rect[:, -2:].max(0)
            z = (float(np.round(rect[0, 0])),) if self.ndim == 3 else ()
            box = (*z, float(lo[0]), float(lo[1]), float(hi[0]), float(hi[1]))
        if self.current is None or self.current not in self.session.prompts:  # set_prompt creates it, in the same step
            self.current = max(self.session.object_ids, default=0) + 1
        old = self.session.prompts.get(self.current, ObjectPrompt(self.current))
        as_tuples = lambda a: tuple(tuple(float(v) for v in p) for p in a)  # noqa: E731
        try:
            self.session.set_prompt(replace(old, positive=as_tuples(pos), negative=as_tuples(neg), box=box))
        except InvalidInputError as exc:  # the session names its own fields: say which layers they came from
            raise InvalidInputError(f"layers '{points_layer} +', '{points_layer} -', '{boxes_layer}': {exc}") from None
        return self.session.labelled_slices(self.current)

    # ---- the brush ----------------------------------------------------------------------------------------------

    def apply_labels(
        self,
        data: Any,
        *,
        layer: str = "labels",
        slices: Sequence[int] | None = None,
        shown: Mapping[int, int] | None = None,
    ) -> tuple[list[int], list[int]]:
        """Commit what was painted into the Labels layer, one step: each of ``slices`` (default all) whose labels
        differ from the session's becomes the painted plane (new ids become new objects). ``shown``: the session's
        plane version each slice of the layer showed; a slice the session changed since (a propagation or a training
        round committed meanwhile) is not committed, the layer was stale there. Returns (committed, stale) slices."""
        arr = np.asarray(data)
        if arr.shape != self.session.image_shape:
            raise InvalidInputError(
                f"layer '{layer}': labels of shape {arr.shape}, the image is {self.session.image_shape}"
            )
        if arr.dtype.kind not in "iu" or (arr.size and arr.min() < 0):
            raise InvalidInputError(f"layer '{layer}': expected non-negative integer labels, got {arr.dtype}")
        stack = arr if self.ndim == 3 else arr[None]
        zs = range(stack.shape[0]) if slices is None else sorted({int(z) for z in slices if 0 <= z < stack.shape[0]})
        with self.session.lock:
            changed = {z: stack[z] for z in zs if not np.array_equal(stack[z], self.session.plane(z))}
            stale = sorted(z for z in changed if shown is not None and shown.get(z) != self.session.plane_version(z))
            for z in stale:
                del changed[z]
            if changed:
                self.session.set_planes("paint", changed, create=True)  # one step, a painted new id included
        return sorted(changed), stale

    # ---- through the stack, review, history ---------------------------------------------------------------------

    def propagate(
        self,
        switches: Mapping[str, bool] | None = None,
        *,
        all_objects: bool = False,
        object_id: int | None = None,
        progress: ProgressCallback | None = None,
    ) -> dict[str, Any]:
        """Carry ``object_id`` (default the current object), or every object, through the stack; ``switches``: the
        :data:`ENHANCE_SWITCHES` on or off (all on by default)."""
        oid = self.current if object_id is None else object_id
        ids: list[int] | None = None
        if not all_objects:
            if oid is None or oid not in self.session.prompts:
                raise InvalidInputError("object: no current object to propagate; segment one first")
            ids = [oid]
        on = {k: True for k in ENHANCE_SWITCHES} | dict(switches or {})
        unknown = sorted(set(on) - set(ENHANCE_SWITCHES))
        if unknown:
            raise InvalidInputError(f"switches: unknown step(s) {unknown}; known: {list(ENHANCE_SWITCHES)}")
        off = {field: neutral for key, (field, neutral) in ENHANCE_SWITCHES.items() if not on[key]}
        enhancement = EnhanceConfig(**{"min_size": SMALL_PIECE, **off})
        return self.session.propagate(ids, propagation=PropagationConfig(), enhancement=enhancement, progress=progress)

    def accept(self, z: int | None = None) -> None:
        """Accept the current object on slice ``z`` (a key slice of propagation and training data), or whole."""
        if self.current is None or self.current not in self.session.prompts:
            raise InvalidInputError("object: no current object to accept; segment one first")
        if z is None:
            self.session.accept(self.current)
        else:
            self.session.accept_slice(self.current, z)

    def undo(self) -> bool:
        return self.session.undo()

    def redo(self) -> bool:
        return self.session.redo()

    def labels(self) -> np.ndarray:
        """The session's labels in the image's shape (uint32 ids), for the Labels layer."""
        return self.session.label_image()

    # ---- outputs ------------------------------------------------------------------------------------------------

    def export_labels(self, path: str | os.PathLike[str], *, accepted_only: bool = False,
                      scale: Sequence[float] | None = None) -> Path:  # fmt: skip
        """Write the labels (format by extension) with the layer's scale as spacing."""
        return self.session.export_labels(path, accepted_only=accepted_only, spacing=scale, overwrite=True)

    def morphometry(self, path: str | os.PathLike[str], *, scale: Sequence[float] | None = None) -> int:
        """Write the per-object measurements CSV; returns the number of objects measured."""
        return len(self.session.morphometry(path, spacing=scale, overwrite=True))

    def train(
        self,
        folder: str | os.PathLike[str],
        *,
        init: str | os.PathLike[str] = DEFAULT_INIT,
        overrides: Mapping[str, Any] | None = None,
        progress: ProgressCallback | None = None,
    ) -> TrainingRound:
        """Fine-tune a segmenter on the accepted slices and propose the others (one round of the loop, see
        :func:`fmscope.interactive.session_training.train_round`); ``folder`` must be new."""
        config = round_config(self.session.shape[1:], dict(overrides or {}))
        return train_round(self.session, folder, config, init=str(init), progress=progress)
