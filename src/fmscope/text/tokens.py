"""Bounded caches keyed by caption text, and padding of cached token ids into a batch.

Captions repeat a lot (one caption per volume, many patches per volume), so tokenised captions and, while the text
backbone is fully frozen, pooled embeddings are cached. Both caches are bounded LRU maps: host memory stays flat however
long training runs (the reference code grew every step, defect 6 of the spec).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from typing import Generic, TypeVar

import torch

from fmscope.errors import InvalidInputError

V = TypeVar("V")


class LRUCache(Generic[V]):
    """A least-recently-used map from caption text to a value, holding at most ``max_size`` entries.

    ``max_size=0`` disables caching (every lookup misses, nothing is stored).
    """

    def __init__(self, max_size: int) -> None:
        if isinstance(max_size, bool) or not isinstance(max_size, int) or max_size < 0:
            raise InvalidInputError(f"max_size: expected an int >= 0, got {max_size!r}")
        self.max_size = max_size
        self._data: OrderedDict[str, V] = OrderedDict()
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._data)

    def __contains__(self, key: object) -> bool:
        return key in self._data

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def get(self, key: str) -> V | None:
        """The value for ``key`` (marking it as recently used), or None."""
        value = self._data.get(key)
        if value is None:
            self.misses += 1
            return None
        self._data.move_to_end(key)
        self.hits += 1
        return value

    def put(self, key: str, value: V) -> None:
        """Store ``value``; evicts the least recently used entries beyond ``max_size``."""
        if self.max_size == 0:
            return
        self._data[key] = value
        self._data.move_to_end(key)
        while len(self._data) > self.max_size:
            self._data.popitem(last=False)

    def clear(self) -> None:
        """Drop every entry (the hit/miss counters are kept)."""
        self._data.clear()


def lookup_many(cache: LRUCache[V], keys: Sequence[str], compute: Callable[[list[str]], list[V]]) -> list[V]:
    """Values for ``keys`` in order; the misses (each distinct caption once) are computed in one ``compute`` call.

    The result never depends on the cache size: computed values are returned even when the cache cannot keep them.
    """
    found: dict[str, V] = {}
    missing: list[str] = []
    for key in keys:
        if key in found:
            continue
        value = cache.get(key)
        if value is None:
            if key not in missing:
                missing.append(key)
        else:
            found[key] = value
    if missing:
        computed = compute(missing)
        for key, value in zip(missing, computed, strict=True):
            found[key] = value
            cache.put(key, value)
    return [found[key] for key in keys]


def pad_token_ids(
    ids: Sequence[Sequence[int]], pad_id: int, device: torch.device | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad token id lists to the longest one: ``(input_ids, attention_mask)``, both int64 ``(B, L)``.

    Identical to what a Hugging Face tokenizer returns with ``padding=True`` (right padding, mask 1 on real tokens).
    """
    if len(ids) == 0:
        raise InvalidInputError("ids: expected at least one token id list, got none")
    length = max(len(seq) for seq in ids)
    input_ids = torch.full((len(ids), length), pad_id, dtype=torch.long)
    mask = torch.zeros((len(ids), length), dtype=torch.long)
    for row, seq in enumerate(ids):
        input_ids[row, : len(seq)] = torch.as_tensor(list(seq), dtype=torch.long)
        mask[row, : len(seq)] = 1
    if device is not None:
        input_ids, mask = input_ids.to(device), mask.to(device)
    return input_ids, mask
