"""Shared figure helpers: one colour palette, and saving a matplotlib figure atomically (Agg backend, no screen)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from fmscope.utils.atomic import atomic_output

PALETTE = ("#00e676", "#ff4081", "#40c4ff", "#ffd740", "#b388ff", "#ff6e40")


def pyplot() -> Any:
    """``matplotlib.pyplot`` on the non-interactive Agg backend (imported lazily)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(
    fig: Any, path: str | os.PathLike[str], *, overwrite: bool = True, dpi: int = 110, layout: bool = True
) -> Path:
    """Lay out (unless the caller did: ``layout=False``), write ``fig`` as PNG to ``path`` atomically, and close it."""
    if layout:
        fig.tight_layout()
    with atomic_output(path, overwrite=overwrite) as tmp:
        fig.savefig(tmp, dpi=dpi, format="png")
    pyplot().close(fig)
    return Path(path)
