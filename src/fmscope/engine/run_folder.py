"""Run folders of training commands: when a folder may be reused, and what an interruption leaves.

A run folder that holds nothing worth keeping (a ``config.yaml`` and logs written before the first checkpoint or model,
as Ctrl-C or a scheduler's SIGTERM leaves it) never blocks a rerun: it is cleared with a log line. A folder with a
checkpoint or a model is refused unless ``overwrite`` (or resumed); a folder that is not an fmscope run folder is never
cleared without ``overwrite``.
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from fmscope.errors import Interrupted, InvalidInputError, OutputExistsError

logger = logging.getLogger(__name__)

# What a run writes before it has anything worth keeping (config, logs, curves).
_LOGS = frozenset({"config.yaml", "metrics.csv", "tensorboard", "loss_curves.png", "curves.png", "summary.json"})


def has_results(out: Path, results: tuple[str, ...]) -> bool:
    """Whether the run folder ``out`` holds any of ``results`` (folders count only when not empty)."""
    for name in results:
        path = out / name
        if path.is_file() or (path.is_dir() and any(path.iterdir())):
            return True
    return False


def check_run_folder(out: Path, *, overwrite: bool, results: tuple[str, ...], hint: str = "--overwrite") -> bool:
    """Whether a new run may use ``out`` (see :func:`prepare_run_folder`), without touching it: raises when it may
    not; returns True when an existing folder would be cleared first."""
    if out.exists() and not out.is_dir():
        raise OutputExistsError(f"output folder '{out}' is a file")
    if not (out.is_dir() and any(out.iterdir())):
        return False
    names = {p.name for p in out.iterdir()}
    leftover = "config.yaml" in names and names <= _LOGS | set(results) and not has_results(out, results)
    if not (leftover or overwrite):
        raise OutputExistsError(f"output folder '{out}' is not empty; pass {hint}")
    return True


def prepare_run_folder(out: Path, *, overwrite: bool, results: tuple[str, ...], hint: str = "--overwrite") -> Path:
    """Create the run folder ``out`` (and missing parents) for a new run.

    ``results`` names what makes a run worth keeping (``checkpoints``, ``model``). An existing folder is replaced when
    ``overwrite``; cleared when it is a run folder left without results (only ``config.yaml`` and logs); refused
    otherwise, naming ``hint`` (the option that would allow it).
    """
    if check_run_folder(out, overwrite=overwrite, results=results, hint=hint):
        if not overwrite:
            logger.warning(
                "'%s' holds only the config and logs of a run that stopped before saving; starting over", out
            )
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    if not os.access(out, os.W_OK):
        raise InvalidInputError(f"output folder '{out}' is not writable")
    return out


def remove_if_empty_run(out: Path, results: tuple[str, ...]) -> bool:
    """After a failure before anything was saved: remove ``out`` when it holds only the config and logs of this run."""
    if not out.is_dir() or has_results(out, results) or not {p.name for p in out.iterdir()} <= _LOGS | set(results):
        return False
    shutil.rmtree(out, ignore_errors=True)
    return True


@contextmanager
def run_folder(
    out: Path,
    *,
    overwrite: bool,
    results: tuple[str, ...],
    interrupted: Callable[[Path], str],
    resume: bool = False,
    hint: str = "--overwrite",
) -> Iterator[Path]:
    """The run folder of one training run, from creation (:func:`prepare_run_folder`; an existing folder as it is
    when ``resume``) to its end. A failure before anything worth keeping was saved removes the folder (a bad input
    found late leaves nothing behind); Ctrl-C or SIGTERM becomes :class:`Interrupted` with the hint
    ``interrupted(out)`` (what was kept, how to go on)."""
    if not resume:
        prepare_run_folder(out, overwrite=overwrite, results=results, hint=hint)
    try:
        yield out
    except KeyboardInterrupt as exc:
        if not resume:
            remove_if_empty_run(out, results)
        raise Interrupted(interrupted(out), exc) from None
    except BaseException:
        if not resume:
            remove_if_empty_run(out, results)
        raise
