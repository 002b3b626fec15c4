"""Synthetic degradation of sharp images for deblurring (numpy and torch).

Reference method: isotropic Gaussian blur sigma 2.5 voxels plus Gaussian noise of std 2.5 raw intensity units, applied
to the raw image. Here the blur sigma is per axis ((Z, Y, X) or (Y, X)), the noise Gaussian, Poisson or none, and the
degradation runs in numpy (:func:`degrade`, to write a degraded copy once) or in torch on a batch
(:func:`degrade_torch`, on the fly). Both blur with the same truncated Gaussian (radius ``int(4 sigma + 0.5)``, as
``scipy.ndimage.gaussian_filter``) and the same half-sample symmetric border (scipy's ``"reflect"``:
``d c b a | a b c d``), so they agree to float precision.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any, Literal, get_args

import numpy as np
import torch
import torch.nn.functional as F
from numpy.typing import NDArray
from scipy import ndimage
from torch import Tensor

from fmscope.errors import InvalidInputError

logger = logging.getLogger(__name__)

NoiseKind = Literal["gaussian", "poisson", "none"]
NOISE_KINDS: tuple[str, ...] = get_args(NoiseKind)
#: Gaussian truncation in sigmas, as scipy.ndimage.gaussian_filter's default.
BLUR_TRUNCATE = 4.0


def finite_number(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise InvalidInputError(f"{name}: expected a finite number, got {value!r}")
    return float(value)


@dataclass(frozen=True)
class DegradationConfig:
    """Synthetic degradation: Gaussian blur (per-axis sigma, voxels), then noise, then an optional clamp.

    Attributes:
        sigma: blur sigma per axis in (Z, Y, X) or (Y, X) order; a single number (stored as a 1-tuple) applies to
            every axis of any dimensionality. 0 leaves an axis unblurred.
        noise: ``"gaussian"`` (additive, std ``noise_std``), ``"poisson"`` (shot noise at ``photons`` counts for the
            image maximum) or ``"none"``.
        noise_std: Gaussian noise std, in the intensity units of the array the degradation is applied to.
        photons: Poisson: each image is scaled so that its maximum maps to ``photons`` counts (negative values count
            as 0), sampled, and scaled back; fewer photons = more noise.
        clip: optional ``(low, high)`` clamp applied last.
    """

    sigma: tuple[float, ...] = (2.5, 2.5, 2.5)
    noise: NoiseKind = "gaussian"
    noise_std: float = 2.5
    photons: float = 100.0
    clip: tuple[float, float] | None = None

    def __post_init__(self) -> None:
        raw: Any = self.sigma
        values = (raw,) if isinstance(raw, int | float) else tuple(raw) if isinstance(raw, list | tuple) else None
        if not values:
            raise InvalidInputError(f"sigma: expected a number or a non-empty tuple of numbers, got {raw!r}")
        sigma = tuple(finite_number(s, "sigma") for s in values)
        if any(s < 0 for s in sigma):
            raise InvalidInputError(f"sigma: expected values >= 0, got {sigma}")
        object.__setattr__(self, "sigma", sigma)
        if self.noise not in NOISE_KINDS:
            raise InvalidInputError(f"noise: expected one of {NOISE_KINDS}, got {self.noise!r}")
        if finite_number(self.noise_std, "noise_std") < 0:
            raise InvalidInputError(f"noise_std: expected a value >= 0, got {self.noise_std}")
        if finite_number(self.photons, "photons") <= 0:
            raise InvalidInputError(f"photons: expected a value > 0, got {self.photons}")
        if self.clip is not None:
            if not isinstance(self.clip, list | tuple) or len(self.clip) != 2:
                raise InvalidInputError(f"clip: expected None or a (low, high) pair, got {self.clip!r}")
            low, high = (finite_number(c, "clip") for c in self.clip)
            if not low < high:
                raise InvalidInputError(f"clip: expected low < high, got {self.clip}")
            object.__setattr__(self, "clip", (low, high))

    def sigma_for(self, ndim: int) -> tuple[float, ...]:
        """Per-axis sigma for an ``ndim``-dimensional image (a single value, or the same value on every axis, is
        broadcast: the isotropic default fits 2D images too)."""
        if len(set(self.sigma)) == 1:
            return self.sigma[:1] * ndim
        if len(self.sigma) != ndim:
            raise InvalidInputError(
                f"sigma: expected {ndim} values (one per spatial axis) or a single number, got {self.sigma}"
            )
        return self.sigma


def degrade(
    volume: np.ndarray, config: DegradationConfig, rng: np.random.Generator | int | None = None
) -> NDArray[np.float32]:
    """Blur a 2D (Y, X) or 3D (Z, Y, X) image and add noise, as float32; deterministic for a given seed.

    The blur is ``scipy.ndimage.gaussian_filter`` (per-axis sigma, mode ``"reflect"``, truncate 4). The input is not
    modified. ``rng`` is a numpy Generator or a seed (``None`` = fresh entropy).
    """
    arr = np.asarray(volume)
    if arr.dtype.kind not in "biuf" or arr.ndim not in (2, 3) or arr.size == 0:
        raise InvalidInputError(
            f"volume: expected a non-empty numeric 2D (Y, X) or 3D (Z, Y, X) array, got shape {arr.shape} {arr.dtype}"
        )
    sigma = config.sigma_for(arr.ndim)
    out = arr.astype(np.float32, copy=True)
    if any(s > 0 for s in sigma):
        out = ndimage.gaussian_filter(out, sigma=sigma, mode="reflect", truncate=BLUR_TRUNCATE, output=np.float32)
    generator = np.random.default_rng(rng)
    if config.noise == "gaussian" and config.noise_std > 0:
        out += generator.normal(0.0, config.noise_std, size=out.shape).astype(np.float32)
    elif config.noise == "poisson":
        peak = float(out.max())
        if peak > 0:
            scale = config.photons / peak
            counts = generator.poisson(np.clip(out, 0.0, None).astype(np.float64) * scale)
            out = (counts / scale).astype(np.float32)
        else:
            logger.warning("volume: maximum %s <= 0 after blurring; Poisson noise has no photons, image set to 0", peak)
            out = np.zeros_like(out)
    if config.clip is not None:
        np.clip(out, config.clip[0], config.clip[1], out=out)
    return out


def gaussian_kernel(sigma: float, radius: int, dtype: torch.dtype, device: torch.device) -> Tensor:
    x = torch.arange(-radius, radius + 1, dtype=torch.float64)
    k = torch.exp(-0.5 * (x / sigma) ** 2)
    return (k / k.sum()).to(dtype=dtype, device=device)


def _symmetric_index(size: int, pad: int, device: torch.device) -> Tensor:
    """Indices of a half-sample symmetric pad (scipy ``reflect``) of ``pad`` voxels each side, for any ``pad``."""
    idx = torch.arange(-pad, size + pad, device=device) % (2 * size)
    return torch.where(idx >= size, 2 * size - 1 - idx, idx)


def conv_along(x: Tensor, kernel: Tensor, axis: int) -> Tensor:
    """Valid (unpadded) depthwise convolution of (B, C, *spatial) ``x`` with 1D ``kernel`` along spatial ``axis``."""
    nd, channels = x.ndim - 2, x.shape[1]
    shape = [1, 1] + [kernel.numel() if d == axis else 1 for d in range(nd)]
    weight = kernel.reshape(shape).expand(channels, *shape[1:])
    return F.conv3d(x, weight, groups=channels) if nd == 3 else F.conv2d(x, weight, groups=channels)


def check_batch(batch: Any, name: str) -> Tensor:
    if not isinstance(batch, Tensor) or not batch.is_floating_point() or batch.ndim not in (4, 5) or not batch.numel():
        got = f"shape {tuple(batch.shape)} {batch.dtype}" if isinstance(batch, Tensor) else type(batch).__name__
        raise InvalidInputError(
            f"{name}: expected a non-empty float tensor (B, C, *spatial) with 2 or 3 spatial dims, got {got}"
        )
    return batch


def degrade_torch(batch: Tensor, config: DegradationConfig, generator: torch.Generator | None = None) -> Tensor:
    """On-the-fly :func:`degrade` of a (B, C, *spatial) float tensor (2 or 3 spatial dims), without gradient.

    Separable Gaussian blur by 1D convolutions (radius ``int(4 sigma + 0.5)``, half-sample symmetric border as scipy's
    ``"reflect"``, valid for any border size), then noise drawn from ``generator`` (Poisson: per image and channel
    maximum -> ``photons``). Agrees with :func:`degrade` without noise to float32 precision.
    """
    x = check_batch(batch, "batch")
    sigma = config.sigma_for(x.ndim - 2)
    with torch.no_grad():
        out = x.detach().clone()
        for axis, s in enumerate(sigma):
            if s <= 0:
                continue
            radius = int(BLUR_TRUNCATE * s + 0.5)
            index = _symmetric_index(out.shape[axis + 2], radius, out.device)
            kernel = gaussian_kernel(s, radius, out.dtype, out.device)
            out = conv_along(out.index_select(axis + 2, index), kernel, axis)
        if config.noise == "gaussian" and config.noise_std > 0:
            noise = torch.randn(out.shape, generator=generator, dtype=out.dtype, device=out.device)
            out = out + config.noise_std * noise
        elif config.noise == "poisson":
            peak = out.flatten(2).amax(dim=2).reshape(out.shape[:2] + (1,) * (out.ndim - 2))
            scale = torch.where(peak > 0, config.photons / peak.clamp_min(torch.finfo(out.dtype).tiny), 0.0)
            counts = torch.poisson(out.clamp_min(0.0) * scale, generator=generator)
            out = torch.where(scale > 0, counts / scale.clamp_min(torch.finfo(out.dtype).tiny), 0.0)
        if config.clip is not None:
            out = out.clamp(config.clip[0], config.clip[1])
    return out
