"""Applying trained models to data: embeddings, text retrieval and sliding-window prediction over any-size volumes,
and blockwise work over volumes larger than memory.

The names below are imported on first use (PEP 562), so that ``fmscope.inference.blockwise`` and the classical
blockwise segmenters load without torch and MONAI: a Dask worker that only thresholds or classifies pixels stays
small enough for a ``--worker-memory`` of a few hundred MiB.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from fmscope.inference.embed import EmbeddingTable as EmbeddingTable
    from fmscope.inference.embed import embed_manifest as embed_manifest
    from fmscope.inference.embed import load_normalized as load_normalized
    from fmscope.inference.embed import rank_by_text as rank_by_text
    from fmscope.inference.embed import save_embeddings as save_embeddings
    from fmscope.inference.predict import WindowConfig as WindowConfig
    from fmscope.inference.predict import count_windows as count_windows
    from fmscope.inference.predict import gaussian_importance as gaussian_importance
    from fmscope.inference.predict import sliding_window_predict as sliding_window_predict
    from fmscope.inference.predict import window_starts as window_starts

_WHERE = {
    "EmbeddingTable": "embed",
    "embed_manifest": "embed",
    "load_normalized": "embed",
    "rank_by_text": "embed",
    "save_embeddings": "embed",
    "WindowConfig": "predict",
    "count_windows": "predict",
    "gaussian_importance": "predict",
    "sliding_window_predict": "predict",
    "window_starts": "predict",
}

__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module 'fmscope.inference' has no attribute {name!r}")
    return getattr(importlib.import_module(f"fmscope.inference.{_WHERE[name]}"), name)
