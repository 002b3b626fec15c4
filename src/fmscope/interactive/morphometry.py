"""Morphometry of labelled objects: slice range, size, centroid, bounding box and mean intensity, to CSV."""

from __future__ import annotations

import csv
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from skimage.measure import regionprops

from fmscope.errors import InvalidInputError
from fmscope.utils.atomic import atomic_output

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ObjectMeasurement:
    """Morphometry of one object. ``voxels`` is the area (2D image, pixels) or volume (stack, voxels);
    ``physical_size`` the same in ``unit**2`` / ``unit**3`` when a spacing was given. Coordinates are (z, y, x) pixel
    indices (z = 0 for a 2D image); ``bbox`` is ``(z0, y0, x0, z1, y1, x1)``, ends exclusive."""

    id: int
    accepted: bool
    first_slice: int
    last_slice: int
    n_slices: int
    voxels: int
    physical_size: float | None
    centroid: tuple[float, float, float]
    bbox: tuple[int, int, int, int, int, int]
    mean_intensity: float

    def to_row(self, is_2d: bool) -> dict[str, Any]:
        """Flat CSV row (``area_px``/``area_physical`` for a 2D image, ``volume_voxels``/``volume_physical`` else)."""
        head = (self.id, int(self.accepted), self.first_slice, self.last_slice, self.n_slices, self.voxels)
        values = (*head, self.physical_size, *self.centroid, *self.bbox, self.mean_intensity)
        return dict(zip(_csv_fields(is_2d), values, strict=True))


def _csv_fields(is_2d: bool) -> list[str]:
    size = ["area_px", "area_physical"] if is_2d else ["volume_voxels", "volume_physical"]
    head = ["id", "accepted", "first_slice", "last_slice", "n_slices", *size, "centroid_z", "centroid_y"]
    return [*head, "centroid_x", "z0", "y0", "x0", "z1", "y1", "x1", "mean_intensity"]


def measure_objects(
    labels: np.ndarray,
    image: Any,
    *,
    spacing: Sequence[float] | None = None,
    accepted: frozenset[int] = frozenset(),
) -> list[ObjectMeasurement]:
    """Morphometry of every label > 0 of a (Z, Y, X) label volume over its (Z, Y, X) raw ``image`` (any dtype), with
    :func:`skimage.measure.regionprops`; ``spacing`` (z, y, x) gives ``physical_size``. ``image`` is anything that
    can be cut by the objects' bounding boxes (numpy, dask, zarr): it is read only there."""
    factor = None if spacing is None else float(np.prod(spacing))
    out = []
    for region in regionprops(np.asarray(labels)):
        sl, img = region.slice, region.image
        z0, y0, x0, z1, y1, x1 = (int(v) for v in region.bbox)
        cz, cy, cx = (float(c) for c in region.centroid)
        out.append(
            ObjectMeasurement(
                id=int(region.label),
                accepted=int(region.label) in accepted,
                first_slice=z0,
                last_slice=z1 - 1,
                n_slices=int(img.any(axis=(1, 2)).sum()),
                voxels=int(region.area),
                physical_size=None if factor is None else float(region.area) * factor,
                centroid=(cz, cy, cx),
                bbox=(z0, y0, x0, z1, y1, x1),
                mean_intensity=float(np.asarray(image[sl])[img].astype(np.float64).mean()),
            )
        )
    return out


def measure_image(
    labels: np.ndarray,
    image: np.ndarray,
    *,
    spacing: Sequence[float] | None = None,
    accepted: frozenset[int] = frozenset(),
) -> list[ObjectMeasurement]:
    """:func:`measure_objects` of a 2D ``(Y, X)`` or 3D ``(Z, Y, X)`` label image over its raw image; ``spacing`` in
    the image's own axis order (a 2D image counts as one slice of thickness 1)."""
    labels, image = np.asarray(labels), np.asarray(image)
    if labels.shape != image.shape or labels.ndim not in (2, 3):
        raise InvalidInputError(
            f"labels: expected a 2D or 3D label image of the image's shape {image.shape}, got {labels.shape}"
        )
    if spacing is not None and len(spacing) != labels.ndim:
        raise InvalidInputError(f"spacing: expected {labels.ndim} values, got {tuple(spacing)}")
    if labels.ndim == 2:
        labels, image = labels[None], image[None]
        spacing = None if spacing is None else (1.0, *spacing)
    return measure_objects(labels, image, spacing=spacing, accepted=accepted)


def write_morphometry(
    measurements: Sequence[ObjectMeasurement],
    path: str | os.PathLike[str],
    *,
    is_2d: bool,
    overwrite: bool = False,
) -> None:
    """Write one CSV row per object, atomically (2D images get ``area_*`` columns, stacks ``volume_*``)."""
    with atomic_output(path, overwrite=overwrite) as tmp, tmp.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=_csv_fields(is_2d))
        writer.writeheader()
        writer.writerows(m.to_row(is_2d) for m in measurements)
    logger.info("morphometry of %d object(s) written to %s", len(measurements), path)
