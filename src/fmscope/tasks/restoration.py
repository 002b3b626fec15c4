"""Deblurring building blocks: the restoration loss and restoration metrics (the degradation that makes training
pairs is :mod:`fmscope.data.degradation`).

Reference method: the model predicts an additive residual and the output is ``clamp(degraded + residual, 0, 1)``
(:func:`residual_output`); the loss is ``L1 + 0.2 (1 - SSIM) + 0.1 edge + 0.1 high-frequency`` (:func:`deblur_loss`);
the metrics are SSIM and PSNR (:func:`restoration_metrics`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, fields

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from fmscope.data.degradation import check_batch, conv_along, finite_number, gaussian_kernel
from fmscope.errors import InvalidInputError
from fmscope.metrics import psnr, ssim

logger = logging.getLogger(__name__)

#: SSIM window of Wang et al. 2004 (and ``fmscope.metrics.ssim``): Gaussian sigma 1.5, 11 voxels wide.
SSIM_SIGMA = 1.5
SSIM_WINDOW = 11
SSIM_K1, SSIM_K2 = 0.01, 0.03
#: Added under the square root of the gradient magnitude so that its gradient is finite on flat regions.
EDGE_EPS = 1e-8


@dataclass(frozen=True)
class DeblurLossWeights:
    """Weights of the :func:`deblur_loss` terms (reference: 1, 0.2, 0.1, 0.1); a weight of 0 skips its term."""

    l1: float = 1.0
    ssim: float = 0.2
    edge: float = 0.1
    high_freq: float = 0.1

    def __post_init__(self) -> None:
        for f in fields(self):
            if finite_number(getattr(self, f.name), f.name) < 0:
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
            stack = conv_along(stack, gaussian_kernel(SSIM_SIGMA, width // 2, stack.dtype, stack.device), axis)
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
    p = check_batch(prediction, "prediction")
    t = check_batch(target, "target")
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
