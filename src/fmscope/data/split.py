"""Train/validation split by source volume: patches of one brain never land on both sides (the reference split per
patch; see spec section 1)."""

from __future__ import annotations

import logging

import numpy as np

from fmscope.data.manifest import Manifest
from fmscope.errors import InvalidInputError

logger = logging.getLogger(__name__)


def split_by_source(manifest: Manifest, val_fraction: float = 0.2, seed: int = 0) -> tuple[Manifest, Manifest]:
    """Split ``manifest`` into ``(train, val)`` with no source id in both.

    ``round(val_fraction * n_sources)`` sources (at least 1 and at most ``n_sources - 1`` when ``val_fraction > 0``)
    are drawn for validation with ``np.random.default_rng(seed)``; entries keep their order. ``val_fraction == 0``
    gives an empty validation manifest.

    Raises:
        InvalidInputError: empty manifest, ``val_fraction`` outside [0, 1), or a single source with
            ``val_fraction > 0``.
    """
    if not isinstance(manifest, Manifest) or not manifest.entries:
        raise InvalidInputError(f"manifest: expected a non-empty Manifest, got {manifest!r:.80}")
    if not isinstance(val_fraction, int | float) or not 0.0 <= float(val_fraction) < 1.0:
        raise InvalidInputError(f"val_fraction: expected a fraction in [0, 1), got {val_fraction!r}")
    sources = sorted(manifest.sources)
    if val_fraction == 0:
        return manifest, Manifest((), manifest.root)
    if len(sources) < 2:
        raise InvalidInputError(
            f"manifest: expected at least 2 source ids to split with val_fraction={val_fraction}, got {sources}; "
            "use val_fraction=0 or give the volumes distinct sources"
        )
    n_val = min(max(round(float(val_fraction) * len(sources)), 1), len(sources) - 1)
    order = np.random.default_rng(seed).permutation(len(sources))
    val_sources = {sources[i] for i in order[:n_val]}
    train = [i for i, e in enumerate(manifest.entries) if e.source not in val_sources]
    val = [i for i, e in enumerate(manifest.entries) if e.source in val_sources]
    logger.info("split %d sources: %d train, %d val", len(sources), len(sources) - n_val, n_val)
    return manifest.subset(train), manifest.subset(val)
