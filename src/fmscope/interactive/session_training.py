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
from pathlib import Path
from typing import Any

import numpy as np

from fmscope.data.labelled import LabelledSet, stack_slices
from fmscope.engine.run_folder import check_run_folder
from fmscope.errors import InvalidInputError
from fmscope.interactive.rf_backend import RandomForestPrompter
from fmscope.interactive.session import Session
from fmscope.io import ImageMetadata, read_image, write_image
from fmscope.tasks.config import FinetuneConfig
from fmscope.tasks.finetune import RESULTS, FinetuneResult, finetune
from fmscope.utils.progress import ProgressCallback

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
    if len(session.image_shape) != 3:
        raise InvalidInputError(
            f"--from-session: '{session_dir}' is a session of a 2D image; export its labels (Export) and use --train"
        )
    masks = accepted_masks(session)
    if not masks:
        raise InvalidInputError(
            f"--from-session: session '{session_dir}' has no accepted mask; accept the slices that are right (the "
            "app's Accept slice, or Session.accept_slice) and run again"
        )
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
    init: str | Path = "lsm-unet-cpu",
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
