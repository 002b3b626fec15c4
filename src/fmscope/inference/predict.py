"""Sliding-window prediction over 2D or 3D volumes of any size, with memory bounded by one slab of windows.

The volume is tiled with overlapping windows (``window_starts`` per axis, the last window aligned to the end), each
window is predicted, weighted by an importance map (a Gaussian as in MONAI / nnU-Net, or constant) and the weighted
predictions are averaged. The result is exact for any predictor that commutes with cropping (pointwise functions).

Memory: windows are processed in *slabs*, the windows sharing one start along the first spatial axis. Accumulators
(weighted sum ``(C_out, window[0], Y, X)`` and weight sum ``(window[0], Y, X)``) exist only for the rows of axis 0 that
the current slab covers; rows no later window can reach are finalised and written to ``out`` (a numpy array or a zarr
array on disk) before the next slab. The input is read one slab at a time by slicing (one read per slab, not per
window: a dask or zarr input decodes each chunk once per slab), so a zarr or dask input is never loaded whole. Peak
memory is thus O(window[0] x Y x X x (C_out + 1 + C_in)): bounded by the window along Z, not by the volume, but it grows
with the Y x X extent (one slab must fit in memory). On a GPU the accumulators live on the GPU when they take at most a
quarter of its free memory, so that window predictions are never copied to the host one by one: only finished rows
are (see :func:`blend_device`).
"""

from __future__ import annotations

import itertools
import logging
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch

from fmscope.errors import InvalidInputError
from fmscope.utils.progress import ProgressCallback, make_progress

logger = logging.getLogger(__name__)

