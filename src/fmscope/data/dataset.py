"""``PatchDataset``: sampled, normalised pretraining patches from a manifest (torch ``Dataset``).

At construction each volume is read once for its statistics (percentile window via ``fit_profile``, Otsu foreground
threshold), which are cached; patch locations are then drawn from ``(seed, epoch, entry index)``, so the dataset is
deterministic given ``(seed, epoch)`` whatever the worker layout. ``__getitem__`` reads only the patch (lazily where the
format allows; lazy volumes under 16 MiB are read whole once and cached), windows it to [0, 1] float32 with the
volume's percentiles and applies the optional transform, re-seeded from ``(seed, epoch, index)``. The dataset pickles
(DataLoader workers); its per-process read cache does not travel.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from fmscope.data.manifest import Manifest
from fmscope.data.patches import PatchLocation, check_volume, otsu_threshold, patch_size3, sample_patches, to_numpy
from fmscope.errors import InvalidInputError
from fmscope.intensity import fit_profile, normalize
from fmscope.io import read_image

logger = logging.getLogger(__name__)

CACHE_BYTES = 256 * 2**20  # in-memory (numpy) volumes kept per process, in bytes
SMALL_VOLUME_BYTES = 16 * 2**20  # lazy volumes up to this size are read whole once instead of patch by patch


@dataclass(frozen=True)
class VolumeStats:
    """Cached per-volume facts: spatial shape, percentile window ``[low, high]`` and foreground threshold."""

    shape: tuple[int, int, int]
    low: float
    high: float
    threshold: float


@dataclass(frozen=True)
class PatchSample:
    """One pretraining sample: ``image`` (1, Z, Y, X) float32 in [0, 1], its volume's caption and source id."""

    image: torch.Tensor
    caption: str | None
    source: str
    index: int
    location: PatchLocation


def derive_seed(*parts: int) -> int:
    """A 32-bit seed mixed from non-negative integers (stable across processes and platforms)."""
    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(1)[0])


def as_plain_tensor(x: Any) -> torch.Tensor:
    """A MONAI ``MetaTensor`` (or array) as a plain ``torch.Tensor`` (without importing MONAI)."""
    if isinstance(x, torch.Tensor):
        return x.as_tensor() if hasattr(x, "as_tensor") else x
    return torch.as_tensor(x)


def _volume(data: Any, path: str) -> Any:
    """The 3D (Z, Y, X) array of an image; a single channel is dropped, several raise."""
    if data.ndim == 4 and data.shape[0] == 1:
        return data[0]
    check_volume(data, f"volume '{path}'")
    return data


