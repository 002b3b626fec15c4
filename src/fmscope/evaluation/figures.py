"""Figures for reports and outputs: slice overlays of masks on an image, label montages with a legend and a scale bar
(matplotlib, Agg backend, written atomically)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from fmscope.errors import InvalidInputError
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

    plt = pyplot()

    image = np.asarray(image, dtype=np.float32)
    lo, hi = display_range(image)
    n = 1 + len(masks)
    fig, axes = plt.subplots(1, n, figsize=(3.2 * n, 3.4), squeeze=False)
    axes[0, 0].imshow(image, cmap="gray", vmin=lo, vmax=hi)
    axes[0, 0].set_title("image", fontsize=9)
    for ax, (colour, (name, mask)) in zip(axes[0, 1:], zip(PALETTE * 4, masks.items(), strict=False), strict=False):
        ax.imshow(image, cmap="gray", vmin=lo, vmax=hi)
        labels = np.asarray(mask)
        rgba = np.zeros((*labels.shape, 4), dtype=np.float32)
        _outline(rgba, labels, labels != 0, colour, fill=0.25)
        ax.imshow(rgba, interpolation="nearest")
        ax.set_title(name, fontsize=9)
    for ax in axes[0]:
        ax.set_axis_off()
    if title:
        fig.suptitle(title, fontsize=10)
    return save_figure(fig, path, overwrite=overwrite)


#: objects shown with one colour per label value up to this many values; more are instances (one colour, outlines).
MAX_CLASSES = len(PALETTE)


def pick_slices(labels: Any, n: int) -> list[int]:
    """Up to ``n`` Z slices to show: spread evenly over the slices holding foreground (all slices if none do); one
    streamed pass over a lazy (dask) label volume."""
    counts = np.asarray((labels != 0).sum(axis=(1, 2)))
    holding = np.flatnonzero(counts) if counts.any() else np.arange(counts.size)
    if holding.size <= n:
        return [int(z) for z in holding]
    return [int(holding[round(i)]) for i in np.linspace(0, holding.size - 1, n)]


def nice_length(extent: float) -> float:
    """A round scale-bar length (1, 2 or 5 x 10^k) near a fifth of ``extent``."""
    target = extent / 5
    base = 10 ** np.floor(np.log10(target))
    return float(max(m * base for m in (1, 2, 5) if m * base <= target))


def save_label_overlay(
    path: str | os.PathLike[str],
    image: Any,
    labels: Any,
    *,
    spacing: tuple[float, ...] | None = None,
    unit: str | None = None,
    class_names: Mapping[int, str] | None = None,
    n_slices: int = 4,
    title: str = "",
    overwrite: bool = False,
) -> Path:
    """A PNG montage of a few slices of ``image`` (2D, or a ``(Z, Y, X)`` stack, in memory or lazy) with ``labels``
    outlined: one colour per class with a legend (at most :data:`MAX_CLASSES` values, named by ``class_names``), or
    every object outlined in one colour when the labels are instances; a scale bar from ``spacing``/``unit``."""
    from matplotlib.patches import Patch

    if np.shape(image) != np.shape(labels) or len(np.shape(image)) not in (2, 3):
        raise InvalidInputError(f"labels: shape {np.shape(labels)} must equal the image's {np.shape(image)} (2D/3D)")
    stack = len(np.shape(image)) == 3
    zs = pick_slices(labels, n_slices) if stack else [0]
    planes = [(np.asarray(image[z] if stack else image, np.float32), np.asarray(labels[z] if stack else labels))
              for z in zs]  # fmt: skip
    values = sorted({int(v) for _, lab in planes for v in np.unique(lab) if v != 0})
    per_class = len(values) <= MAX_CLASSES and (class_names is not None or len(values) <= 3)
    colour_of = {v: PALETTE[i % len(PALETTE)] for i, v in enumerate(values)} if per_class else {}
    plt = pyplot()
    fig, axes = plt.subplots(1, len(planes), figsize=(3.4 * len(planes), 3.8), squeeze=False)
    for ax, z, (plane, lab) in zip(axes[0], zs, planes, strict=True):
        lo, hi = display_range(plane)
        ax.imshow(plane, cmap="gray", vmin=lo, vmax=hi)
        rgba = np.zeros((*lab.shape, 4), np.float32)
        for v, colour in colour_of.items() if per_class else [(0, PALETTE[0])]:
            _outline(rgba, lab, lab == v if per_class else lab != 0, colour, fill=0.2)
        ax.imshow(rgba, interpolation="nearest")
        ax.set_title(f"z = {z}" if stack else "image", fontsize=9)
        ax.set_axis_off()
        if spacing is not None and unit:
            _scale_bar(ax, lab.shape, float(spacing[-1]), unit)
    names = class_names or {}
    if per_class:
        handles = [Patch(color=c, label=names.get(v, f"label {v}")) for v, c in colour_of.items()]
    else:
        count = len(values)
        handles = [Patch(color=PALETTE[0], label=f"{count} object{'s' if count != 1 else ''} on these slices")]
    if handles:
        fig.legend(handles=handles, loc="lower center", ncol=min(len(handles), 6), fontsize=8, frameon=False)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout(rect=(0, 0.07, 1, 1))  # room for the legend below the panels
    return save_figure(fig, path, overwrite=overwrite, layout=False)


def _outline(rgba: np.ndarray, labels: np.ndarray, region: np.ndarray, colour: str, fill: float) -> None:
    """Paint ``region`` of a label image into ``rgba``: faintly filled (``fill`` opacity), its object boundaries
    (between objects too) opaque."""
    from matplotlib.colors import to_rgb
    from skimage.segmentation import find_boundaries

    edges = find_boundaries(labels, mode="inner") if region.any() else np.zeros(labels.shape, bool)
    rgba[region] = (*to_rgb(colour), fill)
    rgba[edges & region] = (*to_rgb(colour), 1.0)


def _scale_bar(ax: Any, shape: tuple[int, ...], pixel: float, unit: str) -> None:
    """A white bar of a round physical length in the lower right corner, labelled with it."""
    from matplotlib.patches import Rectangle

    length = nice_length(shape[1] * pixel)
    pixels = length / pixel
    height, width = shape
    x0, y0 = width * 0.95 - pixels, height * 0.93
    ax.add_patch(Rectangle((x0, y0), pixels, max(height * 0.015, 1), color="white"))
    short = {"micrometer": "µm", "nanometer": "nm", "millimeter": "mm", "angstrom": "Å"}.get(unit, unit)
    ax.text(x0 + pixels / 2, y0 - height * 0.02, f"{length:g} {short}", color="white", ha="center", va="bottom",
            fontsize=8)  # fmt: skip
