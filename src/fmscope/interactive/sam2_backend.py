"""SAM 2.1 (``sam2==1.1.0``) behind the promptable-model protocol, plus video-style propagation through a stack.

The 2D protocol is the same as :mod:`fmscope.interactive.sam_backend` (windowing to RGB8, ``(y, x)`` -> ``(x, y)``
conversion, mask prompts as low-resolution logits, best of three masks for a single click). SAM2 resizes every slice to
a 1024² square (no padding), so its 256² logit grid covers the whole slice. hiera_tiny encodes a slice in about 3 s on
two CPU cores: SAM2-tiny is the practical zero-shot model on a CPU.

:meth:`Sam2Prompter.propagate_video` treats a ``(Z, Y, X)`` stack as a video: the objects are prompted on their slices,
then SAM2's memory-attention tracker carries every object forward from the key slice to the last slice and backward to
the first, giving a label volume with one id per object. The stock ``init_state`` reads a folder of JPEG files; the
frames are instead built in memory (windowed once for the whole volume, resized and normalised as SAM2's loader does,
without JPEG's lossy compression) and handed to ``init_state`` in place of its frame loader.

sam2 is not part of any extra (its package metadata requires torchvision, which must not be installed here): install it
with ``SAM2_BUILD_CUDA=0 pip install --no-deps --no-build-isolation sam2==1.1.0`` after ``pip install 'fmscope[sam]'``
(which brings its runtime dependencies hydra-core and iopath).
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from fmscope.errors import InvalidInputError, MissingDependencyError
from fmscope.intensity import IntensityProfile, fit_profile
from fmscope.interactive.checkpoints import load_weights, locate_checkpoint, read_checkpoint
from fmscope.interactive.prompts import ObjectPrompt
from fmscope.interactive.protocol import PromptMask, check_slice, file_stamp
from fmscope.interactive.sam_backend import (
    check_prompt,
    choose_mask,
    mask_to_logits,
    resolve_device,
    sam_box,
    sam_points,
    serialized,
    window_to_rgb8,
)
from fmscope.utils.progress import ProgressCallback, make_progress

if TYPE_CHECKING:
    import torch

logger = logging.getLogger(__name__)

SAM2_INSTALL = (
    "pip install 'fmscope[sam]' && SAM2_BUILD_CUDA=0 pip install --no-deps --no-build-isolation sam2==1.1.0 "
    "(with PIP_CONSTRAINT pointing at fmscope's constraints.txt so that torch stays the CPU build)"
)

# Predictions as build_sam2 sets them up (fall back to multimask when a single mask is unstable; binarise the clicked
# frames' masks for the memory encoder), without the hole filling that needs sam2's CUDA extension.
_OVERRIDES = [
    "++model.sam_mask_decoder_extra_args.dynamic_multimask_via_stability=true",
    "++model.sam_mask_decoder_extra_args.dynamic_multimask_stability_delta=0.05",
    "++model.sam_mask_decoder_extra_args.dynamic_multimask_stability_thresh=0.98",
    "++model.binarize_mask_from_pts_for_mem_enc=true",
]
_IMG_MEAN = (0.485, 0.456, 0.406)
_IMG_STD = (0.229, 0.224, 0.225)
_FRAME_LOADER_LOCK = threading.Lock()


class Sam2NotInstalledError(MissingDependencyError):
    """sam2 (or its runtime dependencies hydra-core/iopath) cannot be imported; the message has the install command."""

    def __init__(self, detail: str) -> None:
        super().__init__("sam2", "sam")
        message = f"this feature needs 'sam2' ({detail}): {SAM2_INSTALL}"
        self.args, self.msg = (message,), message  # ImportError's str() reads .msg


def _import_sam2() -> dict[str, Any]:
    from fmscope.utils.torchvision_compat import torchvision_compat_scope

    try:
        with torchvision_compat_scope():
            import sam2.sam2_video_predictor as video_module
            from sam2.build_sam import build_sam2_video_predictor
            from sam2.sam2_image_predictor import SAM2ImagePredictor
    except ImportError as exc:
        raise Sam2NotInstalledError(f"{type(exc).__name__}: {exc}") from exc
    return {"build": build_sam2_video_predictor, "image_predictor": SAM2ImagePredictor, "video_module": video_module}


@dataclass(frozen=True, eq=False)
class Sam2Embedding:
    """The image-encoder output of one slice (as ``SAM2ImagePredictor.set_image`` computes it) and its transform.

    Attributes:
        image_embed: ``(1, 256, 64, 64)`` lowest-resolution features (no-memory embedding added).
        high_res_feats: the two higher-resolution feature maps used by the mask decoder.
        original_size: the slice's ``(Y, X)``.
        input_size: the encoder input (a 1024² square: the slice is resized without keeping its aspect ratio).
        profile: the intensity window used (``IntensityProfile.to_dict()``).
        model: the model name that computed it.
    """

    image_embed: torch.Tensor
    high_res_feats: tuple[torch.Tensor, ...]
    original_size: tuple[int, int]
    input_size: tuple[int, int]
    profile: dict[str, Any]
    model: str


class Sam2Prompter:
    """SAM 2.1 promptable backend (``name = 'sam2'``) with stack propagation; see the module doc.

    Args:
        model: ``sam2.1_hiera_tiny``, ``sam2.1_hiera_small``, ``sam2.1_hiera_base_plus`` or ``sam2.1_hiera_large``.
        checkpoint: the weights file (``{'model': state_dict}``); default: its official name in the cache folder.
        device: torch device.
        verify: refuse a file named like the official one whose size differs (an interrupted download).
    """

    name = "sam2"

    def __init__(
        self,
        model: str = "sam2.1_hiera_tiny",
        checkpoint: str | os.PathLike[str] | None = None,
        device: str = "cpu",
        *,
        verify: bool = True,
    ) -> None:
        known, path = locate_checkpoint(model, checkpoint, "sam2", verify=verify)
        self.model_name = model
        self.device = resolve_device(device)
        api = _import_sam2()
        state = read_checkpoint(path, known)
        # the video predictor class is a SAM2Base: one model serves the image predictor and the tracker
        net = api["build"](
            known.architecture,
            ckpt_path=None,
            device="cpu",
            apply_postprocessing=False,
            hydra_overrides_extra=_OVERRIDES,
        )
        load_weights(net, state, path, model)
        net.to(self.device).eval()
        self.checkpoint = path
        self.net = net
        self._video_module = api["video_module"]
        self._predictor = api["image_predictor"](net)
        self._lock = threading.RLock()

    # ----------------------------------------------------------------------------------------- 2D protocol

    def signature(self) -> dict[str, Any]:
        """The model and its weights file (size and time)."""
        return {"model_name": self.model_name, "checkpoint": file_stamp(self.checkpoint)}

    @serialized
    def embed(self, image: np.ndarray, profile: IntensityProfile | None = None) -> Sam2Embedding:
        """Window a raw 2D slice to RGB8 and run the image encoder once."""
        import torch

        arr = check_slice(image, "SAM2")
        rgb, used = window_to_rgb8(arr, profile)
        with torch.inference_mode():
            self._predictor.set_image(rgb)
        feats = self._predictor._features
        self._predictor.reset_predictor()
        size = int(self.net.image_size)
        return Sam2Embedding(
            feats["image_embed"].detach(),
            tuple(f.detach() for f in feats["high_res_feats"]),
            (int(arr.shape[0]), int(arr.shape[1])),
            (size, size),
            used.to_dict(),
            self.model_name,
        )

    def _check_embedding(self, embedding: Any) -> Sam2Embedding:
        if not isinstance(embedding, Sam2Embedding):
            raise InvalidInputError(f"embedding: expected a Sam2Embedding from embed(), got {type(embedding).__name__}")
        if embedding.model != self.model_name:
            raise InvalidInputError(
                f"embedding: computed by {embedding.model}, this prompter is {self.model_name}; embed again"
            )
        return embedding

    @serialized
    def predict(
        self, embedding: Sam2Embedding, prompt: ObjectPrompt, mask: NDArray[np.bool_] | None = None
    ) -> PromptMask:
        """The mask of one object from its 2D prompts and an optional boolean mask prompt (see ``SamPrompter``)."""
        import torch

        emb = self._check_embedding(embedding)
        check_prompt(prompt, mask, emb.original_size, "SAM2")
        coords, labels = sam_points(prompt)
        box = sam_box(prompt.box) if prompt.box is not None else None
        mask_input = mask_to_logits(mask, (256, 256)) if mask is not None else None  # the square covers the slice
        multimask = coords is not None and len(coords) == 1 and box is None and mask is None
        p = self._predictor
        p.reset_predictor()
        p._features = {"image_embed": emb.image_embed, "high_res_feats": list(emb.high_res_feats)}
        p._orig_hw = [emb.original_size]
        p._is_image_set = True
        try:
            with torch.inference_mode():
                masks, scores, low_res = p.predict(
                    point_coords=coords,
                    point_labels=labels,
                    box=box,
                    mask_input=mask_input,
                    multimask_output=multimask,
                    normalize_coords=True,
                )
        finally:
            p.reset_predictor()
        info = {"backend": self.name, "model": self.model_name, "multimask": multimask}
        result = choose_mask(masks, scores, low_res, info)
        logger.debug("sam2 prompt %d: %d pixels, score %.3f", prompt.id, int(result.mask.sum()), result.score)
        return result

    # ----------------------------------------------------------------------------------------- stacks

    def _video_frames(self, volume: np.ndarray, profile: IntensityProfile) -> torch.Tensor:
        """``(Z, 3, S, S)`` normalised frames as SAM2's frame loader makes them (windowed to 8 bits first)."""
        import torch
        import torch.nn.functional as F

        size = int(self.net.image_size)
        mean = torch.tensor(_IMG_MEAN, dtype=torch.float32)[:, None, None]
        std = torch.tensor(_IMG_STD, dtype=torch.float32)[:, None, None]
        frames = torch.empty((volume.shape[0], 3, size, size), dtype=torch.float32)
        for z in range(volume.shape[0]):
            rgb, _ = window_to_rgb8(volume[z], profile)
            x = torch.from_numpy(rgb).permute(2, 0, 1)[None].to(torch.float32) / 255.0
            x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)[0]
            frames[z] = (x - mean) / std
        return frames

    def _init_state(self, frames: torch.Tensor, height: int, width: int) -> dict[str, Any]:
        """SAM2's ``init_state`` with the in-memory frames in place of its JPEG-folder loader."""
        module = self._video_module

        def in_memory_frames(**kwargs: Any) -> tuple[torch.Tensor, int, int]:
            return frames, height, width

        with _FRAME_LOADER_LOCK:
            original = module.load_video_frames
            module.load_video_frames = in_memory_frames
            try:
                state: dict[str, Any] = self.net.init_state(video_path="<in-memory stack>", offload_video_to_cpu=True)
            finally:
                module.load_video_frames = original
        return state

    @staticmethod
    def _slice_prompts(prompt: ObjectPrompt, key_slice: int, depth: int) -> dict[int, ObjectPrompt]:
        """The 2D prompts of one object per slice: 2D prompts lie on the key slice, 3D prompts on their own z."""
        coords = [*prompt.positive, *prompt.negative]
        is_3d = any(len(c) == 3 for c in coords) or (prompt.box is not None and len(prompt.box) == 5)
        per_slice = {z: prompt.on_slice(z) for z in prompt.slices()} if is_3d else {key_slice: prompt}
        out = {}
        for z, p in per_slice.items():
            if not 0 <= z < depth:
                raise InvalidInputError(f"prompt {prompt.id}: slice z={z} is outside the stack of {depth} slices")
            if p.positive or p.box is not None:
                out[z] = p
        if not out:
            check_prompt(prompt, None, (1, 1), "SAM2")  # explains text-only prompts
            raise InvalidInputError(f"prompt {prompt.id}: needs a positive point or a box on some slice")
        return out

    @serialized
    def propagate_video(
        self,
        volume: np.ndarray,
        key_slice: int,
        prompts: Sequence[ObjectPrompt],
        profile: IntensityProfile | None = None,
        *,
        progress: ProgressCallback | bool | None = None,
    ) -> NDArray[np.int32]:
        """Segment the prompted objects through a ``(Z, Y, X)`` stack; returns ``(Z, Y, X)`` int32 labels.

        ``prompts``: 2D prompts (``(y, x)`` points, ``(y0, x0, y1, x1)`` boxes) lie on ``key_slice``; 3D prompts
        (``(z, y, x)``, ``(z, y0, x0, y1, x1)``) on their own slices. Each object id becomes its label value; where
        objects overlap the one with the higher logit wins. Propagation runs forward from ``key_slice`` to the last
        slice, then backward to the first. ``profile`` windows the whole volume (default: fitted on it once, 1st/99.8th
        percentiles). Every slice is encoded once (slice 0 twice: SAM2 warms up on it; about 3 s per slice with
        hiera_tiny on two CPU cores), and the resized frames are held in memory (12.6 MB per slice), as SAM2's own
        loader does.
        """
        import torch

        vol = np.asarray(volume)
        if vol.ndim != 3 or 0 in vol.shape:
            raise InvalidInputError(f"volume: expected a non-empty (Z, Y, X) stack, got shape {vol.shape}")
        depth, height, width = (int(s) for s in vol.shape)
        if isinstance(key_slice, bool) or not isinstance(key_slice, int | np.integer) or not 0 <= key_slice < depth:
            raise InvalidInputError(f"key_slice: expected an integer in [0, {depth - 1}], got {key_slice!r}")
        key = int(key_slice)
        if not prompts:
            raise InvalidInputError("prompts: expected at least one object")
        ids = [p.id for p in prompts]
        if len(set(ids)) != len(ids):
            raise InvalidInputError(f"prompts: object ids must be distinct, got {ids}")
        per_object = {p.id: self._slice_prompts(p, key, depth) for p in prompts}
        if profile is None:
            profile = fit_profile(vol, low_percentile=1.0, high_percentile=99.8)
        frames = self._video_frames(vol, profile)
        labels = np.zeros(vol.shape, dtype=np.int32)
        total = (depth - key) + (key + 1 if key > 0 else 0)
        with torch.inference_mode(), make_progress(progress, total, "sam2 propagation") as advance:
            state = self._init_state(frames, height, width)
            for obj_id, slices in per_object.items():
                for z, p in sorted(slices.items()):
                    coords, point_labels = sam_points(p)
                    box = sam_box(p.box) if p.box is not None else None
                    self.net.add_new_points_or_box(
                        state, frame_idx=z, obj_id=obj_id, points=coords, labels=point_labels, box=box
                    )
            for reverse in (False, True):
                for z, obj_ids, logits in self.net.propagate_in_video(state, start_frame_idx=key, reverse=reverse):
                    lg = logits[:, 0].float().cpu().numpy()
                    winner = np.asarray(obj_ids, dtype=np.int32)[np.argmax(lg, axis=0)]
                    labels[z] = np.where((lg > 0).any(axis=0), winner, 0)
                    advance(1)
            self.net.reset_state(state)
        found = sorted(int(v) for v in np.unique(labels) if v)
        logger.info("sam2 propagation: %d slices, objects %s found of %s", depth, found, ids)
        return labels
