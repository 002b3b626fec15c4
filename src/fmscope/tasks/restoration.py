"""Deblurring building blocks: synthetic degradation (numpy and torch), the restoration loss and restoration metrics.

Reference method: pairs of sharp and degraded patches (isotropic Gaussian blur sigma 2.5 voxels plus Gaussian noise of
std 2.5 raw intensity units, applied to the raw image); the model predicts an additive residual and the output is
``clamp(degraded + residual, 0, 1)`` (:func:`residual_output`); the loss is ``L1 + 0.2 (1 - SSIM) + 0.1 edge + 0.1
high-frequency`` (:func:`deblur_loss`); the metrics are SSIM and PSNR (:func:`restoration_metrics`).

Here the blur sigma is per axis ((Z, Y, X) or (Y, X)), the noise Gaussian, Poisson or none, and the degradation runs in
numpy (:func:`degrade`, to write a degraded copy once) or in torch on a batch (:func:`degrade_torch`, on the fly).
Both blur with the same truncated Gaussian (radius ``int(4 sigma + 0.5)``, as ``scipy.ndimage.gaussian_filter``) and
the same half-sample symmetric border (scipy's ``"reflect"``: ``d c b a | a b c d``), so they agree to float precision.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, fields
from typing import Any, Literal, get_args

import numpy as np
import torch
import torch.nn.functional as F
from numpy.typing import NDArray
from scipy import ndimage
from torch import Tensor

from fmscope.errors import InvalidInputError
from fmscope.metrics import psnr, ssim

logger = logging.getLogger(__name__)

NoiseKind = Literal["gaussian", "poisson", "none"]
NOISE_KINDS: tuple[str, ...] = get_args(NoiseKind)
#: Gaussian truncation in sigmas, as scipy.ndimage.gaussian_filter's default.
BLUR_TRUNCATE = 4.0
#: SSIM window of Wang et al. 2004 (and ``fmscope.metrics.ssim``): Gaussian sigma 1.5, 11 voxels wide.
SSIM_SIGMA = 1.5
SSIM_WINDOW = 11
SSIM_K1, SSIM_K2 = 0.01, 0.03
#: Added under the square root of the gradient magnitude so that its gradient is finite on flat regions.
EDGE_EPS = 1e-8


def _finite_number(value: Any, name: str) -> float:
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
        sigma = tuple(_finite_number(s, "sigma") for s in values)
        if any(s < 0 for s in sigma):
            raise InvalidInputError(f"sigma: expected values >= 0, got {sigma}")
        object.__setattr__(self, "sigma", sigma)
        if self.noise not in NOISE_KINDS:
            raise InvalidInputError(f"noise: expected one of {NOISE_KINDS}, got {self.noise!r}")
        if _finite_number(self.noise_std, "noise_std") < 0:
            raise InvalidInputError(f"noise_std: expected a value >= 0, got {self.noise_std}")
        if _finite_number(self.photons, "photons") <= 0:
            raise InvalidInputError(f"photons: expected a value > 0, got {self.photons}")
        if self.clip is not None:
            if not isinstance(self.clip, list | tuple) or len(self.clip) != 2:
                raise InvalidInputError(f"clip: expected None or a (low, high) pair, got {self.clip!r}")
            low, high = (_finite_number(c, "clip") for c in self.clip)
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


def _gaussian_kernel(sigma: float, radius: int, dtype: torch.dtype, device: torch.device) -> Tensor:
    x = torch.arange(-radius, radius + 1, dtype=torch.float64)
    k = torch.exp(-0.5 * (x / sigma) ** 2)
    return (k / k.sum()).to(dtype=dtype, device=device)


def _symmetric_index(size: int, pad: int, device: torch.device) -> Tensor:
    """Indices of a half-sample symmetric pad (scipy ``reflect``) of ``pad`` voxels each side, for any ``pad``."""
    idx = torch.arange(-pad, size + pad, device=device) % (2 * size)
    return torch.where(idx >= size, 2 * size - 1 - idx, idx)


def _conv_along(x: Tensor, kernel: Tensor, axis: int) -> Tensor:
    """Valid (unpadded) depthwise convolution of (B, C, *spatial) ``x`` with 1D ``kernel`` along spatial ``axis``."""
    nd, channels = x.ndim - 2, x.shape[1]
    shape = [1, 1] + [kernel.numel() if d == axis else 1 for d in range(nd)]
    weight = kernel.reshape(shape).expand(channels, *shape[1:])
    return F.conv3d(x, weight, groups=channels) if nd == 3 else F.conv2d(x, weight, groups=channels)


def _check_batch(batch: Any, name: str) -> Tensor:
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
    x = _check_batch(batch, "batch")
    sigma = config.sigma_for(x.ndim - 2)
    with torch.no_grad():
        out = x.detach().clone()
        for axis, s in enumerate(sigma):
            if s <= 0:
                continue
            radius = int(BLUR_TRUNCATE * s + 0.5)
            index = _symmetric_index(out.shape[axis + 2], radius, out.device)
            kernel = _gaussian_kernel(s, radius, out.dtype, out.device)
            out = _conv_along(out.index_select(axis + 2, index), kernel, axis)
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


@dataclass(frozen=True)
class DeblurLossWeights:
    """Weights of the :func:`deblur_loss` terms (reference: 1, 0.2, 0.1, 0.1); a weight of 0 skips its term."""

    l1: float = 1.0
    ssim: float = 0.2
    edge: float = 0.1
    high_freq: float = 0.1

    def __post_init__(self) -> None:
        for f in fields(self):
            if _finite_number(getattr(self, f.name), f.name) < 0:
                raise InvalidInputError(f"{f.name}: expected a weight >= 0, got {getattr(self, f.name)}")
        if not any(getattr(self, f.name) > 0 for f in fields(self)):
            raise InvalidInputError("l1/ssim/edge/high_freq: expected at least one weight > 0, got all 0")


def ssim_loss(prediction: Tensor, target: Tensor) -> Tensor:
    """``1 - SSIM`` for (B, C, *spatial) tensors in [0, 1] (data range 1), differentiable.

    Same definition as ``fmscope.metrics.ssim`` (skimage's ``gaussian_weights=True``, population covariance,
    K1 0.01, K2 0.03, mean over the voxels whose window lies inside the image): separable Gaussian window of sigma 1.5
    and 11 voxels, shrunk along an axis shorter than 11 to the largest odd size that fits.
    """
    stack = torch.cat([prediction, target, prediction * prediction, target * target, prediction * target], dim=1)
    for axis, size in enumerate(prediction.shape[2:]):
        width = min(SSIM_WINDOW, size if size % 2 else size - 1)
        if width > 1:
            stack = _conv_along(stack, _gaussian_kernel(SSIM_SIGMA, width // 2, stack.dtype, stack.device), axis)
    mu_p, mu_t, e_pp, e_tt, e_pt = stack.chunk(5, dim=1)
    c1, c2 = SSIM_K1**2, SSIM_K2**2
    var_p, var_t, cov = e_pp - mu_p * mu_p, e_tt - mu_t * mu_t, e_pt - mu_p * mu_t
    ssim_map = ((2 * mu_p * mu_t + c1) * (2 * cov + c2)) / ((mu_p * mu_p + mu_t * mu_t + c1) * (var_p + var_t + c2))
    return 1.0 - ssim_map.mean()


def gradient_magnitude(x: Tensor) -> Tensor:
    """``sqrt(dz^2 + dy^2 + dx^2 + eps)`` (2D: dy, dx) from forward differences; the last difference per axis is 0."""
    total = torch.zeros_like(x)
    for dim in range(2, x.ndim):
        diff = torch.diff(x, dim=dim)
        pad = [0, 0] * (x.ndim - 1 - dim) + [0, 1]
        total = total + F.pad(diff, pad) ** 2
    return torch.sqrt(total + EDGE_EPS)


def high_frequency_loss(prediction: Tensor, target: Tensor) -> Tensor:
    """High-pass weighted spectral L1: ``mean_f w(f) | |P(f)| - |T(f)| |``.

    ``P``, ``T`` are ``torch.fft.rfftn`` over the spatial dims with ``norm="ortho"`` (half spectrum along X), ``f`` the
    frequency vector in cycles/voxel (``fftfreq`` per axis, ``rfftfreq`` along X), ``w(f) = |f| / max|f|`` in [0, 1]
    (0 at DC, 1 at the highest corner frequency); the mean runs over batch, channels and all half-spectrum bins.
    """
    dims = tuple(range(2, prediction.ndim))
    amp_p = torch.fft.rfftn(prediction, dim=dims, norm="ortho").abs()
    amp_t = torch.fft.rfftn(target, dim=dims, norm="ortho").abs()
    sizes = prediction.shape[2:]
    freqs = [torch.fft.fftfreq(n, device=prediction.device) for n in sizes[:-1]]
    freqs.append(torch.fft.rfftfreq(sizes[-1], device=prediction.device))
    grids = torch.meshgrid(*freqs, indexing="ij")
    radius = torch.sqrt(sum((g * g for g in grids), torch.zeros_like(grids[0])))
    peak = radius.max()
    weight = (radius / peak if peak > 0 else torch.zeros_like(radius)).to(amp_p.dtype)
    return (weight * (amp_p - amp_t).abs()).mean()


def deblur_loss(
    prediction: Tensor, target: Tensor, weights: DeblurLossWeights = DeblurLossWeights()
) -> tuple[Tensor, dict[str, float]]:
    """Weighted restoration loss of (B, C, *spatial) tensors in [0, 1] (2 or 3 spatial dims).

    Terms: ``l1`` mean absolute error; ``ssim`` = 1 - SSIM (:func:`ssim_loss`); ``edge`` = L1 between the gradient
    magnitudes (:func:`gradient_magnitude`); ``high_freq`` (:func:`high_frequency_loss`). Returns the weighted sum
    (with graph) and the raw, unweighted terms as floats for logging; a term with weight 0 is not computed (0.0).
    """
    p = _check_batch(prediction, "prediction")
    t = _check_batch(target, "target")
    if t.shape != p.shape:
        raise InvalidInputError(f"target: expected the prediction's shape {tuple(p.shape)}, got {tuple(t.shape)}")
    terms = {
        "l1": lambda: (p - t).abs().mean(),
        "ssim": lambda: ssim_loss(p, t),
        "edge": lambda: (gradient_magnitude(p) - gradient_magnitude(t)).abs().mean(),
        "high_freq": lambda: high_frequency_loss(p, t),
    }
    total = p.new_zeros(())
    logged: dict[str, float] = {}
    for name, compute in terms.items():
        weight = float(getattr(weights, name))
        if weight == 0:
            logged[name] = 0.0
            continue
        value = compute()
        total = total + weight * value
        logged[name] = float(value.detach())
    return total, logged


def residual_output(degraded: Tensor, residual: Tensor) -> Tensor:
    """The restored image from a predicted additive residual: ``clamp(degraded + residual, 0, 1)``."""
    if residual.shape != degraded.shape:
        raise InvalidInputError(
            f"residual: expected the degraded input's shape {tuple(degraded.shape)}, got {tuple(residual.shape)}"
        )
    return (degraded + residual).clamp(0.0, 1.0)


def restoration_metrics(prediction: np.ndarray, target: np.ndarray) -> dict[str, float]:
    """SSIM and PSNR (dB) of a 2D/3D restored image against the sharp target, both in [0, 1] (data range 1).

    Uses ``fmscope.metrics.ssim`` / ``psnr`` (every axis needs at least 11 voxels for SSIM; PSNR is inf when equal).
    """
    return {
        "ssim": ssim(prediction, target, data_range=1.0),
        "psnr": psnr(prediction, target, data_range=1.0),
    }
