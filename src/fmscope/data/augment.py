"""Augmentations for [0, 1] patches, built from MONAI transforms (spec: flips, 90-degree rotations, small affine,
Gaussian noise, Gaussian smoothing, intensity scale and shift, clamp back to [0, 1]).

:func:`build_augmentation` works on a ``(C, Z, Y, X)`` tensor (pretraining); :func:`build_paired_augmentation` works on
a dict with an image and a label (fine-tuning): MONAI dictionary transforms draw one set of spatial parameters for both
keys, the label is resampled with nearest interpolation, intensity transforms touch the image only. Both are seeded:
the same seed reproduces the same augmentation (``pipeline.set_random_state(seed=...)`` re-seeds).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import Any

import torch
from monai import transforms as mt

from fmscope.errors import InvalidInputError

_PROBS = ("flip_prob", "rotate90_prob", "affine_prob", "noise_prob", "smooth_prob", "scale_prob", "shift_prob")


@dataclass(frozen=True)
class AugmentConfig:
    """Probabilities and ranges of the augmentations (axes are spatial: 0 = Z, 1 = Y, 2 = X).

    Attributes:
        flip_prob: probability of a flip, drawn independently for each axis in ``flip_axes``.
        rotate90_prob: probability of a rotation by k * 90 degrees (k in 1..3) in each plane of ``rotate90_planes``
            (default YX only: light-sheet Z is often coarser).
        affine_prob, rotate_range (radians, each axis), scale_range (relative), translate_range (voxels): small affine.
        noise_prob, noise_std: additive Gaussian noise (std in [0, 1] intensity units).
        smooth_prob, smooth_sigma: Gaussian smoothing with sigma drawn in ``smooth_sigma`` (voxels) per axis.
        scale_prob, scale_factor: intensity ``x * (1 + f)``, ``f`` in [-factor, factor].
        shift_prob, shift_offset: intensity ``x + o``, ``o`` in [-offset, offset].
        padding_mode: how the affine fills outside the patch (``'reflection'``, ``'border'``, ``'zeros'``).
        clamp: clamp the image to [0, 1] at the end.
    """

    flip_prob: float = 0.5
    flip_axes: tuple[int, ...] = (0, 1, 2)
    rotate90_prob: float = 0.5
    rotate90_planes: tuple[tuple[int, int], ...] = ((1, 2),)
    affine_prob: float = 0.3
    rotate_range: float = math.radians(15.0)
    scale_range: float = 0.1
    translate_range: float = 0.0
    noise_prob: float = 0.2
    noise_std: float = 0.03
    smooth_prob: float = 0.2
    smooth_sigma: tuple[float, float] = (0.25, 1.0)
    scale_prob: float = 0.3
    scale_factor: float = 0.1
    shift_prob: float = 0.3
    shift_offset: float = 0.1
    padding_mode: str = "reflection"
    clamp: bool = True

    def __post_init__(self) -> None:
        for f in _PROBS:
            v = getattr(self, f)
            if not isinstance(v, int | float) or not 0.0 <= float(v) <= 1.0:
                raise InvalidInputError(f"{f}: expected a probability in [0, 1], got {v!r}")
        for f in ("rotate_range", "scale_range", "translate_range", "noise_std", "scale_factor", "shift_offset"):
            v = getattr(self, f)
            if not isinstance(v, int | float) or not math.isfinite(v) or v < 0:
                raise InvalidInputError(f"{f}: expected a finite number >= 0, got {v!r}")
        if any(a not in (0, 1, 2) for a in self.flip_axes):
            raise InvalidInputError(f"flip_axes: expected spatial axes in (0, 1, 2), got {self.flip_axes}")
        for plane in self.rotate90_planes:
            if len(plane) != 2 or plane[0] == plane[1] or any(a not in (0, 1, 2) for a in plane):
                raise InvalidInputError(f"rotate90_planes: expected pairs of distinct axes in (0, 1, 2), got {plane}")
        lo, hi = self.smooth_sigma
        if not 0 < lo <= hi:
            raise InvalidInputError(f"smooth_sigma: expected 0 < low <= high, got {self.smooth_sigma}")
        if self.padding_mode not in ("reflection", "border", "zeros"):
            raise InvalidInputError(
                f"padding_mode: expected 'reflection', 'border' or 'zeros', got {self.padding_mode!r}"
            )

    @classmethod
    def none(cls) -> AugmentConfig:
        """No augmentation (all probabilities 0); the clamp stays."""
        return cls(
            flip_prob=0.0,
            rotate90_prob=0.0,
            affine_prob=0.0,
            noise_prob=0.0,
            smooth_prob=0.0,
            scale_prob=0.0,
            shift_prob=0.0,
        )

    @classmethod
    def spatial_only(cls) -> AugmentConfig:
        """Flips, rotations and affine only (no intensity change)."""
        return cls(noise_prob=0.0, smooth_prob=0.0, scale_prob=0.0, shift_prob=0.0)

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


def clamp01(x: Any) -> Any:
    """Clamp a tensor or array to [0, 1] (a module-level function so pipelines stay picklable)."""
    if isinstance(x, torch.Tensor):
        return x.clamp(0.0, 1.0)
    import numpy as np

    return np.clip(x, 0.0, 1.0)


def _affine_kwargs(config: AugmentConfig) -> dict[str, Any]:
    return {
        "prob": config.affine_prob,
        "rotate_range": (config.rotate_range,) * 3,
        "scale_range": (config.scale_range,) * 3,
        "translate_range": (config.translate_range,) * 3,
        "padding_mode": config.padding_mode,
    }


def _intensity(config: AugmentConfig, keys: Sequence[str] | None) -> list[Any]:
    """Intensity transforms: array versions when ``keys`` is None, else dictionary versions on ``keys``."""
    s = config.smooth_sigma
    if keys is None:
        out: list[Any] = [
            mt.RandGaussianNoise(prob=config.noise_prob, std=config.noise_std),
            mt.RandGaussianSmooth(sigma_x=s, sigma_y=s, sigma_z=s, prob=config.smooth_prob),
            mt.RandScaleIntensity(factors=config.scale_factor, prob=config.scale_prob),
            mt.RandShiftIntensity(offsets=config.shift_offset, prob=config.shift_prob),
        ]
        if config.clamp:
            out.append(mt.Lambda(func=clamp01))
        return out
    out = [
        mt.RandGaussianNoised(keys=keys, prob=config.noise_prob, std=config.noise_std),
        mt.RandGaussianSmoothd(keys=keys, sigma_x=s, sigma_y=s, sigma_z=s, prob=config.smooth_prob),
        mt.RandScaleIntensityd(keys=keys, factors=config.scale_factor, prob=config.scale_prob),
        mt.RandShiftIntensityd(keys=keys, offsets=config.shift_offset, prob=config.shift_prob),
    ]
    if config.clamp:
        out.append(mt.Lambdad(keys=keys, func=clamp01))
    return out


def _check_config(config: Any) -> AugmentConfig:
    if not isinstance(config, AugmentConfig):
        raise InvalidInputError(f"config: expected an AugmentConfig, got {type(config).__name__}")
    return config


def build_augmentation(config: AugmentConfig | None = None, *, seed: int | None = 0) -> mt.Compose:
    """Augmentation of a ``(C, Z, Y, X)`` [0, 1] tensor (pretraining patches); seeded with ``seed`` when given."""
    cfg = _check_config(AugmentConfig() if config is None else config)
    spatial: list[Any] = [mt.RandFlip(prob=cfg.flip_prob, spatial_axis=a) for a in cfg.flip_axes]
    spatial += [mt.RandRotate90(prob=cfg.rotate90_prob, max_k=3, spatial_axes=p) for p in cfg.rotate90_planes]
    spatial.append(mt.RandAffine(mode="bilinear", **_affine_kwargs(cfg)))
    pipeline = mt.Compose(spatial + _intensity(cfg, None))
    if seed is not None:
        pipeline.set_random_state(seed=seed)
    return pipeline


def build_paired_augmentation(
    config: AugmentConfig | None = None,
    *,
    seed: int | None = 0,
    image_key: str = "image",
    label_key: str = "label",
) -> mt.Compose:
    """Augmentation of ``{image_key: (C, Z, Y, X), label_key: (C, Z, Y, X)}`` with shared spatial parameters.

    The label is resampled with nearest interpolation and is untouched by intensity transforms.
    """
    cfg = _check_config(AugmentConfig() if config is None else config)
    if image_key == label_key:
        raise InvalidInputError(f"label_key: expected a key different from image_key, got {label_key!r} for both")
    keys = (image_key, label_key)
    spatial: list[Any] = [mt.RandFlipd(keys=keys, prob=cfg.flip_prob, spatial_axis=a) for a in cfg.flip_axes]
    planes = cfg.rotate90_planes
    spatial += [mt.RandRotate90d(keys=keys, prob=cfg.rotate90_prob, max_k=3, spatial_axes=p) for p in planes]
    spatial.append(mt.RandAffined(keys=keys, mode=("bilinear", "nearest"), **_affine_kwargs(cfg)))
    pipeline = mt.Compose(spatial + _intensity(cfg, (image_key,)))
    if seed is not None:
        pipeline.set_random_state(seed=seed)
    return pipeline
