"""Applying trained models to data: embeddings, text retrieval and sliding-window prediction over any-size volumes."""

from fmscope.inference.embed import EmbeddingTable, embed_manifest, load_normalized, rank_by_text, save_embeddings
from fmscope.inference.predict import (
    WindowConfig,
    count_windows,
    gaussian_importance,
    sliding_window_predict,
    window_starts,
)

__all__ = [
    "EmbeddingTable",
    "WindowConfig",
    "count_windows",
    "embed_manifest",
    "gaussian_importance",
    "load_normalized",
    "rank_by_text",
    "save_embeddings",
    "sliding_window_predict",
    "window_starts",
]
