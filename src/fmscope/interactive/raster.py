"""Prompts as pixels, computed in small windows: disks around clicks, brush strokes, bounding boxes of masks.

A 1024 x 1024 slice has a million pixels; a click touches a few dozen. These helpers work on the window a prompt
covers, so that the cost of a click does not grow with the slice.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from numpy.typing import NDArray
from scipy import ndimage as ndi
from skimage.draw import line

from fmscope.interactive.prompts import Stroke

Window = tuple[slice, slice]


def clip_window(y0: float, x0: float, y1: float, x1: float, shape: Sequence[int]) -> Window:
    """The pixels ``(y, x)`` with ``y0 <= y < y1`` and ``x0 <= x < x1`` inside a slice of ``shape``."""
    h, w = int(shape[0]), int(shape[1])
    return (
        slice(min(h, max(0, math.ceil(y0))), max(0, min(h, math.ceil(y1)))),
        slice(min(w, max(0, math.ceil(x0))), max(0, min(w, math.ceil(x1)))),
    )


def bbox(mask: NDArray[np.bool_], pad: int = 0) -> Window | None:
    """The bounding box of a 2D mask enlarged by ``pad`` pixels (clipped to the slice), or None when empty."""
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if rows.size == 0:
        return None
    return clip_window(rows[0] - pad, cols[0] - pad, rows[-1] + 1 + pad, cols[-1] + 1 + pad, mask.shape)


def paste(window: Window, local: NDArray[np.bool_], shape: Sequence[int]) -> NDArray[np.bool_]:
    """A full-slice mask holding ``local`` at ``window`` (False elsewhere)."""
    out = np.zeros((int(shape[0]), int(shape[1])), bool)
    out[window] = local
    return out


def disk(y: float, x: float, radius: float, shape: Sequence[int]) -> tuple[Window, NDArray[np.bool_]]:
    """The pixels within ``radius`` of ``(y, x)``: a window and the disk inside it."""
    win = clip_window(y - radius, x - radius, y + radius + 1, x + radius + 1, shape)
    yy, xx = np.ogrid[win[0], win[1]]
    return win, (yy - y) ** 2 + (xx - x) ** 2 <= radius**2


def stroke_pixels(stroke: Stroke, shape: Sequence[int]) -> tuple[Window, NDArray[np.bool_]]:
    """The pixels a 2D ``stroke`` covers (within half its width of the polyline): a window and the mask inside it."""
    radius = max(stroke.width / 2.0, 0.5)
    pts = np.array([p[-2:] for p in stroke.points], dtype=float)
    h, w = int(shape[0]), int(shape[1])
    pts[:, 0] = np.clip(pts[:, 0], 0, h - 1)
    pts[:, 1] = np.clip(pts[:, 1], 0, w - 1)
    win = clip_window(
        pts[:, 0].min() - radius, pts[:, 1].min() - radius, pts[:, 0].max() + radius + 1, pts[:, 1].max() + radius + 1,
        shape,
    )  # fmt: skip
    centre = np.zeros((win[0].stop - win[0].start, win[1].stop - win[1].start), bool)
    ends = np.rint(pts).astype(int) - (win[0].start, win[1].start)
    pairs = zip(ends[:-1], ends[1:], strict=True) if len(ends) > 1 else [(ends[0], ends[0])]
    for a, b in pairs:
        rr, cc = line(int(a[0]), int(a[1]), int(b[0]), int(b[1]))
        centre[rr, cc] = True
    return win, np.asarray(ndi.distance_transform_edt(~centre) <= radius)


def stroke_mask(stroke: Stroke, shape: Sequence[int]) -> NDArray[np.bool_]:
    """The full-slice mask of a 2D ``stroke``."""
    win, local = stroke_pixels(stroke, shape)
    return paste(win, local, shape)