PAD_MODES = ("reflect", "constant")
Predictor = Callable[[torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class WindowConfig:
    """Settings of :func:`sliding_window_predict`.

    ``window`` is the window size in voxels, ``(Z, Y, X)`` or ``(Y, X)``; its length decides the spatial ndim.
    ``overlap`` is the fraction of the window shared by neighbours along each axis, in [0, 1). ``blend`` weights each
    window by a Gaussian (sigma = window / 8 per axis) or uniformly. ``batch_size`` windows go into one forward call.
    ``flips`` averages the prediction over all 2^ndim flips of the spatial axes (test-time augmentation). ``pad_mode``
    pads inputs smaller than the window: ``"reflect"`` (edge-symmetric when the input is too small to reflect) or
    ``"constant"`` (zeros).
    """

    window: tuple[int, ...]
    overlap: float = 0.25
    blend: Literal["gaussian", "constant"] = "gaussian"
    batch_size: int = 4
    flips: bool = False
    pad_mode: str = "reflect"

    def __post_init__(self) -> None:
        window = tuple(self.window)
        if len(window) not in (2, 3) or any(not isinstance(w, int | np.integer) or w < 1 for w in window):
            raise InvalidInputError(f"window: expected 2 or 3 integers >= 1, got {self.window!r}")
        object.__setattr__(self, "window", tuple(int(w) for w in window))
        if not 0.0 <= self.overlap < 1.0:
            raise InvalidInputError(f"overlap: expected a value in [0, 1), got {self.overlap}")
        if self.blend not in ("gaussian", "constant"):
            raise InvalidInputError(f"blend: expected 'gaussian' or 'constant', got {self.blend!r}")
        if self.batch_size < 1:
            raise InvalidInputError(f"batch_size: expected an integer >= 1, got {self.batch_size}")
        if self.pad_mode not in PAD_MODES:
            raise InvalidInputError(f"pad_mode: expected one of {PAD_MODES}, got {self.pad_mode!r}")


def window_starts(size: int, window: int, overlap: float) -> list[int]:
    """Start offsets of the windows along one axis of length ``size``.

    The step is ``max(1, round(window * (1 - overlap)))``; the last window is aligned to the end so every voxel is
    covered and no window leaves the volume. When ``size <= window`` there is one window at 0 (the input is padded).
    """
    if size < 1 or window < 1:
        raise InvalidInputError(f"size, window: expected integers >= 1, got size={size}, window={window}")
    if size <= window:
        return [0]
    step = max(1, round(window * (1.0 - overlap)))
    starts = list(range(0, size - window, step))
    starts.append(size - window)
    return starts


def gaussian_importance(window: tuple[int, ...], sigma_scale: float = 0.125, min_weight: float = 1e-3) -> np.ndarray:
    """Gaussian blend weights over a window: sigma = ``sigma_scale * window`` per axis, centred, max 1.

    Values are clipped below at ``min_weight`` so window borders never get weight 0 (as MONAI and nnU-Net do).
    """
    if sigma_scale <= 0:
        raise InvalidInputError(f"sigma_scale: expected a value > 0, got {sigma_scale}")
    if not 0.0 < min_weight <= 1.0:
        raise InvalidInputError(f"min_weight: expected a value in (0, 1], got {min_weight}")
    weights = np.ones((), dtype=np.float64)
    for w in window:
        coords = np.arange(w, dtype=np.float64) - (w - 1) / 2.0
        sigma = max(sigma_scale * w, 1e-6)
        weights = np.multiply.outer(weights, np.exp(-0.5 * (coords / sigma) ** 2))
    weights /= weights.max()
    return np.maximum(weights, min_weight).astype(np.float32)


def _pad_to(region: np.ndarray, window: Sequence[int], mode: str) -> tuple[np.ndarray, tuple[slice, ...]]:
    """Pad the spatial (trailing) axes of ``region`` to ``window``, centred; return it and the crop that undoes it."""
    lead = region.ndim - len(window)
    crop: list[slice] = []
    for axis, w in enumerate(window):
        size = region.shape[lead + axis]
        before = (w - size) // 2
        after = w - size - before
        crop.append(slice(before, before + size))
        if before == after == 0:
            continue
        widths = [(0, 0)] * region.ndim
        widths[lead + axis] = (before, after)
        if mode == "constant":
            region = np.pad(region, widths, mode="constant")
        else:  # reflect needs pad widths < size; mirror with edge repetition otherwise
            axis_mode = "reflect" if max(before, after) <= size - 1 else "symmetric"
            region = np.pad(region, widths, mode=axis_mode)  # type: ignore[call-overload]
    return region, tuple(crop)


def blend_device(device: torch.device, nbytes: int) -> torch.device:
    """Where a slab's accumulators (``nbytes`` in all) live: on ``device`` when it is a GPU with four times that much
    free memory, else on the CPU. On the GPU each window's prediction is added in place where it was computed; on the
    CPU every window is first copied to the host (one synchronisation per batch), which made fmscope 1.4x slower than
    MONAI on an H200 (README, "prediction of a 256 x 512 x 512 volume")."""
    if device.type != "cuda":
        return torch.device("cpu")
    free, _ = torch.cuda.mem_get_info(device)
    return device if 4 * nbytes <= free else torch.device("cpu")


def _predict_batch(
    predictor: Predictor, batch: torch.Tensor, config: WindowConfig, device: torch.device, result: torch.device
) -> torch.Tensor:
    """Run the predictor (with flip averaging when asked) on a (B, C_in, *window) batch; float32 on ``result``."""
    x = batch.to(device)
    ndim = len(config.window)
    flip_sets: list[tuple[int, ...]] = [()]
    if config.flips:
        axes = tuple(range(2, 2 + ndim))
        flip_sets = [c for r in range(ndim + 1) for c in itertools.combinations(axes, r)]

    def run(dims: tuple[int, ...]) -> torch.Tensor:
        y = predictor(torch.flip(x, dims) if dims else x)
        if not isinstance(y, torch.Tensor):
            raise InvalidInputError(f"predictor: expected a torch.Tensor output, got {type(y).__name__}")
        if y.ndim != batch.ndim or y.shape[0] != batch.shape[0] or tuple(y.shape[2:]) != tuple(batch.shape[2:]):
            raise InvalidInputError(
                f"predictor: expected an output of shape {(batch.shape[0], 'out_channels', *batch.shape[2:])} "
                f"for an input of shape {tuple(batch.shape)}, got {tuple(y.shape)}"
            )
        y = y.float()
        return torch.flip(y, dims) if dims else y

    total = run(flip_sets[0])
    for dims in flip_sets[1:]:
        total = total + run(dims)
    if len(flip_sets) > 1:
        total = total / len(flip_sets)
    return total.detach().to(result)


def _windows(spatial: Sequence[int], config: WindowConfig) -> tuple[list[int], list[tuple[int, ...]]]:
    """Starts along axis 0 (one slab each) and the start tuples along the remaining axes (shared by all slabs)."""
    per_axis = [window_starts(s, w, config.overlap) for s, w in zip(spatial, config.window, strict=True)]
    return per_axis[0], list(itertools.product(*per_axis[1:]))


def _batches(items: Sequence[tuple[int, ...]], size: int) -> Iterator[Sequence[tuple[int, ...]]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


def sliding_window_predict(
    volume: Any,
    predictor: Predictor,
    config: WindowConfig,
    *,
    out_channels: int,
    out: Any = None,
    device: str | torch.device = "cpu",
    progress: ProgressCallback | bool | None = None,
) -> Any:
    """Predict a whole volume window by window and blend the overlapping window predictions.

    ``volume`` is a numpy, dask or zarr array (anything with ``shape``, ``ndim`` and numpy-style slicing), shaped
    ``(*spatial)`` or ``(C_in, *spatial)`` where ``len(config.window)`` is the spatial ndim; it is read one window at a
    time and converted to float32 (no normalisation here). ``predictor`` maps a ``(B, C_in, *window)`` float32 tensor
    on ``device`` to ``(B, out_channels, *window)``; it is called under ``torch.inference_mode``. ``out``, when given,
    is a preallocated ``(out_channels, *spatial)`` array (numpy or zarr, e.g. on disk for volumes larger than memory)
    that is filled slab by slab and returned; else a numpy float32 array is allocated. Peak memory is one slab of
    accumulators (see the module docstring), plus ``out`` when it is a numpy array.
    """
    ndim = len(config.window)
    shape = tuple(int(s) for s in volume.shape)
    if len(shape) not in (ndim, ndim + 1):
        raise InvalidInputError(
            f"volume: expected {ndim} spatial axes, optionally after a channel axis, for a window of {config.window}, "
            f"got shape {shape}"
        )
    has_channels = len(shape) == ndim + 1
    spatial = shape[1:] if has_channels else shape
    if min(spatial) < 1 or (has_channels and shape[0] < 1):
        raise InvalidInputError(f"volume: expected a non-empty array, got shape {shape}")
    if not isinstance(out_channels, int | np.integer) or out_channels < 1:
        raise InvalidInputError(f"out_channels: expected an integer >= 1, got {out_channels!r}")
    expected_out = (int(out_channels), *spatial)
    if out is None:
        out = np.zeros(expected_out, dtype=np.float32)
    elif tuple(out.shape) != expected_out:
        raise InvalidInputError(f"out: expected shape {expected_out} (out_channels, *spatial), got {tuple(out.shape)}")
    dev = torch.device(device)

    # Windows are clamped to the volume: axes smaller than the window get one window, padded to the window size.
    region = tuple(min(w, s) for w, s in zip(config.window, spatial, strict=True))
    if config.blend == "gaussian":
        importance = gaussian_importance(config.window)
    else:
        importance = np.ones(config.window, dtype=np.float32)
    _, weight_crop = _pad_to(np.empty(region, dtype=np.bool_), config.window, "constant")
    # Blending runs in torch (in place, on torch's intra-op threads): a numpy ``acc += pred * w`` made one window-sized
    # temporary per window on one thread, which cost about a fifth of the whole prediction on CPU.
    rows = region[0]
    plane = math.prod(spatial[1:])
    acc_dev = blend_device(dev, 4 * (out_channels + 2) * rows * plane)  # acc, wsum and the slab's weight sum
    weights = torch.from_numpy(np.ascontiguousarray(importance[weight_crop])).to(acc_dev)

    slab_starts, inner_starts = _windows(spatial, config)
    n_windows = len(slab_starts) * len(inner_starts)
    logger.debug(
        "sliding window: %d windows (%d slabs x %d) of %s over %s", n_windows, len(slab_starts), len(inner_starts),
        config.window, shape,
    )  # fmt: skip

    # Every slab has the same windows across (Y, X), so its weight sum is computed once
    slab_wsum = torch.zeros((rows, *spatial[1:]), dtype=torch.float32, device=acc_dev)
    for starts in inner_starts:
        slab_wsum[(slice(None), *(slice(s, s + r) for s, r in zip(starts, region[1:], strict=True)))].add_(weights)
    acc = torch.zeros((out_channels, rows, *spatial[1:]), dtype=torch.float32, device=acc_dev)
    wsum = torch.zeros((rows, *spatial[1:]), dtype=torch.float32, device=acc_dev)
    base = 0  # volume row held by acc[:, 0]
    writable = isinstance(out, np.ndarray) and out.dtype == np.float32 and out.flags.writeable
    out_t = torch.from_numpy(out) if writable and all(st >= 0 for st in out.strides) else None

    def flush(stop: int) -> None:
        """Finalise volume rows [base, stop), write them to ``out`` and shift the buffers up."""
        nonlocal base
        n = stop - base
        if n <= 0:
            return
        acc[:, :n].div_(wsum[None, :n])  # in place: no slab-sized temporaries
        if out_t is not None:  # torch's copy touches the fresh output pages on its threads; numpy's on one
            out_t[:, base:stop].copy_(acc[:, :n])
        else:
            out[(slice(None), slice(base, stop))] = acc[:, :n].cpu().numpy()
        keep = rows - n
        for i in range(keep):  # row by row, forwards: row n + i is read before it is overwritten
            acc[:, i].copy_(acc[:, n + i])
            wsum[i].copy_(wsum[n + i])
        acc[:, keep:].zero_()
        wsum[keep:].zero_()
        base = stop

    channel_index: tuple[slice, ...] = (slice(None),) if has_channels else ()
    with make_progress(progress, n_windows, "predict") as advance, torch.inference_mode():
        for z0 in slab_starts:
            flush(z0)
            # One read per slab (a lazy input computes once, each of its chunks decoded once per slab, not per window)
            slab = np.asarray(volume[(*channel_index, slice(z0, z0 + rows))], dtype=np.float32)
            if not has_channels:
                slab = slab[None]
            for chunk in _batches(inner_starts, config.batch_size):
                inputs: list[torch.Tensor] = []
                crop: tuple[slice, ...] = ()
                for starts in chunk:
                    index = tuple(slice(s, s + r) for s, r in zip(starts, region[1:], strict=True))
                    padded, crop = _pad_to(slab[(slice(None), slice(None), *index)], config.window, config.pad_mode)
                    inputs.append(torch.from_numpy(np.ascontiguousarray(padded)))  # a flipped view: copied
                pred = _predict_batch(predictor, torch.stack(inputs), config, dev, acc_dev)
                if pred.shape[1] != out_channels:
                    raise InvalidInputError(
                        f"out_channels: the predictor returned {pred.shape[1]} channels, expected {out_channels}"
                    )
                for starts, window_pred in zip(chunk, pred, strict=True):
                    inner = tuple(slice(s, s + r) for s, r in zip(starts, region[1:], strict=True))
                    target = (slice(z0 - base, z0 - base + rows), *inner)
                    acc[(slice(None), *target)].addcmul_(window_pred[(slice(None), *crop)], weights)
                advance(len(chunk))
            wsum[z0 - base : z0 - base + rows].add_(slab_wsum)
        flush(spatial[0])
    return out


def count_windows(spatial: Sequence[int], config: WindowConfig) -> int:
    """Number of windows (forward passes before flips) :func:`sliding_window_predict` runs over ``spatial``."""
    if len(spatial) != len(config.window):
        raise InvalidInputError(f"spatial: expected {len(config.window)} sizes, got {tuple(spatial)}")
    return math.prod(len(window_starts(s, w, config.overlap)) for s, w in zip(spatial, config.window, strict=True))
