"""Few-shot training material in memory: normalised volumes, their targets, and random training patches.

Few-shot sets are small (a handful of patches or slices), so every volume is read once, windowed by its own
percentiles to [0, 1] and kept. Patches are drawn from them on the fly: segmentation patches are centred on a random
foreground voxel with probability ``foreground_fraction`` (else anywhere), classification and deblurring patches
anywhere; volumes smaller than the patch are padded (reflect for images, background for masks).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args

import numpy as np

from fmscope.data.degradation import DegradationConfig, degrade
from fmscope.data.labelled import LabelledItem, LabelMapping, check_label
from fmscope.errors import InvalidInputError
from fmscope.intensity import apply_profile, fit_profile
from fmscope.io import read_image


@dataclass(frozen=True)
class Sample:
    """One normalised training or validation volume (or 2D image) and its target.

    ``image``: float32 in [0, 1], spatial shape only. ``label``: class indices (segment), ``class_index`` (classify),
    ``target``: the sharp image in the degraded image's window (deblur; then ``image`` is the degraded one).
    """

    name: str
    image: np.ndarray
    label: np.ndarray | None = None
    class_index: int | None = None
    target: np.ndarray | None = None


def normalise(volume: np.ndarray, low_percentile: float, high_percentile: float) -> tuple[np.ndarray, float, float]:
    """Window ``volume`` by its own percentiles to float32 [0, 1]; also return the window (low, high)."""
    profile = fit_profile(volume, low_percentile=low_percentile, high_percentile=high_percentile)
    return np.asarray(apply_profile(volume, profile), dtype=np.float32), float(profile.low), float(profile.high)


def _read(path: str, z_index: int | None) -> np.ndarray:
    """The image, or one Z slice of a stack (read lazily where the format allows: only that slice)."""
    image = read_image(path)
    if z_index is None:
        return image.numpy()
    if image.data.ndim != 3:
        raise InvalidInputError(f"{path}: a slice index needs a 3D stack, got shape {tuple(image.data.shape)}")
    return np.asarray(image.data[z_index])


Target = Literal["mask", "class", "restore"]
TARGETS: tuple[str, ...] = get_args(Target)


def load_samples(
    items: tuple[LabelledItem, ...],
    kind: Target,
    classes: tuple[str, ...],
    *,
    low_percentile: float = 1.0,
    high_percentile: float = 99.8,
    mapping: LabelMapping | None = None,
    degradation: DegradationConfig | None = None,
    seed: int = 0,
) -> list[Sample]:
    """Read and normalise every item with its target of ``kind``: a ``'mask'`` of class indices (validated by
    :func:`check_label`), a ``'class'`` index, or a ``'restore'`` target: the sharp image, the input being its
    ``NAME_blurred`` twin or a degradation synthesised with ``degradation`` (seeded by ``seed`` and the item's
    index)."""
    if kind not in TARGETS:
        raise InvalidInputError(f"kind: expected one of {list(TARGETS)}, got {kind!r}")
    samples = []
    for index, item in enumerate(items):
        raw = _read(item.image, item.z_index).astype(np.float32)
        name = item.image if item.z_index is None else f"{item.image}[z={item.z_index}]"
        if kind == "restore":
            if item.degraded is not None:
                degraded = _read(item.degraded, item.z_index).astype(np.float32)
            elif degradation is not None:
                degraded = degrade(raw, degradation, rng=np.random.default_rng([seed, index]))
            else:
                raise InvalidInputError(f"{name}: deblurring needs a degraded twin (NAME_blurred.EXT) or a degradation")
            if degraded.shape != raw.shape:
                raise InvalidInputError(f"{item.degraded}: shape {degraded.shape} differs from the image's {raw.shape}")
            image, low, high = normalise(degraded, low_percentile, high_percentile)
            target = np.clip((raw - low) / max(high - low, 1e-12), 0.0, 1.0).astype(np.float32)
            samples.append(Sample(name, image, target=target))
            continue
        image = normalise(raw, low_percentile, high_percentile)[0]
        if kind == "mask":
            if item.label is None:
                raise InvalidInputError(f"{name}: no label file for segmentation")
            label = check_label(_read(item.label, item.z_index), image.shape, path=item.label, mapping=mapping)
            if int(label.max(initial=0)) >= len(classes):
                raise InvalidInputError(
                    f"{item.label}: label values {np.unique(label).tolist()[:12]} but the task has {len(classes)} "
                    f"classes {list(classes)} (values 0..{len(classes) - 1}); map the raw values to classes with "
                    "--map-labels, e.g. '255=1' or '2=1,other=0' (Python: mapping=LabelMapping(...))"
                )
            samples.append(Sample(name, image, label=label))
        else:
            if item.class_name not in classes:
                raise InvalidInputError(f"{name}: class {item.class_name!r} is not one of {classes}")
            samples.append(Sample(name, image, class_index=classes.index(item.class_name)))
    if not samples:
        raise InvalidInputError("items: no samples to load")
    return samples


def _crop(array: np.ndarray, start: tuple[int, ...], size: tuple[int, ...], mode: str) -> np.ndarray:
    """``array[start:start+size]`` per axis, padded (centred) where the array is smaller than ``size``."""
    index = tuple(slice(max(s, 0), max(s, 0) + n) for s, n in zip(start, size, strict=True))
    region = array[index]
    pad = [((n - r) // 2, n - r - (n - r) // 2) for n, r in zip(size, region.shape, strict=True)]
    if any(p != (0, 0) for p in pad):
        if mode == "reflect":
            mode = "reflect" if all(r > max(p) for r, p in zip(region.shape, pad, strict=True)) else "symmetric"
        region = np.pad(region, pad, mode=mode)  # type: ignore[call-overload]
    return region


def centre_patch(image: np.ndarray, size: tuple[int, ...]) -> np.ndarray:
    """The centred ``size`` crop of ``image`` (padded symmetrically where it is smaller): what a classifier sees."""
    start = tuple((s - n) // 2 for s, n in zip(image.shape, size, strict=True))
    return np.ascontiguousarray(_crop(image, start, size, "reflect"), dtype=np.float32)


def sample_patch(
    sample: Sample, size: tuple[int, ...], rng: np.random.Generator, foreground_fraction: float = 0.0
) -> Sample:
    """A random ``size`` patch of ``sample`` (image and target cropped alike)."""
    shape = sample.image.shape
    if len(size) != len(shape):
        raise InvalidInputError(f"patch_size: expected {len(shape)} sizes for a {len(shape)}D sample, got {size}")
    centre: tuple[int, ...] | None = None
    if sample.label is not None and foreground_fraction > 0 and rng.random() < foreground_fraction:
        fg = np.flatnonzero(sample.label)
        if fg.size:
            centre = tuple(int(c) for c in np.unravel_index(int(fg[rng.integers(fg.size)]), shape))
    if centre is None:
        start = tuple(int(rng.integers(0, max(s - n, 0) + 1)) for s, n in zip(shape, size, strict=True))
    else:
        start = tuple(int(np.clip(c - n // 2, 0, max(s - n, 0))) for c, s, n in zip(centre, shape, size, strict=True))
    return Sample(
        sample.name,
        _crop(sample.image, start, size, "reflect"),
        label=None if sample.label is None else _crop(sample.label, start, size, "constant"),
        class_index=sample.class_index,
        target=None if sample.target is None else _crop(sample.target, start, size, "reflect"),
    )
