"""Applying trained models to data: embeddings and text retrieval (prediction over any-size volumes: issue 4)."""

from fmscope.inference.embed import EmbeddingTable, embed_manifest, load_normalized, rank_by_text, save_embeddings

__all__ = ["EmbeddingTable", "embed_manifest", "load_normalized", "rank_by_text", "save_embeddings"]
