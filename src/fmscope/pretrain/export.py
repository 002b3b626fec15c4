"""A pretrained run as a model folder: the student backbone (``fmscope.models`` format, reusable for fine-tuning) plus
the whole method (heads, image projection, text tower) for embedding and text retrieval."""

from __future__ import annotations

import json
import os
from pathlib import Path

from fmscope.config import from_dict, to_dict
from fmscope.errors import FileFormatError
from fmscope.models import compare_state_dict, load_model, save_model
from fmscope.pretrain.config import PretrainConfig
from fmscope.pretrain.method import MethodConfig, MultimodalPretrainer
from fmscope.utils.atomic import atomic_output

METHOD_WEIGHTS = "pretrainer.safetensors"
METHOD_CONFIG = "pretrainer.json"


def export_pretrained(method: MultimodalPretrainer, folder: Path, config: PretrainConfig, *, steps: int) -> Path:
    """Save the student as a model folder, with the full method beside it (``pretrainer.*``)."""
    from safetensors.torch import save_file

    extra = {"pretrain": {"steps": steps, "config": to_dict(config)}}
    path = save_model(method.student, folder, extra=extra, overwrite=True)
    state = {k: v.detach().cpu().contiguous() for k, v in method.state_dict().items()}
    with atomic_output(path / METHOD_WEIGHTS, overwrite=True) as tmp:
        save_file(state, str(tmp))
    with atomic_output(path / METHOD_CONFIG, overwrite=True) as tmp:
        tmp.write_text(json.dumps(to_dict(config.method), indent=2) + "\n")
    return path


def load_pretrained(folder: str | os.PathLike[str]) -> MultimodalPretrainer:
    """Rebuild the pretraining method of a model folder and load its weights strictly (eval mode)."""
    from safetensors.torch import load_file

    root = Path(folder)
    if not (root / METHOD_CONFIG).is_file() or not (root / METHOD_WEIGHTS).is_file():
        if (root / "config.json").is_file():
            raise FileFormatError(
                f"model folder '{root}': a backbone without its pretraining heads ({METHOD_CONFIG} missing); "
                "embedding and retrieval need a folder written by fmscope pretrain"
            )
        raise FileFormatError(f"model folder '{root}' does not exist or holds no fmscope model")
    config = from_dict(MethodConfig, json.loads((root / METHOD_CONFIG).read_text()))
    backbone = load_model(root).model
    method = MultimodalPretrainer(config, backbone=backbone)
    state = load_file(str(root / METHOD_WEIGHTS))
    report = compare_state_dict(method, state)
    if not report.ok:
        raise FileFormatError(
            f"model folder '{root}': {METHOD_WEIGHTS} does not fit {METHOD_CONFIG}: {report.summary()}"
        )
    method.load_state_dict(state)
    return method.eval()
