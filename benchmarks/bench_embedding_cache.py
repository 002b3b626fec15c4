"""Disk size and speed of the rf backend's embedding cache (issue 13, "Disk").

Embeds every slice of a stack with the weight-free rf backend into an on-disk
:class:`~fmscope.interactive.cache.EmbeddingCache`, then reports the folder's size against the stack's, the time to
write, to read back and to recompute a slice, and the largest feature difference after the round trip. Default stack:
the ISBI 2012 ssTEM volume (30 x 512 x 512 uint8, 7.9 MB) from ``../shared/data``; ``--synthetic`` uses a noisy
phantom of the same shape instead. ``--recompute`` measures an rf backend that recomputes its filter bank and
gradient on read instead of storing them (the :class:`~fmscope.interactive.cache.RecomputesFields` hook). Prints a
table and writes JSON.

    python benchmarks/bench_embedding_cache.py [--synthetic] [--recompute] [--max-bytes N] [--json out.json]
"""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import json
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage as ndi

from fmscope.intensity import IntensityProfile
from fmscope.interactive.cache import EmbeddingCache
from fmscope.interactive.protocol import window_slice
from fmscope.interactive.rf_backend import RandomForestPrompter, SliceEmbedding

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "isbi2012_em_membranes" / "raw.tif"


class RecomputingPrompter(RandomForestPrompter):
    """The rf backend with the recompute hook: only the superpixels (the slow part) are stored."""

    def recomputed_fields(self, embedding: Any) -> tuple[str, ...]:
        return ("features", "gradient") if isinstance(embedding, SliceEmbedding) else ()

    def complete_embedding(self, image: np.ndarray, profile: IntensityProfile | None, embedding: Any) -> Any:
        window = np.asarray(window_slice(image, profile)[0], np.float32)
        gradient = np.asarray(ndi.gaussian_gradient_magnitude(window, 2.0), np.float32)
        return dataclasses.replace(embedding, features=self.features(window), gradient=gradient)


def folder_bytes(folder: Path) -> int:
    return sum(max(p.stat().st_size, p.stat().st_blocks * 512) for p in folder.rglob("*") if p.is_file())


def stack(synthetic: bool) -> tuple[np.ndarray, str]:
    if not synthetic and DATA.is_file():
        import tifffile

        return np.asarray(tifffile.imread(DATA)), str(DATA)
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:512, :512]
    base = 100 + 80 * ((np.sin(yy / 23.0) * np.cos(xx / 31.0)) > 0.3)
    vol = np.stack([base + rng.normal(0, 20, base.shape) for _ in range(30)])
    return np.clip(vol, 0, 255).astype(np.uint8), "synthetic 30 x 512 x 512"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--synthetic", action="store_true")
    parser.add_argument("--recompute", action="store_true", help="recompute features and gradient on read")
    parser.add_argument("--max-bytes", type=int, default=None, help="EmbeddingCache(max_bytes=...) where supported")
    parser.add_argument("--json", type=Path, default=Path("bench_embedding_cache.json"))
    args = parser.parse_args()
    volume, source = stack(args.synthetic)
    backend = RecomputingPrompter() if args.recompute else RandomForestPrompter()
    kwargs: dict[str, Any] = {}
    if "max_bytes" in inspect.signature(EmbeddingCache).parameters:
        kwargs["max_bytes"] = args.max_bytes if args.max_bytes is not None else 0  # 0: unbounded, to see the total
    root = Path(tempfile.mkdtemp(prefix="fmscope-cache-bench-"))
    try:
        cache = EmbeddingCache(root / "cache", backend, None, **kwargs)
        t_embed = t_put = 0.0
        originals = {}
        for z in range(volume.shape[0]):
            t0 = time.perf_counter()
            emb = backend.embed(volume[z])
            t1 = time.perf_counter()
            cache.put(z, volume[z], emb)
            t_put += time.perf_counter() - t1
            t_embed += t1 - t0
            if z in (0, volume.shape[0] - 1):
                originals[z] = emb
        size = folder_bytes(root / "cache")
        reopened = EmbeddingCache(root / "cache", backend, None, **kwargs)
        t0 = time.perf_counter()
        got = {z: reopened.get(z, volume[z]) for z in range(volume.shape[0])}
        t_get = time.perf_counter() - t0
        err = max(
            float(np.max(np.abs(np.asarray(got[z].features, np.float32) - originals[z].features)))
            for z in originals
            if got[z] is not None
        )
        n = volume.shape[0]
        row = {
            "source": source,
            "stack_bytes": int(volume.nbytes),
            "cache_bytes": size,
            "ratio": size / volume.nbytes,
            "embed_s_per_slice": t_embed / n,
            "write_s_per_slice": t_put / n,
            "read_s_per_slice": t_get / n,
            "max_abs_feature_error": err,
            "cpu_count": os.cpu_count(),
            "kwargs": kwargs,
            "recompute": args.recompute,
        }
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print("| stack | cache | ratio | embed s/slice | write s/slice | read s/slice | max feature error |")
    print("|---|---|---|---|---|---|---|")
    print(
        f"| {row['stack_bytes'] / 1e6:.1f} MB | {row['cache_bytes'] / 1e6:.1f} MB | {row['ratio']:.1f}x | "
        f"{row['embed_s_per_slice']:.3f} | {row['write_s_per_slice']:.3f} | {row['read_s_per_slice']:.3f} | "
        f"{row['max_abs_feature_error']:.2e} |"
    )
    args.json.write_text(json.dumps(row, indent=2) + "\n")


if __name__ == "__main__":
    main()
