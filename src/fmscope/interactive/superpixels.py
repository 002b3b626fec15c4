"""Clicked superpixels as pixel labels for the forest backends (rf, fm, and their phases).

A click labels its superpixel (less its rim, which may have leaked across the object's edge) like itself, when the
superpixel is small enough and holds no pixel labelled the other way; a superpixel clicked both ways is shared
between its clicks (:func:`share`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray
from scipy import ndimage as ndi
from skimage.segmentation import watershed

from fmscope.interactive import raster
from fmscope.interactive.prompts import ObjectPrompt


def segment_window(segments: NDArray[np.int64], k: int, at: tuple[int, int]) -> raster.Window:
    """The bounding box of superpixel ``k`` (the one under pixel ``at``), found by growing a window from the click
    until the segment no longer reaches its edge (superpixels are small; the whole slice is never scanned)."""
    shape = segments.shape
    y, x = min(max(at[0], 0), shape[0] - 1), min(max(at[1], 0), shape[1] - 1)
    half = 16
    while True:
        win = raster.clip_window(y - half, x - half, y + half + 1, x + half + 1, shape)
        inside = segments[win] == k
        edge = (
            (win[0].start > 0 and inside[0].any())
            or (win[0].stop < shape[0] and inside[-1].any())
            or (win[1].start > 0 and inside[:, 0].any())
            or (win[1].stop < shape[1] and inside[:, -1].any())
        )
        if not edge:
            return win
        half *= 2


def share(
    segment: NDArray[np.bool_],
    clicks: Sequence[tuple[int, int, int]],
    gradient: NDArray[np.float32] | None,
    radius: int,
) -> NDArray[np.int64]:
    """Per pixel of ``segment``, the value (0 or 1) of the click ``(y, x, value)`` nearest to it, where a watershed
    of ``gradient`` seeded by the clicks' disks of ``radius`` gives it to a click of the same value too; -1 elsewhere
    (unsure). Disks, not single pixels, seed the flooding: a click on a ridge of the gradient would flood nothing."""
    markers = np.zeros(segment.shape, np.int32)
    for y, x, value in sorted(clicks, key=lambda c: c[2]):  # positive disks win where they overlap
        win, pixels = raster.disk(y, x, radius, segment.shape)
        markers[win][pixels] = value + 1
    markers[~segment] = 0
    for y, x, value in clicks:
        markers[y, x] = value + 1  # the clicked pixel itself, even on the segment's rim
    rows, cols = ndi.distance_transform_edt(markers == 0, return_distances=False, return_indices=True)
    nearest = markers[rows, cols]
    if gradient is not None:
        flooded = watershed(gradient, markers, mask=segment)
        nearest = np.where(flooded == nearest, nearest, 0)
    return np.where(segment, nearest - 1, -1).astype(np.int64)


def label_superpixels(
    labels: NDArray[np.int64], prompt: ObjectPrompt, embedding: Any, max_superpixel: float, point_radius: int
) -> None:
    """Label the clicked superpixels (less their rim) like their clicks, unless too large or already labelled the
    other way. A superpixel clicked both ways (a negative click on the part of a positive click's superpixel that
    leaked across the object's edge) is shared out (:func:`share`: to the nearest click where a flooding of the
    gradient from the clicks' disks agrees, else unlabelled), each part less its rim. Labelling it all one way
    would undo what the earlier click taught: the object's look would become background, and no later click in
    it could teach it back."""
    segments = embedding.superpixels
    if segments is None:
        return
    shape = embedding.shape
    limit = max_superpixel * labels.size
    clicked: dict[int, list[tuple[tuple[int, int], int]]] = {}
    for points, value in ((prompt.negative, 0), (prompt.positive, 1)):
        for y, x in points:
            at = (min(max(round(y), 0), shape[0] - 1), min(max(round(x), 0), shape[1] - 1))
            clicked.setdefault(int(segments[at]), []).append((at, value))
    for k, clicks in clicked.items():
        win = segment_window(segments, k, clicks[0][0])
        segment = segments[win] == k
        if segment.sum() > limit:
            continue
        values = {v for _, v in clicks}
        if len(values) == 1:
            parts = [(segment, clicks[0][1])]
        else:
            local = [(y - win[0].start, x - win[1].start, v) for (y, x), v in clicks]
            gradient = None if embedding.gradient is None else embedding.gradient[win]
            owner = share(segment, local, gradient, point_radius)
            parts = [(owner == v, v) for v in (0, 1)]
        for part, value in parts:
            if not (labels[win][part] == 1 - value).any():
                core = ndi.binary_erosion(part)  # its rim may have leaked across the edge
                labels[win][core if core.any() else part] = value
