"""Checkpoints that resume exactly: model (student, teacher, heads, queues), optimiser, scheduler, step, RNG states
and data position, written atomically as ``step_XXXXXXXX.pt`` plus a ``latest`` pointer.

Only the newest ``keep_last`` step files are kept (default 1: a 300-step pretraining of ``unet-cpu`` otherwise keeps
three 157 MB files); a checkpoint marked ``best`` is also linked (hard link, else copied) as ``best.pt``, which the
rotation never deletes, so a caller that tracks a validation score keeps "the last one plus the best one"."""

from __future__ import annotations

import logging
import os
import random
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fmscope.errors import FileFormatError, InvalidInputError
from fmscope.utils.atomic import atomic_output

logger = logging.getLogger(__name__)

_NAME = re.compile(r"step_(\d{8})\.pt$")


def rng_state() -> dict[str, Any]:
    """Python, numpy and torch (CPU and CUDA) generator states."""
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


@dataclass(frozen=True)
class Checkpoint:
    path: Path
    step: int
    payload: dict[str, Any]


def checkpoint_path(folder: Path, step: int) -> Path:
    return folder / f"step_{step:08d}.pt"


BEST = "best.pt"


def save_checkpoint(
    folder: Path, step: int, payload: dict[str, Any], keep_last: int = 1, *, best: bool = False
) -> Path:
    """Write ``payload`` (plus ``step``) atomically, point ``latest`` at it and keep the newest ``keep_last`` step
    files (0: all of them). With ``best``, it also becomes ``best.pt`` (a hard link where the file system allows, so
    no second copy while it is also among the newest), kept whatever the rotation deletes."""
    if isinstance(keep_last, bool) or not isinstance(keep_last, int) or keep_last < 0:
        raise InvalidInputError(f"keep_last: expected an integer >= 0 (0: keep all), got {keep_last!r}")
    folder.mkdir(parents=True, exist_ok=True)
    path = checkpoint_path(folder, step)
    with atomic_output(path, overwrite=True) as tmp:
        torch.save({**payload, "step": step}, tmp)
    if best:
        with atomic_output(folder / BEST, overwrite=True) as tmp:
            try:
                os.link(path, tmp)
            except OSError:  # no hard links here (some network or FAT file systems): a copy
                shutil.copyfile(path, tmp)
    with atomic_output(folder / "latest", overwrite=True) as tmp:
        tmp.write_text(path.name + "\n")
    existing = sorted(p for p in folder.iterdir() if _NAME.search(p.name))
    for old in existing[:-keep_last] if keep_last > 0 else []:
        old.unlink(missing_ok=True)
    return path


def best_checkpoint(folder: str | os.PathLike[str]) -> Path | None:
    """The checkpoint last saved with ``best=True`` in ``folder``, or None."""
    path = Path(folder) / BEST
    return path if path.is_file() else None


def latest_checkpoint(folder: str | os.PathLike[str]) -> Path | None:
    """The newest checkpoint in ``folder`` (from ``latest``, else the highest step), or None."""
    root = Path(folder)
    pointer = root / "latest"
    if pointer.is_file():
        candidate = root / pointer.read_text().strip()
        if candidate.is_file():
            return candidate
    found = sorted(p for p in root.glob("step_*.pt") if _NAME.search(p.name)) if root.is_dir() else []
    return found[-1] if found else None


def load_checkpoint(path: str | os.PathLike[str], map_location: str | torch.device = "cpu") -> Checkpoint:
    """Read a checkpoint written by :func:`save_checkpoint` (FileFormatError naming it when unreadable)."""
    p = Path(path)
    try:
        payload = torch.load(p, map_location=map_location, weights_only=False)
    except Exception as exc:  # torch raises many types for truncated/corrupt files
        raise FileFormatError(f"checkpoint '{p}': cannot be read ({type(exc).__name__}: {exc})") from exc
    if not isinstance(payload, dict) or "step" not in payload:
        raise FileFormatError(f"checkpoint '{p}': not an fmscope checkpoint (no 'step')")
    return Checkpoint(p, int(payload["step"]), payload)
