"""napari writer for Labels layers: TIFF or OME-Zarr (a pyramid with nearest sampling, marked as labels so that the
reader opens it as Labels again), with the layer's scale written as the spacing."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from fmscope.errors import InvalidInputError
from fmscope.io import ImageMetadata, write_image
from fmscope.segment import narrow_labels

logger = logging.getLogger(__name__)

SPATIAL = {2: "YX", 3: "ZYX"}


def write_labels(path: str, data: Any, attributes: dict[str, Any]) -> list[str]:
    """npe2's single-layer writer hook: write a Labels layer's ``data`` to ``path``; returns the paths written."""
    labels = np.asarray(data[0] if isinstance(data, list) else data)  # a multiscale layer: its full resolution
    if labels.ndim not in SPATIAL or labels.dtype.kind not in "biu":
        raise InvalidInputError(f"labels: expected a 2D or 3D integer Labels layer, got {labels.dtype} of shape "
                                f"{labels.shape}")  # fmt: skip
    if labels.size and labels.min() < 0:
        raise InvalidInputError(f"labels: expected values >= 0, got a minimum of {labels.min()}")
    labels = narrow_labels(labels)
    scale = attributes.get("scale")
    spacing = tuple(float(s) for s in scale)[-labels.ndim :] if scale is not None else ()
    unit = (attributes.get("metadata") or {}).get("fmscope", {}).get("unit")
    meta = ImageMetadata(SPATIAL[labels.ndim], labels.shape, str(labels.dtype), spacing=spacing, unit=unit,
                         source=str(attributes.get("name", "napari")))  # fmt: skip
    written = write_image(Path(path), labels, meta, overwrite=True, labels=True)
    logger.info("napari: wrote %s (%s, %d objects)", written, labels.dtype, int(labels.max()) if labels.size else 0)
    return [str(written)]
