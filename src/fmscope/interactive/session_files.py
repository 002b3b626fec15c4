"""A session's files: reopening and copying its folder, exporting labels, prompts and measurements.

* :func:`open_session` reads a session folder (:mod:`fmscope.interactive.session_store`) back into a
  :class:`~fmscope.interactive.session.Session` with its undo and redo history, after checking that the image is the
  one the session was made on (shape, dtype and content fingerprint);
* :func:`save_session` writes a complete copy to a new folder (state and history), atomically as a whole;
* :func:`export_labels`, :func:`export_prompts` and :func:`session_morphometry` write what a user takes away: the
  label image (TIFF / OME-Zarr, ready for ``fmscope finetune``), the prompts JSON (loadable by ``fmscope segment
  --prompts``) and the per-object measurements (CSV).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from fmscope.errors import FileFormatError, InvalidInputError
from fmscope.intensity import IntensityProfile
from fmscope.interactive.cache import image_fingerprint
from fmscope.interactive.morphometry import ObjectMeasurement, measure_objects, write_morphometry
from fmscope.interactive.prompts import check_number, save_prompts
from fmscope.interactive.protocol import PromptableModel
from fmscope.interactive.session_store import SessionStore, Snapshot, is_session_folder
from fmscope.utils.atomic import atomic_output

if TYPE_CHECKING:
    from fmscope.interactive.history import Step
    from fmscope.interactive.session import Session

logger = logging.getLogger(__name__)


def _replay(snapshot: Snapshot, steps: dict[int, Step], head: int, session: Session) -> Snapshot:
    """The state after ``head`` steps, from a snapshot at another step and the steps in between."""
    session._restore(None, snapshot, [], [])
    if head >= snapshot.at:
        for i in range(snapshot.at + 1, head + 1):
            session._apply(steps[i], forward=True)
    else:
        for i in range(snapshot.at, head, -1):
            session._apply(steps[i], forward=False)
    return Snapshot(head, dict(session._planes), dict(session._prompts), session._meta)


def open_session(
    cls: type[Session],
    folder: str | os.PathLike[str],
    image: Any,
    backend: PromptableModel,
    *,
    autosave: bool = True,
    **kwargs: Any,
) -> Session:
    """See :meth:`Session.open <fmscope.interactive.session.Session.open>`."""
    store = SessionStore.open(folder)
    saved = store.header.get("image", {})
    if kwargs.get("profile") is None and isinstance(store.header.get("profile"), dict):
        try:  # the window the session was made with (and no pass over a large volume to fit it again)
            kwargs["profile"] = IntensityProfile.from_dict(store.header["profile"])
        except (KeyError, TypeError, ValueError) as exc:
            raise FileFormatError(f"'{store.folder}': the stored intensity window is not readable ({exc})") from None
    session = cls(image, backend, **kwargs)
    got = (list(session.image_shape), session.dtype.name)
    if got != (saved.get("shape"), saved.get("dtype")):
        raise InvalidInputError(
            f"image: shape {tuple(got[0])} {got[1]} differs from the session's image {tuple(saved.get('shape', ()))} "
            f"{saved.get('dtype')} ('{store.folder}')"
        )
    if image_fingerprint(image) != saved.get("fingerprint"):
        raise InvalidInputError(f"image: its content differs from the image the session '{store.folder}' was made on")
    if store.header.get("backend") != backend.name:
        logger.warning("session '%s' was made with backend %r, reopened with %r", store.folder,
                       store.header.get("backend"), backend.name)  # fmt: skip
    steps = store.read_steps(session.shape)
    state = store.state
    current = _replay(store.read_snapshot(session.shape), steps, state.head, session)
    undo = [steps[i] for i in range(state.first, state.head + 1)]
    redo = [steps[i] for i in range(state.count, state.head, -1)]
    session._restore(store if autosave else None, current, undo, redo)
    session._snapshot_at = -1  # the snapshot on disk may lie elsewhere: write one before the journal is cut
    if autosave:
        session._write_snapshot()
    session._revision = state.revision
    logger.info("reopened session '%s': %d object(s), %d undo and %d redo step(s)", store.folder,
                len(session.object_ids), len(undo), len(redo))  # fmt: skip
    return session


def save_session(session: Session, folder: str | os.PathLike[str], *, overwrite: bool = False) -> Path:
    """See :meth:`Session.save <fmscope.interactive.session.Session.save>`."""
    out = Path(folder)
    if out.exists() and overwrite and (not out.is_dir() or (any(out.iterdir()) and not is_session_folder(out))):
        raise InvalidInputError(f"folder: '{out}' exists and is not a session folder; refusing to replace it")
    with session.lock, atomic_output(out, overwrite=overwrite) as tmp:
        header = {} if session._store is None else dict(session._store.header)
        if "image" not in header:  # an in-memory session: its image was never fingerprinted
            image = session._image if len(session.image_shape) == 3 else session._image[0]
            header["image"] = {"shape": list(session.image_shape), "dtype": session.dtype.name,
                               "fingerprint": image_fingerprint(image)}  # fmt: skip
        header.update({"backend": session.backend.name, "profile": session.profile.to_dict()})
        for key in ("format", "version"):
            header.pop(key, None)
        store = SessionStore.create(tmp, header)
        undo, redo = list(session._undo), list(reversed(session._redo))
        for step in (*undo, *redo):
            store.record(step)
        store.move(len(undo))
        store.write_snapshot(Snapshot(len(undo), dict(session._planes), dict(session._prompts), session._meta))
    logger.info("saved session (%d objects, %d steps) to %s", len(session.object_ids), len(undo) + len(redo), out)
    return out


def export_labels(
    session: Session,
    path: str | os.PathLike[str],
    *,
    accepted_only: bool = True,
    binary: bool = False,
    spacing: Sequence[float] | None = None,
    unit: str | None = None,
    overwrite: bool = False,
) -> Path:
    """Write the label image with :func:`fmscope.io.write_image` (format by extension: ``NAME_label.tif``,
    ``.ome.zarr``...): uint32 ids, or uint8 0/1 with ``binary`` (for fine-tuning a foreground segmenter)."""
    from fmscope.io import ImageMetadata, write_image

    data = session.label_image(accepted_only=accepted_only, binary=binary)
    if not data.any():
        logger.warning("export_labels: no %sobject pixels; writing an empty label image", "accepted " * accepted_only)
    meta = ImageMetadata.for_array(data, spacing=tuple(spacing or ()), unit=unit, source="fmscope.session")
    return write_image(path, data, meta, overwrite=overwrite, labels=True)


def export_prompts(session: Session, path: str | os.PathLike[str], *, overwrite: bool = False) -> Path:
    """Write the prompts JSON (objects with prompts; 2D coordinates for a 2D image), loadable by ``fmscope segment
    --prompts`` and :func:`~fmscope.interactive.prompts.load_prompts`."""
    from fmscope.interactive.prompts import ObjectPrompt, Stroke

    with session.lock:
        prompts = [p for _, p in sorted(session.prompts.items()) if not p.is_empty]
    if len(session.image_shape) == 2:  # the session keeps z = 0; a 2D image's prompts file has (y, x)
        flat = lambda pts: tuple(q[1:] for q in pts)  # noqa: E731
        prompts = [
            ObjectPrompt(
                p.id,
                flat(p.positive),
                flat(p.negative),
                None if p.box is None else p.box[1:],
                p.text,
                tuple(Stroke(flat(s.points), s.width, s.positive) for s in p.strokes),
            )
            for p in prompts
        ]
    return save_prompts(path, prompts, overwrite=overwrite)


def session_morphometry(
    session: Session,
    path: str | os.PathLike[str] | None = None,
    *,
    spacing: Sequence[float] | None = None,
    accepted_only: bool = False,
    overwrite: bool = False,
) -> list[ObjectMeasurement]:
    """Measure each object with pixels (accepted ones only if asked) with :func:`measure_objects`; ``spacing`` in
    the image's axis order, (z, y, x) or (y, x); the CSV is written atomically when ``path`` is given."""
    ndim = len(session.image_shape)
    if spacing is not None:
        spacing = tuple(check_number(s, "spacing") for s in spacing)
        if len(spacing) != ndim or any(s <= 0 for s in spacing):
            raise InvalidInputError(f"spacing: expected {ndim} positive values, got {spacing}")
        spacing = spacing if ndim == 3 else (1.0, *spacing)
    with session.lock:
        labels = session.labels
        accepted = session.accepted
    if accepted_only:
        labels = np.where(np.isin(labels, sorted(accepted)), labels, 0)
    out = measure_objects(labels, LazySlices(session), spacing=spacing, accepted=accepted)
    if path is not None:
        write_morphometry(out, path, is_2d=ndim == 2, overwrite=overwrite)
    return out


class LazySlices:
    """The session's image indexed like an array, read slice by slice (regionprops' bounding-box crops)."""

    def __init__(self, session: Session) -> None:
        self.session = session

    def __getitem__(self, key: Any) -> np.ndarray:
        return np.asarray(self.session._image[key])
