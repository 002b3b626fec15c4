"""A stand-in for the few ``torchvision`` pieces that Segment Anything (SAM, SAM2) import, in pure torch and PIL.

The torchvision wheels reachable on our machines are CUDA builds; with the CPU build of torch ``import torchvision``
fails (``operator torchvision::nms does not exist``). SAM and SAM2 only need a handful of functions from it, so
:func:`install_torchvision_compat` registers a small module of our own under the name ``torchvision`` in
``sys.modules``, and only when ``import torchvision`` fails: a working torchvision is always preferred. It provides

* ``torchvision.ops.boxes.nms``, ``batched_nms``, ``box_area`` (and ``box_iou``): greedy non-maximum suppression;
* ``torchvision.transforms.functional.resize`` and ``to_pil_image`` (PIL based, as SAM's ``ResizeLongestSide`` uses);
* ``torchvision.transforms.Resize``, ``Normalize`` (TorchScript-scriptable ``nn.Module`` s: ``SAM2Transforms`` calls
  ``torch.jit.script`` on them) and ``ToTensor`` (HWC uint8 -> CHW float in [0, 1]).

Boxes are ``(x1, y1, x2, y2)`` as in torchvision. Nothing else of torchvision exists in the stand-in.

Other libraries take any importable ``torchvision`` for the real one (transformers' image utilities then fail on
``torchvision.transforms.InterpolationMode``), so the adapters import SAM/SAM2 inside :func:`torchvision_compat_scope`:
the stand-in is registered while those modules import (they bind what they need at import time) and removed again
afterwards.
"""

from __future__ import annotations

import importlib
import importlib.machinery
import logging
import sys
import types
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

logger = logging.getLogger(__name__)

STUB_VERSION = "0.0.0+fmscope.compat"
_MARK = "__fmscope_compat__"


# --------------------------------------------------------------------------------------------- ops.boxes


def box_area(boxes: torch.Tensor) -> torch.Tensor:
    """Areas of ``(N, 4)`` boxes ``(x1, y1, x2, y2)``."""
    return (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])


def box_iou(boxes1: torch.Tensor, boxes2: torch.Tensor) -> torch.Tensor:
    """Pairwise IoU ``(N, M)`` of two sets of ``(x1, y1, x2, y2)`` boxes."""
    top_left = torch.maximum(boxes1[:, None, :2], boxes2[None, :, :2])
    bottom_right = torch.minimum(boxes1[:, None, 2:], boxes2[None, :, 2:])
    wh = (bottom_right - top_left).clamp(min=0)
    inter = wh[..., 0] * wh[..., 1]
    return inter / (box_area(boxes1)[:, None] + box_area(boxes2)[None, :] - inter)


