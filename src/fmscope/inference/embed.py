"""Per-volume embeddings from a pretrained model, a 2D map of them, and ranking volumes by a sentence.

Each volume of a manifest is read, normalised with its own robust percentiles (as in pretraining), centre-cropped to
the largest size the backbone accepts (a multiple of its downsampling factor, at most ``max_size`` per axis) and
embedded: in the shared image-text space when the model was pretrained with text terms, else as the pooled encoder
levels (``Backbone.pooled``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from fmscope.data import Manifest
from fmscope.errors import InvalidInputError
from fmscope.intensity import apply_profile, fit_profile
from fmscope.io import read_image
from fmscope.pretrain.method import MultimodalPretrainer
from fmscope.utils.atomic import atomic_output
from fmscope.utils.progress import ProgressCallback, make_progress


@dataclass(frozen=True)
class EmbeddingTable:
    """Embeddings of the volumes of a manifest (rows in manifest order)."""

    paths: tuple[str, ...]
    sources: tuple[str, ...]
    captions: tuple[str | None, ...]
    image: np.ndarray  # (N, D) float32
    text: np.ndarray | None  # (N, D) caption embeddings in the same space, when the model has a text tower
    space: Literal["image-text", "backbone"]


def load_normalized(path: str, low_percentile: float = 1.0, high_percentile: float = 99.8) -> np.ndarray:
    """A 3D volume as float32 in [0, 1], windowed by its own percentiles (the same adaptation as in pretraining)."""
    volume = read_image(path).numpy()
    if volume.ndim != 3:
        raise InvalidInputError(f"{path}: expected a 3D (Z, Y, X) volume, got shape {volume.shape}")
    profile = fit_profile(volume, low_percentile=low_percentile, high_percentile=high_percentile)
    return np.asarray(apply_profile(volume, profile))


def _prepare(path: str, divisor: int, max_size: int, low: float, high: float) -> torch.Tensor:
    x = load_normalized(path, low, high)
    size = [min(max_size, s) // divisor * divisor for s in x.shape]
    if min(size) == 0:
        raise InvalidInputError(f"{path}: volume {x.shape} is smaller than the model's minimum size {divisor}")
    start = [(s - c) // 2 for s, c in zip(x.shape, size, strict=True)]
    crop = x[tuple(slice(b, b + c) for b, c in zip(start, size, strict=True))]
    return torch.from_numpy(np.ascontiguousarray(crop))[None, None]


@torch.no_grad()
def embed_manifest(
    method: MultimodalPretrainer,
    manifest: Manifest,
    *,
    max_size: int = 128,
    low_percentile: float = 1.0,
    high_percentile: float = 99.8,
    progress: ProgressCallback | bool | None = None,
) -> EmbeddingTable:
    """Embed every volume of ``manifest`` (and its caption, when the model has a text tower)."""
    method.eval()
    divisor = method.student.config.divisor
    device = next(method.parameters()).device
    rows = []
    with make_progress(progress, len(manifest.entries), "embed") as advance:
        for entry in manifest.entries:
            x = _prepare(entry.path, divisor, max_size, low_percentile, high_percentile).to(device)
            emb = method.image_embedding(x) if method.text_encoder is not None else method.student.pooled(x)
            rows.append(emb[0].float().cpu().numpy())
            advance(1)
    text = None
    captions = tuple(e.caption for e in manifest.entries)
    if method.text_encoder is not None and all(c is not None for c in captions):
        text = method.text_encoder([str(c) for c in captions]).float().cpu().numpy()
    return EmbeddingTable(
        paths=tuple(e.path for e in manifest.entries),
        sources=tuple(e.source for e in manifest.entries),
        captions=captions,
        image=np.stack(rows).astype(np.float32),
        text=text,
        space="image-text" if method.text_encoder is not None else "backbone",
    )


@torch.no_grad()
def rank_by_text(method: MultimodalPretrainer, table: EmbeddingTable, sentence: str) -> list[tuple[int, float]]:
    """Rows of ``table`` ranked by cosine similarity to ``sentence`` (best first)."""
    if method.text_encoder is None or table.space != "image-text":
        raise InvalidInputError("sentence: this model was pretrained image-only; text retrieval needs image+text")
    if not sentence.strip():
        raise InvalidInputError("sentence: expected a non-empty sentence")
    query = method.text_encoder([sentence]).float().cpu().numpy()[0]
    scores = table.image @ query
    order = np.argsort(-scores)
    return [(int(i), float(scores[i])) for i in order]


def pca_2d(x: np.ndarray) -> tuple[np.ndarray, tuple[float, float]]:
    """First two principal components of the rows of ``x`` (zeros where there is no variance) and the fraction of
    the variance each explains."""
    centred = x - x.mean(axis=0, keepdims=True)
    if centred.shape[0] < 2 or not np.any(centred):
        return np.zeros((x.shape[0], 2), np.float32), (0.0, 0.0)
    _, sv, vt = np.linalg.svd(centred, full_matrices=False)
    comps = centred @ vt[:2].T
    ratios = np.pad(sv[:2] ** 2 / np.sum(sv**2), (0, 2 - min(2, sv.size)))
    return np.pad(comps, ((0, 0), (0, 2 - comps.shape[1]))).astype(np.float32), (float(ratios[0]), float(ratios[1]))


def save_embeddings(table: EmbeddingTable, out_dir: str | os.PathLike[str], *, overwrite: bool = False) -> Path:
    """Write ``embeddings.npz`` (image, text, paths, sources, captions), ``embeddings.csv`` (2D map coordinates) and
    ``map.png`` (PCA, or UMAP when umap-learn is installed; coloured by source) into a new folder, atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    try:
        import umap

        coords = umap.UMAP(n_components=2, n_neighbors=min(15, len(table.paths) - 1)).fit_transform(table.image)
        method_name, axes = "UMAP", ("UMAP 1", "UMAP 2")
    except (ImportError, ValueError, TypeError):
        coords, ratios = pca_2d(table.image)
        method_name = "PCA"
        axes = (f"PC1 ({100 * ratios[0]:.0f} % of variance)", f"PC2 ({100 * ratios[1]:.0f} % of variance)")
    out = Path(out_dir)
    with atomic_output(out, overwrite=overwrite) as tmp:
        tmp.mkdir()
        arrays: dict[str, np.ndarray] = {
            "image": table.image,
            "paths": np.array(table.paths),
            "sources": np.array(table.sources),
            "captions": np.array(["" if c is None else c for c in table.captions]),
        }
        if table.text is not None:
            arrays["text"] = table.text
        np.savez(tmp / "embeddings.npz", **arrays)  # type: ignore[arg-type]
        lines = ["path,source,x,y"] + [
            f"{Path(p).name},{s},{c[0]:.6f},{c[1]:.6f}"
            for p, s, c in zip(table.paths, table.sources, coords, strict=True)
        ]
        (tmp / "embeddings.csv").write_text("\n".join(lines) + "\n")
        fig, ax = plt.subplots(figsize=(5.5, 4.5))
        sources = sorted(set(table.sources))
        cmap = plt.get_cmap("tab20", max(len(sources), 1))
        for i, src in enumerate(sources):
            idx = [j for j, s in enumerate(table.sources) if s == src]
            ax.scatter(coords[idx, 0], coords[idx, 1], color=cmap(i), label=src, s=40)
        ax.set_xlabel(axes[0], fontsize=8)
        ax.set_ylabel(axes[1], fontsize=8)
        ax.set_title(f"{method_name} of {table.space} embeddings ({len(table.paths)} volumes)", fontsize=9)
        if len(sources) <= 20:
            ax.legend(fontsize=6, loc="best")
        fig.tight_layout()
        fig.savefig(tmp / "map.png", dpi=110)
        plt.close(fig)
    return out
