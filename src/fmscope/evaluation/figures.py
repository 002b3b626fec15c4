"""Figures for reports: slice overlays of masks on an image (matplotlib, Agg backend, written atomically)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from fmscope.utils.plotting import PALETTE, pyplot, save_figure


def display_range(image: np.ndarray, low: float = 1.0, high: float = 99.5) -> tuple[float, float]:
    """Percentile display window of a 2D image (finite values only)."""
    finite = image[np.isfinite(image)]
    if finite.size == 0:
        return 0.0, 1.0
    lo, hi = np.percentile(finite, [low, high])
    return float(lo), float(hi if hi > lo else lo + 1)


def save_overlay(
    path: str | os.PathLike[str],
    image: np.ndarray,
    masks: Mapping[str, np.ndarray],
    *,
    title: str = "",
    overwrite: bool = True,
) -> Path:
    """Save a PNG with the 2D ``image`` alone and then each named 2D mask outlined on it (one panel each)."""
    from matplotlib.colors import to_rgb

    plt = pyplot()
    from skimage.segmentation import find_boundaries

    image = np.asarray(image, dtype=np.float32)
    lo, hi = display_range(image)
    n = 1 + len(masks)
    fig, axes = plt.subplots(1, n, figsize=(3.2 * n, 3.4), squeeze=False)
    axes[0, 0].imshow(image, cmap="gray", vmin=lo, vmax=hi)
    axes[0, 0].set_title("image", fontsize=9)
    for ax, (colour, (name, mask)) in zip(axes[0, 1:], zip(PALETTE * 4, masks.items(), strict=False), strict=False):
        ax.imshow(image, cmap="gray", vmin=lo, vmax=hi)
        labels = np.asarray(mask)
        edge = find_boundaries(labels, mode="inner") if labels.any() else np.zeros(labels.shape, bool)
        rgba = np.zeros((*labels.shape, 4), dtype=np.float32)
        rgba[labels != 0] = (*to_rgb(colour), 0.25)
        rgba[edge] = (*to_rgb(colour), 1.0)
        ax.imshow(rgba, interpolation="nearest")
        ax.set_title(name, fontsize=9)
    for ax in axes[0]:
        ax.set_axis_off()
    if title:
        fig.suptitle(title, fontsize=10)
    return save_figure(fig, path, overwrite=overwrite)
