"""A pretrained run as a model folder: the student backbone (``fmscope.models`` format, reusable for fine-tuning) plus
the whole method (heads, image projection, text tower) for embedding and text retrieval, and ``corpus.json``: every
volume trained on with its content digest (``fmscope.data.digest``), checked by the benchmark
against its test units."""

from __future__ import annotations

import json
import os
from pathlib import Path

from fmscope.config import from_dict, to_dict
from fmscope.data import Manifest
from fmscope.data.digest import corpus_record
from fmscope.errors import FileFormatError
from fmscope.models import compare_state_dict, load_model, save_model
from fmscope.pretrain.config import PretrainConfig
from fmscope.pretrain.method import MethodConfig, MultimodalPretrainer
from fmscope.utils.atomic import atomic_output

METHOD_WEIGHTS = "pretrainer.safetensors"
METHOD_CONFIG = "pretrainer.json"
CORPUS_FILE = "corpus.json"


def export_pretrained(
    method: MultimodalPretrainer, folder: Path, config: PretrainConfig, *, steps: int, corpus: Manifest | None = None
) -> Path:
    """Save the student as a model folder, with the full method beside it (``pretrainer.*``) and, when given, the
    record of the ``corpus`` it was trained on (``corpus.json``)."""
    from safetensors.torch import save_file

    extra = {"pretrain": {"steps": steps, "config": to_dict(config)}}
    path = save_model(method.student, folder, extra=extra, overwrite=True)
    state = {k: v.detach().cpu().contiguous() for k, v in method.state_dict().items()}
    with atomic_output(path / METHOD_WEIGHTS, overwrite=True) as tmp:
        save_file(state, str(tmp))
    with atomic_output(path / METHOD_CONFIG, overwrite=True) as tmp:
        tmp.write_text(json.dumps(to_dict(config.method), indent=2) + "\n")
    if corpus is not None:
        write_corpus(path, corpus)
    return path


def write_corpus(folder: Path, corpus: Manifest) -> Path:
    """``corpus.json`` in a model folder: every volume of ``corpus`` with its source, caption flag and digest."""
    record = {"volumes": corpus_record(corpus)}
    with atomic_output(folder / CORPUS_FILE, overwrite=True) as tmp:
        tmp.write_text(json.dumps(record, indent=1) + "\n")
    return folder / CORPUS_FILE


def read_corpus(folder: str | os.PathLike[str]) -> list[dict[str, object]] | None:
    """The corpus record of a model folder, or ``None`` when it has none (a run made before it was written)."""
    path = Path(folder) / CORPUS_FILE
    if not path.is_file():
        return None
    data = json.loads(path.read_text())
    if not isinstance(data, dict) or not isinstance(data.get("volumes"), list):
        raise FileFormatError(f"'{path}': expected an object with a 'volumes' list")
    return list(data["volumes"])


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
    # the reconstruction decoder is not used by embedding or retrieval, and runs made before it became a per-voxel
    # MLP hold a 3^3 conv there: those keep their decoder random, the rest loads strictly
    own = method.state_dict()
    state = {k: v for k, v in state.items() if not (k.startswith("decoder.") and k in own and v.shape != own[k].shape)}
    report = compare_state_dict(method, state)
    missing = [k for k in report.missing if not k.startswith("decoder.")]
    if missing or report.unexpected or report.mismatched_shapes:
        raise FileFormatError(
            f"model folder '{root}': {METHOD_WEIGHTS} does not fit {METHOD_CONFIG}: {report.summary()}"
        )
    method.load_state_dict(state, strict=False)
    return method.eval()


def _relative_to(path: str, root: Path | None) -> str:
    if root is None:
        return path
    resolved = Path(path).resolve()
    return resolved.relative_to(root).as_posix() if resolved.is_relative_to(root) else path


def package_backbone(
    model_dir: str | os.PathLike[str],
    dest: str | os.PathLike[str],
    *,
    data_root: str | os.PathLike[str] | None = None,
    overwrite: bool = False,
) -> Path:
    """Copy the backbone of a pretrained model folder (``config.json``, ``model.safetensors``, ``corpus.json``; not the
    pretraining heads and text tower) into ``dest``, as shipped under ``fmscope/pretrained/NAME``. Paths of the
    corpus and of the recorded ``data.path`` are written relative to ``data_root`` (no machine paths in a package).
    The model card (``MODEL_CARD.md``) is written by hand from the measurements."""
    import shutil

    src, out = Path(model_dir), Path(dest)
    corpus = read_corpus(src)
    if corpus is None:
        raise FileFormatError(f"model folder '{src}': no {CORPUS_FILE}; package a folder written by fmscope pretrain")
    root = Path(data_root).resolve() if data_root is not None else None
    doc = json.loads((src / "config.json").read_text())
    data = doc.get("provenance", {}).get("extra", {}).get("pretrain", {}).get("config", {}).get("data", {})
    if "path" in data:
        paths = [data["path"]] if isinstance(data["path"], str) else data["path"]
        rel = [_relative_to(str(p), root) for p in paths]
        data["path"] = rel[0] if len(rel) == 1 else rel
    volumes = [{**v, "path": _relative_to(str(v["path"]), root)} for v in corpus]
    with atomic_output(out, overwrite=overwrite) as tmp:
        tmp.mkdir()
        shutil.copyfile(src / "model.safetensors", tmp / "model.safetensors")
        (tmp / "config.json").write_text(json.dumps(doc, indent=2) + "\n")
        (tmp / CORPUS_FILE).write_text(json.dumps({"volumes": volumes}, indent=1) + "\n")
    return out
