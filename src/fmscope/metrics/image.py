"""Image similarity for restoration (e.g. deblurring): PSNR and Gaussian-window SSIM, in 2D and 3D.

``data_range`` (max - min of the possible values) is required for float images; for integer images it defaults to
the dtype's full range (255 for uint8, 65535 for uint16). The range is never guessed from the data.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from numpy.typing import NDArray
from skimage.metrics import structural_similarity

from fmscope.errors import InvalidInputError
from fmscope.metrics._arrays import check_same_shape, to_numpy

#: Gaussian window of Wang et al. 2004: sigma 1.5, truncated at 3.5 sigma -> 11 voxels wide.
SSIM_SIGMA = 1.5
SSIM_WINDOW = 11


def _pair(pred: Any, target: Any) -> tuple[NDArray[Any], NDArray[Any]]:
    p = to_numpy(pred, "pred")
    t = to_numpy(target, "target")
    check_same_shape(p, t, "pred", "target")
    for name, arr in (("pred", p), ("target", t)):
        if arr.dtype.kind == "f" and not bool(np.all(np.isfinite(arr))):
            raise InvalidInputError(f"{name}: expected finite values, got NaN or Inf")
    return p, t


def _data_range(p: NDArray[Any], t: NDArray[Any], data_range: float | None) -> float:
    if data_range is not None:
        if isinstance(data_range, bool) or not isinstance(data_range, int | float) or not data_range > 0:
            raise InvalidInputError(f"data_range: expected a positive number, got {data_range!r}")
        return float(data_range)
    if p.dtype.kind == "f" or t.dtype.kind == "f":
        raise InvalidInputError(
            f"data_range: expected a value for float images (dtypes {p.dtype}, {t.dtype}), got None"
        )
    if p.dtype.kind == "b":
        return 1.0
    info = np.iinfo(p.dtype)
    return float(info.max) - float(info.min)


def psnr(pred: Any, target: Any, *, data_range: float | None = None) -> float:
    """Peak signal-to-noise ratio in dB, ``10 log10(data_range**2 / MSE)``; ``inf`` for identical images."""
    p, t = _pair(pred, target)
    rng = _data_range(p, t, data_range)
    mse = float(np.mean((p.astype(np.float64) - t.astype(np.float64)) ** 2))
    if mse == 0.0:
        return math.inf
    return 10.0 * math.log10(rng * rng / mse)


def ssim(pred: Any, target: Any, *, data_range: float | None = None) -> float:
    """Mean structural similarity (Wang et al. 2004) with an isotropic Gaussian window (sigma 1.5, 11 voxels).

    Works on 2D (Y, X) and 3D (Z, Y, X) arrays (the window is 3D for volumes); every axis must have at least 11
    voxels. Uses ``skimage.metrics.structural_similarity`` (gaussian_weights, population covariance).
    """
    p, t = _pair(pred, target)
    if p.ndim not in (2, 3):
        raise InvalidInputError(f"pred: expected a 2D (Y, X) or 3D (Z, Y, X) array, got shape {p.shape}")
    if min(p.shape) < SSIM_WINDOW:
        raise InvalidInputError(
            f"pred: expected at least {SSIM_WINDOW} voxels along every axis for the SSIM window, got shape {p.shape}"
        )
    rng = _data_range(p, t, data_range)
    value = structural_similarity(
        p.astype(np.float64),
        t.astype(np.float64),
        data_range=rng,
        gaussian_weights=True,
        sigma=SSIM_SIGMA,
        use_sample_covariance=False,
    )
    return float(value)
