"""From corrections to a model: the masks a person accepted in a session become training data (as Cellpose 2 and
micro-sam do), for ``fmscope finetune seg --from-session SESSION_DIR --image IMAGE``.

A slice is training data when a person accepted it: an object accepted on that slice (``accept_slice``: the app's
"accept slice") or an object accepted whole (``accept``) with pixels there. Its mask is the union of those accepted
objects on that slice (foreground 1, the rest 0: on an accepted slice, what is not accepted is taken as background).
The session is reopened on the image it was made on (a different image is refused, by shape, dtype and content),
read-only: nothing in the session folder changes. The accepted slices are split by Z into training and validation
slices (every k-th to validation; one accepted slice trains and validates), and the label stack is written as
``OUT.accepted.tif`` beside the run folder, so that the run can be resumed and its data inspected (a resume checks
the slices, not their content: after editing the masks, start a new run).
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fmscope.config import from_dict
from fmscope.data.labelled import LabelledSet, stack_slices
from fmscope.engine.run_folder import check_run_folder
from fmscope.errors import InvalidInputError, OutputExistsError
from fmscope.interactive.rf_backend import RandomForestPrompter
from fmscope.interactive.session import Session
from fmscope.io import ImageMetadata, read_image, write_image
from fmscope.models.shipped import DEFAULT_INIT
from fmscope.tasks.config import FinetuneConfig
from fmscope.tasks.finetune import RESULTS, FinetuneResult, finetune
from fmscope.tasks.model import load_task_model
from fmscope.utils.progress import ProgressCallback, sub_progress

logger = logging.getLogger(__name__)


def accepted_masks(session: Session) -> dict[int, np.ndarray]:
    """Slice index -> uint8 (Y, X) mask of the accepted objects there (see the module doc); empty when none."""
    by_slice: dict[int, set[int]] = {}
    for oid, z in session.accepted_slices:
        by_slice.setdefault(z, set()).add(oid)
    whole = set(session.accepted)
    if whole:
        labels = session.labels
        for z in range(labels.shape[0]):
            present = whole & {int(v) for v in np.unique(labels[z])}
            if present:
                by_slice.setdefault(z, set()).update(present)
    return {z: np.isin(session.plane(z), sorted(ids)).astype(np.uint8) for z, ids in sorted(by_slice.items())}


def training_masks(session: Session, name: str = "the session") -> dict[int, np.ndarray]:
    """:func:`accepted_masks`, refused for a 2D session or a session with none accepted (``name`` says which)."""
    if len(session.image_shape) != 3:
        raise InvalidInputError(f"{name} is a session of a 2D image; export its labels (Export) and train on them")
    masks = accepted_masks(session)
    if not masks:
        raise InvalidInputError(
            f"{name} has no accepted mask; accept the slices that are right (the app's Accept slice, or "
            "Session.accept_slice) and train again"
        )
    return masks


def split_slices(zs: list[int], val_fraction: float) -> tuple[list[int], list[int]]:
    """Training and validation slices: every k-th accepted slice validates (k = 1 / val_fraction), at least one
    trains; a single slice is both (said in the log)."""
    if not 0 < val_fraction < 1:
        raise InvalidInputError(f"val_fraction: expected a value in (0, 1), got {val_fraction!r}")
    if len(zs) == 1:
        logger.warning("one accepted slice (z=%d): it trains and validates; accept more for a fair validation", zs[0])
        return zs, zs
    step = max(2, round(1 / val_fraction))
    val = zs[step - 1 :: step] or [zs[-1]]
    return [z for z in zs if z not in val], val


def session_training_data(
    session_dir: str | os.PathLike[str],
    image: str | os.PathLike[str],
    labels_out: str | os.PathLike[str],
    *,
    val_fraction: float = 0.2,
    overwrite: bool = False,
) -> tuple[LabelledSet, LabelledSet]:
    """Training and validation sets of the accepted slices of a session (see the module doc); writes the label
    stack to ``labels_out``.

    Raises:
        InvalidInputError: a 2D session, no accepted mask, an image other than the session's.
        FileFormatError: not a session folder, an unreadable image.
    """
    data = read_image(image).data
    session = Session.open(session_dir, data, RandomForestPrompter(), autosave=False)
    masks = training_masks(session, f"session '{session_dir}'")
    stack = np.zeros(session.image_shape, np.uint8)
    for z, mask in masks.items():
        stack[z] = mask
    write_image(labels_out, stack, ImageMetadata.for_array(stack, axes="ZYX"), labels=True, overwrite=overwrite)
    train_z, val_z = split_slices(sorted(masks), val_fraction)
    logger.info("session '%s': %d accepted slice(s), training on %s, validating on %s", session_dir, len(masks),
                train_z, val_z)  # fmt: skip
    return stack_slices(image, labels_out, train_z), stack_slices(image, labels_out, val_z)


def finetune_from_session(
    config: FinetuneConfig,
    session_dir: str | os.PathLike[str],
    image: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    init: str | Path = DEFAULT_INIT,
    overwrite: bool = False,
    resume: bool = False,
    progress: ProgressCallback | bool | None = None,
    **options: Any,
) -> FinetuneResult:
    """Fine-tune a 2D segmenter on the accepted slices of a session (from the shipped backbone by default) into
    ``out``; ``options`` go to :func:`session_training_data`."""
    if config.task != "segment":
        raise InvalidInputError(f"--from-session: accepted masks make segmentation data, not {config.task}")
    out = Path(out)
    if not resume:  # refuse an occupied --out before writing the label stack beside it
        check_run_folder(out, overwrite=overwrite, results=RESULTS, hint="--overwrite or --resume")
    labels_out = out.with_name(out.name + ".accepted.tif")
    train, val = session_training_data(session_dir, image, labels_out, overwrite=overwrite or resume, **options)
    return finetune(config, train, val, out, init=init, overwrite=overwrite, resume=resume, progress=progress)


# ---- a round of the loop: train on what is accepted, propose the rest ----------------------------------------------

ROUND_ACTION = "train_proposals"
ROUND_SETTINGS: dict[str, Any] = {  # a round's fine-tuning on a CPU: about a minute (README, human-in-the-loop table)
    "model": "unet-cpu", "epochs": 20, "steps_per_epoch": 10, "freeze_epochs": 3, "patience": 8,
}  # fmt: skip
LARGEST_PATCH = 128


def round_config(plane_shape: tuple[int, ...], overrides: dict[str, Any] | None = None) -> FinetuneConfig:
    """The fine-tuning of a round: :data:`ROUND_SETTINGS` with ``overrides`` (FinetuneConfig keys, refused when
    unknown), on square patches of at most :data:`LARGEST_PATCH` that fit the slices (``plane_shape``)."""
    side = max(16, min(LARGEST_PATCH, min(plane_shape) // 16 * 16))
    config = from_dict(FinetuneConfig, {**ROUND_SETTINGS, "patch_size": [side, side], **(overrides or {})})
    if config.task != "segment":
        raise InvalidInputError(f"task: a round trains a segmenter of the accepted labels, got {config.task!r}")
    return config


@dataclass(frozen=True)
class TrainingRound:
    """One round of the loop: the model it trained (``folder/model``), on which slices, its best validation Dice, the
    object that received the proposals and the slices proposed (empty without proposals)."""

    folder: Path
    model_dir: Path
    trained_on: tuple[int, ...]
    validated_on: tuple[int, ...]
    best_score: float
    object_id: int | None
    proposed: tuple[int, ...]
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "folder": str(self.folder), "model_dir": str(self.model_dir), "trained_on": list(self.trained_on),
            "validated_on": list(self.validated_on), "best_score": self.best_score, "object": self.object_id,
            "proposed": list(self.proposed), "seconds": round(self.seconds, 2),
        }  # fmt: skip


def proposal_target(session: Session, object_id: int | None = None) -> int | None:
    """The object that receives proposals: ``object_id`` when given, else the one object accepted on slices, else
    None (the proposals become a new object). An object accepted whole never receives them: every slice it has pixels
    on counts as accepted, so its proposals would become training data nobody reviewed."""
    if object_id is not None:
        if object_id not in session.prompts:
            raise InvalidInputError(f"object: {object_id!r} is not an object of this session")
        if object_id in session.accepted:
            raise InvalidInputError(f"object: {object_id} is accepted whole; its proposals would count as accepted")
        return int(object_id)
    accepted = {oid for oid, _ in session.accepted_slices}
    return next(iter(accepted)) if len(accepted) == 1 and not accepted & set(session.accepted) else None


def train_round(
    session: Session,
    folder: str | os.PathLike[str],
    config: FinetuneConfig,
    *,
    init: str | Path = DEFAULT_INIT,
    object_id: int | None = None,
    propose: bool = True,
    val_fraction: float = 0.2,
    progress: ProgressCallback | None = None,
) -> TrainingRound:
    """Fine-tune a 2D segmenter on the accepted slices of an open session, then predict every slice with nothing
    accepted and put the predictions into the session as proposals (one undoable step, :data:`ROUND_ACTION`).

    ``folder`` (new) receives ``data/`` (the accepted slices of the image and their masks, (k, Y, X) TIFFs: the
    training data, inspectable) and ``model/`` (the run folder). The proposals go to :func:`proposal_target`: its
    pixels on each proposed slice are replaced by the prediction (pixels of other objects are kept, as for every
    edit); slices accepted or edited while the round ran are left alone. A failure or a cancel (``progress``
    raising) removes ``folder`` and changes nothing in the session.
    """
    if config.task != "segment":
        raise InvalidInputError(f"task: accepted masks make segmentation data, not {config.task}")
    t0 = time.perf_counter()
    folder = Path(folder)
    target = proposal_target(session, object_id)
    with session.lock:
        masks = training_masks(session)
    zs = sorted(masks)
    train_z, val_z = split_slices(zs, val_fraction)
    images = np.stack([session.image_slice(z) for z in zs])  # the image never changes: read outside the lock
    try:
        folder.mkdir(parents=True)
    except FileExistsError:
        raise OutputExistsError(f"folder: '{folder}' exists; a round writes a new folder") from None
    try:
        data = folder / "data"
        data.mkdir()
        labels = np.stack([masks[z] for z in zs])
        write_image(data / "image.tif", images, ImageMetadata.for_array(images, axes="ZYX"))
        write_image(data / "labels.tif", labels, ImageMetadata.for_array(labels, axes="ZYX"), labels=True)
        train, val = (stack_slices(data / "image.tif", data / "labels.tif", [zs.index(z) for z in part])
                      for part in (train_z, val_z))  # fmt: skip
        logger.info("training round in '%s': training on %s, validating on %s", folder, train_z, val_z)
        result = finetune(config, train, val, folder / "model", init=init,
                          progress=sub_progress(progress, "training"))  # fmt: skip
        proposed: tuple[int, ...] = ()
        if propose:
            target, proposed = _propose(session, result.model_dir, config.device, target, progress)
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    return TrainingRound(folder, result.model_dir, tuple(train_z), tuple(val_z), result.best_score, target, proposed,
                         time.perf_counter() - t0)  # fmt: skip


def _propose(
    session: Session, model_dir: Path, device: str, target: int | None, progress: ProgressCallback | None
) -> tuple[int | None, tuple[int, ...]]:
    """Predict the slices with nothing accepted and commit them as one step into ``target`` (or, when it is None or
    was deleted or accepted whole meanwhile, a new object); returns the object and the slices written."""
    from fmscope.tasks.predict import predict_array
    from fmscope.utils.device import resolve_device

    dev = resolve_device(device)
    model = load_task_model(model_dir, task="segment", map_location=dev)
    with session.lock:
        accepted = set(accepted_masks(session))
        todo = [z for z in range(session.shape[0]) if z not in accepted]
        versions = {z: session.plane_version(z) for z in todo}
    predicted: dict[int, np.ndarray] = {}
    for k, z in enumerate(todo):
        if progress is not None:
            progress(k, len(todo), f"proposing slice {z}")
        scores = predict_array(model, session.image_slice(z).astype(np.float32), device=dev)
        predicted[z] = np.asarray(scores).argmax(0) == 1
    if progress is not None:  # the last call that may cancel: nothing is committed before it
        progress(len(todo), len(todo), "proposals done")
    with session.lock:  # a slice accepted or edited meanwhile keeps what the person did
        now = set(accepted_masks(session))
        predicted = {z: m for z, m in predicted.items() if z not in now and session.plane_version(z) == versions[z]}
        if target is not None and target in session.prompts and target not in session.accepted:
            if predicted:
                session.set_masks(ROUND_ACTION, {target: predicted})
            return target, tuple(sorted(predicted))
        predicted = {z: m for z, m in predicted.items() if m.any()}  # a new object: only slices where it is
        if not predicted:
            return None, ()
        new = session.add_objects(ROUND_ACTION, {z: m.astype(np.uint32) for z, m in predicted.items()})
        return new[0], tuple(sorted(predicted))