def nms(boxes: torch.Tensor, scores: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    """Greedy non-maximum suppression: indices of the kept boxes, by decreasing score.

    A box is dropped when its IoU with an already kept, higher-scoring box is above ``iou_threshold``.
    """
    if boxes.numel() == 0:
        return torch.empty(0, dtype=torch.int64, device=boxes.device)
    order = torch.argsort(scores, descending=True, stable=True)
    sorted_boxes = boxes[order].to(torch.float64 if boxes.dtype == torch.float64 else torch.float32)
    overlaps = (box_iou(sorted_boxes, sorted_boxes) > iou_threshold).cpu()
    n = int(sorted_boxes.shape[0])
    suppressed = torch.zeros(n, dtype=torch.bool)
    keep: list[int] = []
    for i in range(n):
        if bool(suppressed[i]):
            continue
        keep.append(i)
        suppressed |= overlaps[i]
    return order[torch.tensor(keep, dtype=torch.int64, device=order.device)]


def batched_nms(boxes: torch.Tensor, scores: torch.Tensor, idxs: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    """NMS within each category ``idxs`` independently (boxes of different categories never suppress each other)."""
    if boxes.numel() == 0:
        return torch.empty(0, dtype=torch.int64, device=boxes.device)
    # shift each category to its own region of the plane so boxes of different categories cannot overlap
    span = boxes.max() - torch.minimum(boxes.min(), torch.zeros((), dtype=boxes.dtype, device=boxes.device)) + 1
    shifted = boxes + (idxs.to(boxes.dtype) * span)[:, None]
    return nms(shifted, scores, iou_threshold)


# --------------------------------------------------------------------------------------------- transforms.functional


def _target_size(height: int, width: int, size: int | Sequence[int]) -> tuple[int, int]:
    """``(h, w)`` for torchvision's ``size``: a pair is the output size, an int the new length of the shorter side."""
    if isinstance(size, int):
        if height <= width:
            return size, int(size * width / height)
        return int(size * height / width), size
    if len(size) == 1:
        return _target_size(height, width, int(size[0]))
    return int(size[0]), int(size[1])


def resize(img: Any, size: int | Sequence[int], interpolation: Any = None, antialias: bool = True) -> Any:
    """Bilinear resize of a PIL image (returns a PIL image) or a ``(..., H, W)`` tensor (returns a tensor)."""
    if isinstance(img, torch.Tensor):
        h, w = _target_size(int(img.shape[-2]), int(img.shape[-1]), size)
        return _resize_tensor(img, [h, w], antialias)
    from PIL import Image

    if not isinstance(img, Image.Image):
        raise TypeError(f"resize: expected a PIL image or a tensor, got {type(img).__name__}")
    h, w = _target_size(img.height, img.width, size)
    return img.resize((w, h), Image.Resampling.BILINEAR)


def to_pil_image(pic: Any, mode: str | None = None) -> Any:
    """A PIL image from an ``(H, W[, C])`` numpy array or a ``(C, H, W)`` tensor (floats in [0, 1] are scaled)."""
    from PIL import Image

    if isinstance(pic, torch.Tensor):
        arr = pic.detach().cpu()
        if arr.is_floating_point():
            arr = (arr * 255).round().clamp(0, 255).to(torch.uint8)
        array = arr.permute(1, 2, 0).numpy() if arr.ndim == 3 else arr.numpy()
    else:
        array = np.asarray(pic)
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    return Image.fromarray(array, mode=mode) if mode else Image.fromarray(array)


def _resize_tensor(x: torch.Tensor, size: list[int], antialias: bool) -> torch.Tensor:
    """Bilinear resize of a ``(C, H, W)`` or ``(N, C, H, W)`` tensor (integer tensors are rounded back)."""
    squeeze = x.dim() == 3
    y = x.unsqueeze(0) if squeeze else x
    floating = y.is_floating_point()
    if not floating:
        y = y.to(torch.float32)
    y = F.interpolate(y, size=size, mode="bilinear", align_corners=False, antialias=antialias)
    if not floating:
        y = y.round().clamp(0, 255).to(x.dtype)
    return y.squeeze(0) if squeeze else y


# --------------------------------------------------------------------------------------------- transforms


class Resize(nn.Module):
    """Bilinear, antialiased resize of a ``(C, H, W)`` or ``(N, C, H, W)`` tensor (TorchScript-scriptable).

    ``size`` is ``(h, w)``, or an int: the new length of the shorter side (aspect ratio kept).
    """

    def __init__(self, size: int | Sequence[int], interpolation: Any = None, antialias: bool = True) -> None:
        super().__init__()
        if interpolation is not None and "BILINEAR" not in str(interpolation).upper():
            raise ValueError(f"Resize: the torchvision stand-in only interpolates bilinearly, got {interpolation!r}")
        self.size = [int(size)] if isinstance(size, int) else [int(s) for s in size]
        self.antialias = bool(antialias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2], x.shape[-1]
        if len(self.size) == 1:
            s = self.size[0]
            out = [s, int(s * w / h)] if h <= w else [int(s * h / w), s]
        else:
            out = [self.size[0], self.size[1]]
        squeeze = x.dim() == 3
        y = x.unsqueeze(0) if squeeze else x
        y = F.interpolate(y, size=out, mode="bilinear", align_corners=False, antialias=self.antialias)
        return y.squeeze(0) if squeeze else y


class Normalize(nn.Module):
    """``(x - mean) / std`` per channel of a ``(C, H, W)`` or ``(N, C, H, W)`` tensor (TorchScript-scriptable)."""

    def __init__(self, mean: Sequence[float], std: Sequence[float], inplace: bool = False) -> None:
        super().__init__()
        self.mean = [float(m) for m in mean]
        self.std = [float(s) for s in std]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = torch.tensor(self.mean, dtype=x.dtype, device=x.device).view(-1, 1, 1)
        std = torch.tensor(self.std, dtype=x.dtype, device=x.device).view(-1, 1, 1)
        return (x - mean) / std


class ToTensor:
    """A ``(C, H, W)`` float tensor from an ``(H, W[, C])`` array or PIL image; uint8 values are scaled to [0, 1].

    Like torchvision's ``ToTensor`` this is a plain callable (it takes numpy/PIL input, so it is never scripted).
    """

    def __call__(self, pic: Any) -> torch.Tensor:
        array = np.asarray(pic)
        if array.ndim == 2:
            array = array[:, :, None]
        if array.ndim != 3:
            raise ValueError(f"ToTensor: expected an (H, W) or (H, W, C) image, got shape {array.shape}")
        tensor = torch.from_numpy(np.ascontiguousarray(array.transpose(2, 0, 1)))
        if array.dtype == np.uint8:
            return tensor.to(torch.float32).div(255.0)
        return tensor.to(torch.float32) if not tensor.is_floating_point() else tensor


# --------------------------------------------------------------------------------------------- installation


def _module(name: str, **attrs: Any) -> types.ModuleType:
    mod = types.ModuleType(name, "fmscope stand-in for torchvision (see fmscope.utils.torchvision_compat)")
    mod.__spec__ = importlib.machinery.ModuleSpec(name, loader=None)
    setattr(mod, _MARK, True)
    for key, value in attrs.items():
        setattr(mod, key, value)
    return mod


def is_compat_installed() -> bool:
    """Whether ``sys.modules['torchvision']`` is this stand-in."""
    return bool(getattr(sys.modules.get("torchvision"), _MARK, False))


def install_torchvision_compat() -> bool:
    """Make ``import torchvision`` work for SAM/SAM2; returns True when the stand-in is in use.

    A real torchvision that imports is left alone (returns False). Only when the import fails (not installed, or a
    CUDA build next to the CPU torch) the stand-in modules are registered; calling this again is cheap.
    """
    if is_compat_installed():
        return True
    try:
        importlib.import_module("torchvision")
        return False
    except Exception as exc:  # ImportError, or RuntimeError from a CUDA-only build
        reason = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
    for name in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]:
        del sys.modules[name]  # drop what a failed import left half-initialised
    ops_fns = {"nms": nms, "batched_nms": batched_nms, "box_area": box_area, "box_iou": box_iou}
    boxes = _module("torchvision.ops.boxes", **ops_fns)
    ops = _module("torchvision.ops", boxes=boxes, **ops_fns)
    functional = _module("torchvision.transforms.functional", resize=resize, to_pil_image=to_pil_image)
    transforms = _module(
        "torchvision.transforms", functional=functional, Resize=Resize, Normalize=Normalize, ToTensor=ToTensor
    )
    root = _module("torchvision", ops=ops, transforms=transforms, __version__=STUB_VERSION)
    for mod in (root, ops, boxes, transforms, functional):
        sys.modules[mod.__name__] = mod
    logger.info("torchvision is not usable (%s); using fmscope's stand-in for SAM/SAM2", reason)
    return True


def _uninstall() -> None:
    for name in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]:
        if getattr(sys.modules[name], _MARK, False):
            del sys.modules[name]


@contextmanager
def torchvision_compat_scope() -> Iterator[bool]:
    """Register the stand-in (when needed) for the duration of a block of imports, then remove it again.

    Yields whether the stand-in is in use. Modules imported inside the block keep the functions they imported; later
    ``import torchvision`` calls (e.g. transformers probing for it) see no torchvision, as before.
    """
    already = is_compat_installed()
    used = install_torchvision_compat()
    try:
        yield used
    finally:
        if used and not already:
            _uninstall()
