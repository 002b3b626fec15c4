"""The promptable backends by name: a table of :class:`BackendSpec` that builds them (:func:`make_backend`) and says,
without building anything, whether each can run here and why not (:func:`backend_status`).

* ``rf`` needs nothing: a random forest trained live from the prompts on filter features;
* ``fm`` needs an fmscope model folder (``model_dir``: ``fmscope pretrain`` / ``fmscope finetune``);
* ``sam`` and ``sam2`` load a local checkpoint (``checkpoint``, or the known file name of ``model`` inside
  ``$FMSCOPE_CACHE``; see ``fmscope models``). Their packages are imported only when asked for.

The CLI's ``--method`` choices and help, and the web app's backend list, are read from :data:`BACKENDS`.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from fmscope.errors import InvalidInputError
from fmscope.interactive.checkpoints import cache_dir, checkpoint_rows

if TYPE_CHECKING:
    from fmscope.interactive.protocol import PromptableModel


@dataclass(frozen=True)
class BackendOptions:
    """What a backend is built from: a checkpoint file (sam, sam2), a model name (sam: vit_b|vit_l|vit_h; sam2:
    sam2.1_hiera_tiny|small|base_plus|large), a model folder (fm), a torch device, and semantic (phase) mode (the
    forest backends keep touching regions together instead of splitting them into instances)."""

    checkpoint: str | os.PathLike[str] | None = None
    model: str | None = None
    model_dir: str | os.PathLike[str] | None = None
    device: str = "cpu"
    semantic: bool = False


@dataclass(frozen=True)
class BackendStatus:
    """Whether a backend can be built here: ``available``, and otherwise the ``reason`` (what to install or supply);
    ``models`` lists its known model names that are present (sam, sam2)."""

    name: str
    summary: str
    needs: str
    abilities: tuple[str, ...]
    available: bool
    reason: str = ""
    models: tuple[str, ...] = ()


@dataclass(frozen=True)
class BackendSpec:
    """One backend: its name, a one-line summary, what it needs, its optional abilities (see
    :func:`fmscope.interactive.protocol.abilities`), its default model and how to build it."""

    name: str
    summary: str
    needs: str
    abilities: tuple[str, ...]
    build: Callable[[BackendOptions], PromptableModel]
    default_model: str | None = None
    package: str | None = None  # the module a backend imports (None: always there)

    def status(self, folder: Path | None = None) -> BackendStatus:
        """Available here? Checks the package and, for checkpoint backends, the files in the cache ``folder``."""
        if self.package is not None and importlib.util.find_spec(self.package) is None:
            hint = "pip install -c constraints.txt -e '.[sam]'" + (
                " and sam2 (see the README)" if self.name == "sam2" else ""
            )
            return self._status(False, f"the '{self.package}' package is not installed: {hint}")
        if self.default_model is None:
            return self._status(True)
        rows = [r for r in checkpoint_rows(folder) if r["family"] == self.name]
        present = tuple(r["name"] for r in rows if r["present"] == "yes")
        if present:
            return self._status(True, models=present)
        where = folder if folder is not None else cache_dir()
        wrong = [r["file_name"] for r in rows if r["present"] == "wrong size"]
        reason = (
            f"checkpoint file(s) of the wrong size (interrupted download?): {', '.join(wrong)} in {where}"
            if wrong
            else f"no {self.name} checkpoint in {where} (fmscope models lists the files and where to fetch them)"
        )
        return self._status(False, reason)

    def _status(self, available: bool, reason: str = "", models: tuple[str, ...] = ()) -> BackendStatus:
        return BackendStatus(self.name, self.summary, self.needs, self.abilities, available, reason, models)


def _no_checkpoint(name: str, options: BackendOptions) -> None:
    if options.checkpoint is not None:
        raise InvalidInputError(f"checkpoint: the {name} backend takes no checkpoint (fm takes --model-dir)")


def _no_model_dir(name: str, options: BackendOptions) -> None:
    if options.model_dir is not None:
        raise InvalidInputError(f"model_dir: the {name} backend loads a checkpoint file (--checkpoint), not a folder")


def _rf(options: BackendOptions) -> PromptableModel:
    from fmscope.interactive.rf_backend import RandomForestPrompter

    _no_checkpoint("rf", options)
    return RandomForestPrompter(split_touching=not options.semantic)


def _fm(options: BackendOptions) -> PromptableModel:
    _no_checkpoint("fm", options)
    if options.model_dir is None:
        raise InvalidInputError("model_dir: the fm backend needs a model folder (fmscope pretrain / finetune)")
    from fmscope.interactive.fm_backend import FoundationPrompter

    return FoundationPrompter(options.model_dir, device=options.device, split_touching=not options.semantic)


def _sam(options: BackendOptions) -> PromptableModel:
    _no_model_dir("sam", options)
    from fmscope.interactive.sam_backend import SamPrompter

    return SamPrompter(options.model or "vit_b", options.checkpoint, device=options.device)


def _sam2(options: BackendOptions) -> PromptableModel:
    _no_model_dir("sam2", options)
    from fmscope.interactive.sam2_backend import Sam2Prompter

    return Sam2Prompter(options.model or "sam2.1_hiera_tiny", options.checkpoint, device=options.device)


BACKENDS: dict[str, BackendSpec] = {
    spec.name: spec
    for spec in (
        BackendSpec("rf", "random forest trained live from the prompts (no weights)", "nothing",
                    ("transfer", "phases"), _rf),
        BackendSpec("fm", "the random forest on an fmscope model's features", "a model folder (--model-dir)",
                    ("transfer", "phases"), _fm),
        BackendSpec("sam", "Segment Anything (vit_b/l/h)", "a local checkpoint (fmscope models)",
                    ("automatic",), _sam, "vit_b", "segment_anything"),
        BackendSpec("sam2", "SAM 2.1 (hiera tiny/small/base_plus/large)", "a local checkpoint (fmscope models)",
                    ("video",), _sam2, "sam2.1_hiera_tiny", "sam2"),
    )
}  # fmt: skip


def backends_help() -> str:
    """One line per backend for ``--help``: name, summary and what it needs."""
    return "; ".join(f"{s.name}: {s.summary}, needs {s.needs}" for s in BACKENDS.values())


def backend_status(folder: Path | None = None) -> list[BackendStatus]:
    """Every backend with whether it can be built here (checkpoints looked up in ``folder``, default the cache)."""
    return [spec.status(folder) for spec in BACKENDS.values()]


def make_backend(
    method: str,
    *,
    checkpoint: str | os.PathLike[str] | None = None,
    model: str | None = None,
    model_dir: str | os.PathLike[str] | None = None,
    device: str = "cpu",
    semantic: bool = False,
) -> PromptableModel:
    """The backend ``method`` (see the module doc) built from the given options."""
    spec = BACKENDS.get(method) if isinstance(method, str) else None
    if spec is None:
        raise InvalidInputError(f"method: expected one of {', '.join(BACKENDS)}, got {method!r}")
    return spec.build(BackendOptions(checkpoint, model, model_dir, device, semantic))
