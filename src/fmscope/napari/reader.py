"""napari reader: any format :func:`fmscope.io.read_image` reads, lazily (dask) so that large volumes open at once.

* OME-Zarr pyramids become multiscale layers (every level, full resolution first).
* The spacing becomes the layer's ``scale`` (Z, Y, X order), the unit goes into the layer's metadata.
* A channel axis becomes ``channel_axis`` (one layer per channel).
* Labels: an OME-Zarr written as labels (``fmscope.labels`` in its attributes), or an integer image whose file name
  says so (``*labels*``, ``*mask*``, ``*seg*``, ``*instances*``, ``*objects*``, ``*scribbles*``), opens as a Labels
  layer.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from fmscope.errors import FmscopeError
from fmscope.io import read_image
from fmscope.io.registry import detect_format

logger = logging.getLogger(__name__)

LayerData = tuple[Any, dict[str, Any], str]
# a word of the file name: "nuclei_labels.tif", "cells-mask.ome.zarr", not "objective_40x.tif"
LABEL_NAMES = re.compile(
    r"(^|[_\-. ])(labels?|masks?|seg|segmentation|instances?|objects?|scribbles?)([_\-. ]|$)", re.IGNORECASE
)


def get_reader(path: str | list[str]) -> Callable[[Any], list[LayerData]] | None:
    """npe2's reader hook: a function returning the layers of ``path`` (or of each of a list of paths), or None
    when fmscope cannot read it."""
    paths = [path] if isinstance(path, str | os.PathLike) else list(path)
    for p in paths:
        try:
            fmt = detect_format(p)
        except FmscopeError:
            return None
        if fmt == "slices" and not Path(p).is_dir():
            return None
    return read_layers


def read_layers(path: str | list[str]) -> list[LayerData]:
    """The napari layer data of ``path`` (a path or a list of paths): ``[(data, metadata, layer_type), ...]``."""
    paths = [path] if isinstance(path, str | os.PathLike) else list(path)
    return [_layer(Path(p)) for p in paths]


def _is_labels(path: Path, fmt: str, dtype: np.dtype[Any]) -> bool:
    if fmt == "ome-zarr":
        for name in ("zarr.json", ".zattrs"):
            if (path / name).is_file():
                try:
                    attrs = json.loads((path / name).read_text(encoding="utf-8"))
                except ValueError:  # unreadable attributes: decided by the name below
                    continue
                attrs = attrs.get("attributes", attrs)
                if isinstance(attrs.get("fmscope"), dict) and "labels" in attrs["fmscope"]:
                    return bool(attrs["fmscope"]["labels"])
    return dtype.kind in "biu" and bool(LABEL_NAMES.search(path.name))


def _layer(path: Path) -> LayerData:
    fmt = detect_format(path)
    image = read_image(path, lazy=True)
    meta = image.meta
    data: Any = image.data
    if fmt == "ome-zarr":
        from fmscope.io.omezarr import count_levels

        levels = count_levels(path)
        if levels > 1:
            data = [image.data] + [read_image(path, level=i, lazy=True).data for i in range(1, levels)]
    kind = "labels" if _is_labels(path, fmt, np.dtype(meta.dtype)) else "image"
    per_axis = _per_axis_spacing(meta)
    attributes: dict[str, Any] = {
        "name": path.name,
        "scale": tuple(per_axis),
        "metadata": {
            "fmscope": {
                "source": str(path),
                "format": fmt,
                "axes": meta.axes,
                "unit": meta.unit,
                "spacing": list(meta.spacing),
            }
        },  # fmt: skip
    }
    if "C" in meta.axes and kind == "image":  # one layer per channel; the scale then leaves the channel axis out
        attributes["channel_axis"] = meta.axes.index("C")
        attributes["scale"] = tuple(s for a, s in zip(meta.axes, per_axis, strict=True) if a != "C")
    logger.info("napari: %s as %s layer, shape %s, scale %s", path, kind, meta.shape, attributes["scale"])
    return data, attributes, kind


def _per_axis_spacing(meta: Any) -> list[float]:
    """The spacing for every array axis (1 on T and C)."""
    spatial = iter(meta.spacing)
    return [1.0 if a in "TC" else float(next(spatial)) for a in meta.axes]
