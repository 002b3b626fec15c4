"""Raw-data adaptation: robust streamed statistics, windowing, gamma, CLAHE, denoising, resampling, and a replayable
:class:`IntensityProfile` that records them. numpy only (no torch); numpy and dask arrays are both accepted.
"""

from fmscope.intensity.profile import IntensityProfile, apply_profile, fit_profile
from fmscope.intensity.resample import resample_to_spacing
from fmscope.intensity.stats import DEFAULT_PERCENTILES, IntensityStats, compute_stats
from fmscope.intensity.transforms import apply_clahe, apply_gamma, denoise, normalize, to_uint8

__all__ = [
    "DEFAULT_PERCENTILES",
    "IntensityProfile",
    "IntensityStats",
    "apply_clahe",
    "apply_gamma",
    "apply_profile",
    "compute_stats",
    "denoise",
    "fit_profile",
    "normalize",
    "resample_to_spacing",
    "to_uint8",
]
