"""A recorded, replayable raw-data adaptation: fit once on a volume, apply to it and to new data of the same kind.

Steps apply in this fixed order (each optional one only when enabled):

1. ``denoise`` on the raw values (gaussian or median);
2. window ``[low, high]`` to [0, 1], clipped (NaN -> 0, +Inf -> 1, -Inf -> 0);
3. ``gamma`` (skipped when 1);
4. CLAHE (2D, slice by slice along Z);
5. resampling from ``spacing`` to ``target_spacing`` (linear);
6. output dtype: float32 in [0, 1], or uint8 (``round(255 * x)``).

``low``/``high`` are the ``low_percentile``/``high_percentile`` values of the data as step 2 sees it (after
denoising). A constant volume gives ``low == high``; step 2 then returns 0 at or below ``low`` and 1 above it (so the
constant volume itself becomes all zeros). Label images (``is_label=True``) only go through step 5, with
nearest-neighbour interpolation and their dtype kept.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from fmscope.errors import FileFormatError, InvalidInputError
from fmscope.intensity._blocks import check_array, is_dask
from fmscope.intensity.resample import check_spacing, resample_to_spacing
from fmscope.intensity.stats import DEFAULT_PERCENTILES, IntensityStats, check_percentiles, compute_stats
from fmscope.intensity.transforms import (
    apply_clahe,
    check_clahe,
    check_denoise,
    check_gamma,
    denoise,
    gamma_block,
    to_uint8_block,
    window_block,
)
from fmscope.utils.atomic import atomic_output
from fmscope.utils.progress import ProgressCallback

logger = logging.getLogger(__name__)

OutputDtype = Literal["float32", "uint8"]
SCHEMA = "fmscope.intensity_profile/1"


@dataclass(frozen=True)
class IntensityProfile:
    """Everything needed to replay an intensity adaptation (see the module doc for the order of the steps).

    Attributes:
        source_dtype: dtype of the data the profile was fitted on.
        low_percentile, high_percentile: percentile levels of the window.
        low, high: their values on the fitting data (``low <= high``).
        gamma: gamma exponent (> 0; 1 = off).
        clahe, clahe_clip_limit, clahe_kernel_size: CLAHE switch and ``equalize_adapthist`` parameters.
        denoise, denoise_sigma, denoise_size: ``'none'``, ``'gaussian'`` (sigma, voxels) or ``'median'`` (size).
        spacing, target_spacing: voxel spacing of the data and of the output (trailing axes); resampling happens
            only when both are set and differ.
        output: ``'float32'`` ([0, 1]) or ``'uint8'`` (0..255).
        stats: statistics of the fitting data (after denoising), for provenance.
    """

    source_dtype: str
    low_percentile: float
    high_percentile: float
    low: float
    high: float
    gamma: float = 1.0
    clahe: bool = False
    clahe_clip_limit: float = 0.01
    clahe_kernel_size: tuple[int, ...] | None = None
    denoise: str = "none"
    denoise_sigma: float = 1.0
    denoise_size: int = 3
    spacing: tuple[float, ...] | None = None
    target_spacing: tuple[float, ...] | None = None
    output: str = "float32"
    stats: IntensityStats | None = None

    def __post_init__(self) -> None:
        try:
            np.dtype(self.source_dtype)
        except TypeError:
            raise InvalidInputError(f"source_dtype: expected a numpy dtype name, got {self.source_dtype!r}") from None
        lo_q, hi_q = check_percentiles((self.low_percentile, self.high_percentile), "low_percentile/high_percentile")
        if not lo_q < hi_q:
            raise InvalidInputError(
                "low_percentile/high_percentile: expected low < high, "
                f"got {self.low_percentile}, {self.high_percentile}"
            )
        if not (math.isfinite(self.low) and math.isfinite(self.high) and self.low <= self.high):
            raise InvalidInputError(f"low/high: expected finite values with low <= high, got {self.low}, {self.high}")
        check_gamma(self.gamma)
        _, ks = check_clahe(self.clahe_clip_limit, self.clahe_kernel_size)
        check_denoise(self.denoise, self.denoise_sigma, self.denoise_size)
        sp = check_spacing(self.spacing, "spacing")
        tsp = check_spacing(self.target_spacing, "target_spacing")
        if tsp is not None and sp is None:
            raise InvalidInputError(f"target_spacing: needs spacing to be set, got spacing=None, target {tsp}")
        if sp is not None and tsp is not None and len(sp) != len(tsp):
            raise InvalidInputError(
                f"target_spacing: expected {len(sp)} values (one per axis of spacing {sp}), got {len(tsp)}: {tsp}"
            )
        if self.output not in ("float32", "uint8"):
            raise InvalidInputError(f"output: expected 'float32' or 'uint8', got {self.output!r}")
        for name in ("low_percentile", "high_percentile", "low", "high", "gamma", "clahe_clip_limit", "denoise_sigma"):
            object.__setattr__(self, name, float(getattr(self, name)))
        object.__setattr__(self, "clahe_kernel_size", ks)
        object.__setattr__(self, "spacing", sp)
        object.__setattr__(self, "target_spacing", tsp)

    @property
    def resamples(self) -> bool:
        """Whether the profile changes the voxel spacing."""
        return self.spacing is not None and self.target_spacing is not None and self.spacing != self.target_spacing

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"schema": SCHEMA}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, tuple):
                value = list(value)
            elif isinstance(value, IntensityStats):
                value = value.to_dict()
            d[f.name] = value
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> IntensityProfile:
        if d.get("schema") != SCHEMA:
            raise FileFormatError(f"intensity profile: expected schema '{SCHEMA}', got {d.get('schema')!r}")
        names = {f.name for f in dataclasses.fields(cls)}
        keys = set(d) - {"schema"}
        if keys - names or {"source_dtype", "low_percentile", "high_percentile", "low", "high"} - keys:
            raise FileFormatError(f"intensity profile: expected keys {sorted(names)}, got {sorted(keys)}")
        kw = {k: v for k, v in d.items() if k != "schema"}
        for name in ("clahe_kernel_size", "spacing", "target_spacing"):
            if kw.get(name) is not None:
                kw[name] = tuple(kw[name])
        if kw.get("stats") is not None:
            kw["stats"] = IntensityStats.from_dict(kw["stats"])
        return cls(**kw)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, allow_nan=False)

    @classmethod
    def from_json(cls, text: str) -> IntensityProfile:
        try:
            d = json.loads(text)
        except json.JSONDecodeError as exc:
            raise FileFormatError(f"intensity profile: invalid JSON ({exc})") from None
        if not isinstance(d, dict):
            raise FileFormatError(f"intensity profile: expected a JSON object, got {type(d).__name__}")
        return cls.from_dict(d)

    def save(self, path: str | os.PathLike[str], *, overwrite: bool = False) -> Path:
        """Write the profile as JSON (atomically; refuses to replace an existing file unless ``overwrite``)."""
        with atomic_output(path, overwrite) as tmp:
            tmp.write_text(self.to_json(), encoding="utf-8")
        return Path(path)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> IntensityProfile:
        p = Path(path)
        if not p.is_file():
            raise FileFormatError(f"intensity profile '{p}': no such file")
        return cls.from_json(p.read_text(encoding="utf-8"))


def fit_profile(
    data: Any,
    *,
    low_percentile: float = 1.0,
    high_percentile: float = 99.8,
    gamma: float = 1.0,
    clahe: bool = False,
    clahe_clip_limit: float = 0.01,
    clahe_kernel_size: int | Sequence[int] | None = None,
    denoise: str = "none",
    denoise_sigma: float = 1.0,
    denoise_size: int = 3,
    spacing: Sequence[float] | None = None,
    target_spacing: Sequence[float] | None = None,
    output: OutputDtype = "float32",
    progress: ProgressCallback | bool | None = None,
) -> IntensityProfile:
    """Fit an :class:`IntensityProfile` to a 2D (YX) or 3D (ZYX) image, numpy or dask (streamed, bounded memory).

    The percentiles are computed once, over the whole image after the optional denoising. Parameters are validated
    before any computation.
    """
    check_array(data, ndims=(2, 3))
    if isinstance(clahe_kernel_size, int | np.integer):
        clahe_kernel_size = (int(clahe_kernel_size),)
    draft = IntensityProfile(
        source_dtype=np.dtype(data.dtype).name,
        low_percentile=low_percentile,
        high_percentile=high_percentile,
        low=0.0,
        high=0.0,
        gamma=gamma,
        clahe=bool(clahe),
        clahe_clip_limit=clahe_clip_limit,
        clahe_kernel_size=None if clahe_kernel_size is None else tuple(clahe_kernel_size),
        denoise=denoise,
        denoise_sigma=denoise_sigma,
        denoise_size=denoise_size,
        spacing=None if spacing is None else tuple(spacing),
        target_spacing=None if target_spacing is None else tuple(target_spacing),
        output=output,
    )
    _check_spacing_fits(data, draft)
    source = data
    if draft.denoise != "none":
        source = _denoise(data, draft)
    qs = tuple(sorted({*DEFAULT_PERCENTILES, draft.low_percentile, draft.high_percentile}))
    stats = compute_stats(source, percentiles=qs, progress=progress)
    low, high = stats.value(draft.low_percentile), stats.value(draft.high_percentile)
    if low == high:
        logger.warning("fit_profile: low == high == %g (constant data?); the window becomes a step at that value", low)
    return dataclasses.replace(draft, low=low, high=high, stats=stats)


def _denoise(data: Any, profile: IntensityProfile) -> Any:
    method: Literal["gaussian", "median"] = "gaussian" if profile.denoise == "gaussian" else "median"
    return denoise(data, method, sigma=profile.denoise_sigma, size=profile.denoise_size)


def _check_spacing_fits(data: Any, profile: IntensityProfile) -> None:
    if profile.spacing is not None and len(profile.spacing) > data.ndim:
        raise InvalidInputError(
            f"spacing: expected at most {data.ndim} values for data of shape {data.shape}, got {profile.spacing}"
        )


def _intensity_block(block: np.ndarray, low: float, high: float, gamma: float, to_uint8: bool) -> np.ndarray:
    y = window_block(block, low, high, clip=True)
    if gamma != 1.0:
        y = gamma_block(y, gamma)
    return to_uint8_block(y) if to_uint8 else y


def apply_profile(data: Any, profile: IntensityProfile, *, is_label: bool = False) -> Any:
    """Replay ``profile`` on ``data`` (2D or 3D; numpy in -> numpy out, dask in -> dask out, computed blockwise).

    The input is never modified. Images become float32 in [0, 1] or uint8 (``profile.output``); labels
    (``is_label=True``) are only resampled, nearest-neighbour, dtype kept.
    """
    check_array(data, ndims=(2, 3))
    if not isinstance(profile, IntensityProfile):
        raise InvalidInputError(f"profile: expected an IntensityProfile, got {type(profile).__name__}")
    _check_spacing_fits(data, profile)
    if is_label:
        if profile.resamples:
            return resample_to_spacing(data, profile.spacing or (), profile.target_spacing or (), is_label=True)
        return data if is_dask(data) else data.copy()
    if np.dtype(data.dtype).name != profile.source_dtype:
        logger.warning("apply_profile: data dtype %s differs from the profile's %s", data.dtype, profile.source_dtype)
    # Dask input is not scanned for NaN/Inf up front (that would cost a full pass); they are mapped blockwise.
    if not is_dask(data) and data.dtype.kind == "f" and not np.isfinite(data).all():
        logger.warning("data: NaN/Inf voxels present; NaN -> 0, +Inf -> 1, -Inf -> 0")
    x = _denoise(data, profile) if profile.denoise != "none" else data
    late_uint8 = profile.output == "uint8" and (profile.clahe or profile.resamples)
    direct_uint8 = profile.output == "uint8" and not late_uint8
    args = (profile.low, profile.high, profile.gamma, direct_uint8)
    out_dtype = np.uint8 if direct_uint8 else np.float32
    x = x.map_blocks(_intensity_block, *args, dtype=out_dtype) if is_dask(x) else _intensity_block(x, *args)
    if profile.clahe:
        x = apply_clahe(x, profile.clahe_clip_limit, profile.clahe_kernel_size, per_slice=True)
    if profile.resamples:
        x = resample_to_spacing(x, profile.spacing or (), profile.target_spacing or (), order=1)
    if late_uint8:
        x = x.map_blocks(to_uint8_block, dtype=np.uint8) if is_dask(x) else to_uint8_block(x)
    return x