class PatchDataset(Dataset[PatchSample]):
    """Pretraining patches of a manifest; see the module doc.

    Args:
        manifest: volumes with captions and sources.
        patch_size: int or ``(Z, Y, X)``.
        patches_per_volume: patches drawn per volume and epoch.
        seed: base seed of sampling and transforms.
        min_foreground: minimum foreground fraction of a patch (see ``sample_patches``).
        low_percentile, high_percentile: intensity window, mapped to [0, 1].
        transform: callable on a ``(1, Z, Y, X)`` tensor (e.g. ``build_augmentation(...)``); re-seeded per item when
            it has ``set_random_state``.
        stats: precomputed ``VolumeStats`` per entry (skips reading the volumes at construction).
    """

    def __init__(
        self,
        manifest: Manifest,
        patch_size: int | Sequence[int],
        patches_per_volume: int,
        *,
        seed: int = 0,
        min_foreground: float = 0.05,
        low_percentile: float = 1.0,
        high_percentile: float = 99.8,
        transform: Callable[[Any], Any] | None = None,
        stats: Sequence[VolumeStats] | None = None,
    ) -> None:
        if not isinstance(manifest, Manifest) or not manifest.entries:
            raise InvalidInputError(f"manifest: expected a non-empty Manifest, got {manifest!r:.80}")
        if isinstance(patches_per_volume, bool) or not isinstance(patches_per_volume, int) or patches_per_volume < 1:
            raise InvalidInputError(f"patches_per_volume: expected a positive int, got {patches_per_volume!r}")
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise InvalidInputError(f"seed: expected a non-negative int, got {seed!r}")
        if not low_percentile < high_percentile:
            raise InvalidInputError(
                f"low_percentile, high_percentile: expected low < high, got {low_percentile} and {high_percentile}"
            )
        self.manifest = manifest
        self.patch_size = patch_size3(patch_size)
        self.patches_per_volume = patches_per_volume
        self.seed = seed
        self.min_foreground = float(min_foreground)
        self.low_percentile = float(low_percentile)
        self.high_percentile = float(high_percentile)
        self.transform = transform
        self._cache: dict[int, Any] = {}
        self._cache_bytes = 0
        if stats is None:
            self.stats = tuple(self._compute_stats(i) for i in range(len(manifest)))
        else:
            if len(stats) != len(manifest):
                raise InvalidInputError(f"stats: expected {len(manifest)} VolumeStats got {len(stats)}")
            self.stats = tuple(stats)
        self.epoch = 0
        self.locations: tuple[PatchLocation, ...] = self._sample(0)

    # ------------------------------------------------------------------ reading
    def _read(self, i: int) -> Any:
        """The entry's (Z, Y, X) array, cached per process (lazy handles always, numpy volumes up to CACHE_BYTES)."""
        if i in self._cache:
            return self._cache[i]
        entry = self.manifest.entries[i]
        data = _volume(read_image(entry.path, dataset=entry.dataset).data, entry.path)
        nbytes = math.prod(data.shape) * np.dtype(data.dtype).itemsize
        small = nbytes <= SMALL_VOLUME_BYTES and self._cache_bytes + nbytes <= CACHE_BYTES
        if not isinstance(data, np.ndarray) and small:
            data = to_numpy(data)  # a small lazy volume: one read beats many per-patch chunk reads
        if not isinstance(data, np.ndarray):  # a lazy handle: cheap to keep
            self._cache[i] = data
        elif self._cache_bytes + data.nbytes <= CACHE_BYTES:
            self._cache[i] = data
            self._cache_bytes += data.nbytes
        return data

    def _compute_stats(self, i: int) -> VolumeStats:
        data = self._read(i)
        path = self.manifest.entries[i].path
        shape = check_volume(data, f"volume '{path}'")
        profile = fit_profile(data, low_percentile=self.low_percentile, high_percentile=self.high_percentile)
        low, high = float(profile.low), float(profile.high)
        if not low < high:
            raise InvalidInputError(
                f"volume '{path}': percentiles {self.low_percentile}/{self.high_percentile} are equal ({low}); "
                "the volume is (nearly) constant and cannot be normalised"
            )
        thr = otsu_threshold(data, name=f"volume '{path}'") if self.min_foreground > 0 else float("nan")
        logger.debug("volume %s: shape %s window [%g, %g] threshold %g", path, shape, low, high, thr)
        return VolumeStats(shape, low, high, thr)

    # ------------------------------------------------------------------ sampling
    def _sample(self, epoch: int) -> tuple[PatchLocation, ...]:
        out: list[PatchLocation] = []
        for i, entry in enumerate(self.manifest.entries):
            rng = np.random.default_rng([self.seed, epoch, i])
            out += sample_patches(
                self._read(i),
                self.patch_size,
                self.patches_per_volume,
                rng=rng,
                min_foreground=self.min_foreground,
                foreground_threshold=self.stats[i].threshold if self.min_foreground > 0 else None,
                entry_index=i,
                name=f"volume '{entry.path}'",
            )
        return tuple(out)

    def set_epoch(self, epoch: int) -> None:
        """Re-sample the patch locations for ``epoch`` (deterministic given the seed); epoch 0 = construction."""
        if isinstance(epoch, bool) or not isinstance(epoch, int) or epoch < 0:
            raise InvalidInputError(f"epoch: expected a non-negative int, got {epoch!r}")
        if epoch != self.epoch:
            self.locations = self._sample(epoch)
            self.epoch = epoch

    # ------------------------------------------------------------------ Dataset protocol
    def __len__(self) -> int:
        return len(self.locations)

    def __getitem__(self, index: int) -> PatchSample:
        if not -len(self) <= index < len(self):
            raise IndexError(f"index: expected in [0, {len(self)}), got {index}")
        index = index % len(self)
        loc = self.locations[index]
        st = self.stats[loc.entry_index]
        region = to_numpy(self._read(loc.entry_index)[loc.slices])
        image = torch.from_numpy(np.ascontiguousarray(normalize(region, st.low, st.high)))[None]
        if self.transform is not None:
            if hasattr(self.transform, "set_random_state"):
                self.transform.set_random_state(seed=derive_seed(self.seed, self.epoch, index))
            image = as_plain_tensor(self.transform(image)).to(torch.float32)
        entry = self.manifest.entries[loc.entry_index]
        return PatchSample(image, entry.caption, entry.source, index, loc)

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_cache"] = {}
        state["_cache_bytes"] = 0
        return state
