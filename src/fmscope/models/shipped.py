"""Pretrained backbones shipped inside the package (``fmscope/pretrained/NAME/``), usable offline by name.

Each is an ordinary model folder (``config.json`` + ``model.safetensors``) with ``MODEL_CARD.md`` (data and their
licences, the command, steps, wall time, measured probes and benchmark gains) and ``corpus.json`` (every pretraining
volume with its content digest). Wherever a model folder is taken (``fmscope finetune --init``, the ``fm`` backend's
``--model-dir``, the benchmark's ``init``), a shipped name works too. A shipped name (a string) wins over a local
folder of the same name; a string that looks like a path (a ``/``, a leading ``.`` or ``~``) and a ``Path`` object are
paths.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import overload

from fmscope.errors import FileFormatError

SHIPPED_ROOT = Path(__file__).resolve().parent.parent / "pretrained"
CARD_FILE = "MODEL_CARD.md"
DEFAULT_INIT = "lsm-unet-cpu"  # the shipped backbone a session's model starts from (app, train_round)


@dataclass(frozen=True)
class ShippedModel:
    """One shipped backbone: name, folder, the one-line summary of its card, its size on disk."""

    name: str
    folder: Path
    summary: str
    architecture: str
    size_mb: float


def shipped_names() -> tuple[str, ...]:
    """Names of the shipped backbones (sorted)."""
    if not SHIPPED_ROOT.is_dir():
        return ()
    return tuple(sorted(p.name for p in SHIPPED_ROOT.iterdir() if (p / "config.json").is_file()))


def _looks_like_path(text: str) -> bool:
    return "/" in text or os.sep in text or text.startswith((".", "~"))


@overload
def resolve_model_dir(name_or_path: str | os.PathLike[str]) -> Path: ...
@overload
def resolve_model_dir(name_or_path: str | os.PathLike[str], *, must_exist: bool) -> Path | None: ...
def resolve_model_dir(name_or_path: str | os.PathLike[str], *, must_exist: bool = True) -> Path | None:
    """The folder of a shipped name or a model folder path.

    Raises :class:`FileFormatError` (when ``must_exist``) for a name that is neither, listing the shipped names;
    returns ``None`` instead when ``must_exist`` is False.
    """
    text = os.fspath(name_or_path)
    # only a string is a name: a Path (e.g. Path('./name'), which prints as 'name') is always a path
    if isinstance(name_or_path, str) and not _looks_like_path(text) and text in shipped_names():
        return SHIPPED_ROOT / text
    path = Path(text).expanduser()
    if path.is_dir():
        return path
    if not must_exist:
        return None
    shipped = ", ".join(shipped_names()) or "none in this installation"
    raise FileFormatError(
        f"model folder '{text}': no such folder, and not a shipped pretrained model (shipped: {shipped}; "
        "`fmscope models` lists them)"
    )


def shipped_models() -> list[ShippedModel]:
    """Every shipped backbone with its card's first paragraph line and its size."""
    from fmscope.models.serialization import read_model_config

    out = []
    for name in shipped_names():
        folder = SHIPPED_ROOT / name
        card = folder / CARD_FILE
        if not card.is_file():
            raise FileFormatError(f"shipped model '{name}': {CARD_FILE} is missing from '{folder}'")
        lines = [line.strip() for line in card.read_text(encoding="utf-8").splitlines()]
        summary = next((line for line in lines if line and not line.startswith("#")), "")
        config, _ = read_model_config(folder)
        size = sum(p.stat().st_size for p in folder.iterdir() if p.is_file()) / 1e6
        out.append(ShippedModel(name, folder, summary, config.architecture, round(size, 1)))
    return out
