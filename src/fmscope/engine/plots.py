"""Training curves from a metrics CSV (matplotlib, Agg backend, written atomically)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from fmscope.utils.plotting import PALETTE, pyplot, save_figure


def plot_training_curves(
    rows: list[dict[str, float]],
    path: str | os.PathLike[str],
    *,
    keys: tuple[str, ...] = ("distill", "recon", "align", "clip", "clip_chance", "loss"),
    extra: tuple[str, ...] = ("embed_similarity", "clip_scale", "lr"),
    smooth: int = 10,
    title: str = "",
    xlabel: str = "optimiser step",
    names: dict[str, str] | None = None,
) -> Path:
    """PNG of training curves: each loss term (raw, faint; moving average of ``smooth`` steps, solid) on a log
    scale, and the ``extra`` series (temperature, learning rate, a validation score) in panels of their own, titled
    by ``names`` where given."""
    plt = pyplot()

    steps = np.array([r["step"] for r in rows])
    present = [k for k in keys if any(r.get(k, 0.0) > 0 for r in rows)]
    panels = [k for k in extra if any(k in r for r in rows)]
    fig, axes = plt.subplots(1, 1 + len(panels), figsize=(6 + 3.2 * len(panels), 3.6), squeeze=False)
    ax = axes[0, 0]
    for colour, key in zip(PALETTE * 2, present, strict=False):
        values = np.array([r[key] for r in rows])
        ax.plot(steps, values, color=colour, alpha=0.25, linewidth=0.8)
        if len(values) >= smooth > 1:
            kernel = np.ones(smooth) / smooth
            ax.plot(steps[smooth - 1 :], np.convolve(values, kernel, mode="valid"), color=colour, label=key)
        else:
            ax.plot(steps, values, color=colour, label=key)
    ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.set_title("loss terms (raw and moving average)" if smooth > 1 else "training loss", fontsize=9)
    ax.legend(fontsize=8)
    for ax, key in zip(axes[0, 1:], panels, strict=True):
        ax.plot(steps, [r.get(key, np.nan) for r in rows], color="#333333", marker="o" if len(rows) < 40 else None)
        ax.set_xlabel(xlabel)
        ax.set_title((names or {}).get(key, key), fontsize=9)
    if title:
        fig.suptitle(title, fontsize=10)
    return save_figure(fig, path, overwrite=True)
