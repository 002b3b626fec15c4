"""One entry point to build a promptable backend by name: ``rf``, ``fm``, ``sam``, ``sam2``.

``rf`` needs nothing; ``fm`` needs a model folder of ours (``model_dir``); ``sam`` and ``sam2`` load a local
checkpoint (``checkpoint``, or the known file name of ``model`` inside ``$FMSCOPE_CACHE``; see ``fmscope models``).
The SAM packages are imported only when asked for.
"""

from __future__ import annotations

import os

from fmscope.errors import InvalidInputError
from fmscope.interactive.protocol import PromptableModel
from fmscope.interactive.rf_backend import RandomForestPrompter

BACKENDS = ("rf", "fm", "sam", "sam2")
DEFAULT_MODELS = {"sam": "vit_b", "sam2": "sam2.1_hiera_tiny"}


def make_backend(
    method: str,
    *,
    checkpoint: str | os.PathLike[str] | None = None,
    model: str | None = None,
    model_dir: str | os.PathLike[str] | None = None,
    device: str = "cpu",
    semantic: bool = False,
) -> PromptableModel:
    """The backend ``method`` (see the module doc); ``semantic`` makes the forest backends keep touching regions
    together (phase segmentation) instead of splitting them into instances."""
    if method not in BACKENDS:
        raise InvalidInputError(f"method: expected one of {', '.join(BACKENDS)}, got {method!r}")
    if method in ("rf", "fm") and checkpoint is not None:
        raise InvalidInputError(f"checkpoint: the {method} backend takes no checkpoint (fm takes --model-dir)")
    if method == "rf":
        return RandomForestPrompter(split_touching=not semantic)
    if method == "fm":
        if model_dir is None:
            raise InvalidInputError("model_dir: the fm backend needs a model folder (fmscope pretrain / finetune)")
        from fmscope.interactive.fm_backend import FoundationPrompter

        return FoundationPrompter(model_dir, device=device, split_touching=not semantic)
    if model_dir is not None:
        raise InvalidInputError(f"model_dir: the {method} backend loads a checkpoint file (--checkpoint), not a folder")
    name = model or DEFAULT_MODELS[method]
    if method == "sam":
        from fmscope.interactive.sam_backend import SamPrompter

        return SamPrompter(name, checkpoint, device=device)
    from fmscope.interactive.sam2_backend import Sam2Prompter

    return Sam2Prompter(name, checkpoint, device=device)
