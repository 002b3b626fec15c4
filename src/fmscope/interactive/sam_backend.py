"""Segment Anything (SAM v1, ``segment-anything==1.0``) behind the promptable-model protocol.

``embed`` windows a raw 2D slice of any dtype to 8 bits (the given volume profile, or the slice's own 1st/99.8th
percentiles), repeats it to RGB and runs the image encoder once (SAM resizes the longest side to 1024 and pads to a
square: about 16 s per slice for vit_b on two CPU cores). ``predict`` runs the light prompt encoder and mask decoder on
the cached embedding (about 0.1 s), so embeddings of many slices can be kept and prompted in any order.

Axes: fmscope prompts are ``(y, x)`` points and ``(y_min, x_min, y_max, x_max)`` boxes whose corners are pixel edges;
SAM takes ``(x, y)`` pixel indices (it adds 0.5 itself to reach pixel centres) and boxes ``(x0, y0, x1, y1)`` from the
first to the last covered pixel. :func:`sam_points` and :func:`sam_box` are the only places that convert.

Weights come from a local file only (:mod:`fmscope.interactive.checkpoints`). Text prompts need a grounding model to
turn a phrase into boxes first; SAM alone refuses them.
"""

from __future__ import annotations

import functools
import logging
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar, cast

import numpy as np
from numpy.typing import NDArray

from fmscope.errors import InvalidInputError, MissingDependencyError
from fmscope.intensity import IntensityProfile
from fmscope.interactive.checkpoints import load_weights, locate_checkpoint, read_checkpoint
from fmscope.interactive.prompts import ObjectPrompt, Stroke
from fmscope.interactive.protocol import PromptMask, check_slice, file_stamp, rgb8, window_slice
from fmscope.utils.device import resolve_device as _resolve_device

if TYPE_CHECKING:
    import torch

logger = logging.getLogger(__name__)

MASK_LOGIT = 8.0
"""Magnitude of the low-resolution logits a boolean mask prompt becomes (inside +, outside -; sigmoid(8) ~ 0.9997)."""


# --------------------------------------------------------------------------------------------- shared helpers


F = TypeVar("F", bound=Callable[..., Any])


def serialized(method: F) -> F:
    """Run a backend method under the backend's lock: SAM's predictor keeps the image it was given last, so an
    embedding job and a click on another slice must not use it at once (the web app does both)."""

    @functools.wraps(method)
    def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
        with self._lock:
            return method(self, *args, **kwargs)

    return cast(F, wrapper)


def window_to_rgb8(
    image: np.ndarray, profile: IntensityProfile | None = None
) -> tuple[NDArray[np.uint8], IntensityProfile]:
    """An ``(Y, X, 3)`` uint8 image from a raw 2D slice, windowed by ``profile`` (default: the slice's 1st/99.8th
    percentiles), and the profile used. Profiles that resample are refused (the slice must keep its shape)."""
    if profile is not None and not isinstance(profile, IntensityProfile):
        raise InvalidInputError(f"profile: expected an IntensityProfile, got {type(profile).__name__}")
    if profile is not None and profile.resamples:
        raise InvalidInputError(
            "profile: it resamples (spacing -> target_spacing), which would change the slice's shape; use a profile "
            "without target_spacing for prompting"
        )
    window, used = window_slice(image, profile)
    return rgb8(window), used


STROKE_POINTS = 3  # points a stroke gives SAM: its ends and its middle (SAM takes points, not brush pixels)


def stroke_points(stroke: Stroke) -> list[tuple[float, ...]]:
    """Up to :data:`STROKE_POINTS` points along a stroke's polyline (first, middle, last vertex)."""
    pts = list(stroke.points)
    picks = sorted({round(i * (len(pts) - 1) / max(STROKE_POINTS - 1, 1)) for i in range(STROKE_POINTS)})
    return [pts[i] for i in picks]


def sam_points(prompt: ObjectPrompt) -> tuple[NDArray[np.float32] | None, NDArray[np.int32] | None]:
    """SAM point inputs of a 2D prompt: ``(N, 2)`` coordinates in ``(x, y)`` order and labels (1 positive, 0
    negative), or ``(None, None)`` without points. A stroke counts as a few points along it."""
    points = [(p, 1) for p in prompt.positive] + [(p, 0) for p in prompt.negative]
    points += [(p, int(s.positive)) for s in prompt.strokes for p in stroke_points(s)]
    if not points:
        return None, None
    for p, _ in points:
        if len(p) != 2:
            raise InvalidInputError(f"prompt {prompt.id}: expected 2D (y, x) points on a slice, got {p}")
    coords = np.array([[p[1], p[0]] for p, _ in points], dtype=np.float32)
    labels = np.array([label for _, label in points], dtype=np.int32)
    return coords, labels


def sam_box(box: tuple[float, ...]) -> NDArray[np.float32]:
    """SAM box ``(x0, y0, x1, y1)`` (first and last covered pixel) of an fmscope box ``(y_min, x_min, y_max, x_max)``
    whose corners are pixel edges."""
    if len(box) != 4:
        raise InvalidInputError(f"box: expected (y_min, x_min, y_max, x_max) on a slice, got {box}")
    y0, x0, y1, x1 = (float(v) for v in box)
    return np.array([x0, y0, max(x0, x1 - 1.0), max(y0, y1 - 1.0)], dtype=np.float32)


def mask_to_logits(mask: NDArray[np.bool_], content_hw: tuple[int, int], frame: int = 256) -> NDArray[np.float32]:
    """A boolean mask as a ``(1, frame, frame)`` low-resolution logit prompt.

    The mask is resized to ``content_hw`` (the image's extent inside the model's square input, scaled to the
    ``frame`` grid) and padded with background to the square; inside is ``+MASK_LOGIT``, outside ``-MASK_LOGIT``
    (resized edges in between)."""
    import torch
    import torch.nn.functional as F

    m = torch.from_numpy(np.asarray(mask, dtype=np.float32))[None, None]
    h, w = max(1, min(frame, content_hw[0])), max(1, min(frame, content_hw[1]))
    small = F.interpolate(m, size=(h, w), mode="bilinear", align_corners=False, antialias=True)[0, 0]
    canvas = torch.zeros((frame, frame), dtype=torch.float32)
    canvas[:h, :w] = small
    return ((canvas * 2.0 - 1.0) * MASK_LOGIT)[None].numpy()


def check_prompt(prompt: ObjectPrompt, mask: NDArray[np.bool_] | None, shape: tuple[int, int], backend: str) -> None:
    """Refuse prompts the model cannot use: text alone, nothing positive, a mask of the wrong shape."""
    if not isinstance(prompt, ObjectPrompt):
        raise InvalidInputError(f"prompt: expected an ObjectPrompt, got {type(prompt).__name__}")
    if prompt.text is not None and not prompt.has_positive and mask is None:
        raise InvalidInputError(
            f"prompt {prompt.id}: a text prompt needs a grounding model (text -> boxes, e.g. Grounding DINO) first; "
            f"{backend} takes points, strokes, boxes and masks"
        )
    if not prompt.has_positive and mask is None:
        raise InvalidInputError(
            f"prompt {prompt.id}: needs a positive point, a positive stroke, a box or a mask prompt on this slice"
        )
    if mask is not None:
        m = np.asarray(mask)
        if m.shape != shape or m.dtype != np.bool_:
            raise InvalidInputError(f"mask: expected a boolean mask of shape {shape}, got {m.dtype} {m.shape}")


def choose_mask(masks: np.ndarray, scores: np.ndarray, low_res: np.ndarray, info: dict[str, Any]) -> PromptMask:
    """The candidate with the highest predicted IoU as a :class:`PromptMask` (score clipped to [0, 1], 0 if empty)."""
    best = int(np.argmax(scores))
    mask = np.asarray(masks[best]) > 0.5 if masks.dtype != np.bool_ else np.asarray(masks[best])
    score = float(np.clip(scores[best], 0.0, 1.0)) if mask.any() else 0.0
    info = {
        **info,
        "candidates": int(len(scores)),
        "predicted_ious": [float(s) for s in scores],
        "low_res_logits": np.asarray(low_res[best], dtype=np.float32),
    }
    return PromptMask(np.ascontiguousarray(mask, dtype=bool), score, info)


def resolve_device(device: str) -> str:
    """Check a torch device string (a CUDA device must be available); the SAM predictors take a string."""
    return str(_resolve_device(device))


def _import_segment_anything() -> Any:
    from fmscope.utils.torchvision_compat import torchvision_compat_scope

    try:
        with torchvision_compat_scope():
            import segment_anything
    except ImportError as exc:
        raise MissingDependencyError("segment-anything", "sam") from exc
    return segment_anything


# --------------------------------------------------------------------------------------------- the backend


@dataclass(frozen=True, eq=False)
class SamEmbedding:
    """The image-encoder output of one slice and the transform that produced it.

    Attributes:
        features: ``(1, 256, 64, 64)`` image embedding.
        original_size: the slice's ``(Y, X)``.
        input_size: its size after resizing the longest side to the encoder's 1024 (before padding).
        scale: ``input_size / original_size``.
        profile: the intensity window used (``IntensityProfile.to_dict()``).
        model: the model name that computed it (an embedding only fits its own model).
    """

    features: torch.Tensor
    original_size: tuple[int, int]
    input_size: tuple[int, int]
    scale: float
    profile: dict[str, Any]
    model: str


def _load_embedding(predictor: Any, embedding: SamEmbedding) -> None:
    """Put a cached embedding into a ``SamPredictor`` as if ``set_image`` had computed it."""
    predictor.features = embedding.features.to(predictor.device)
    predictor.original_size = embedding.original_size
    predictor.input_size = embedding.input_size
    predictor.is_image_set = True


class SamPrompter:
    """SAM v1 promptable backend (``name = 'sam'``); see the module doc.

    Args:
        model: ``vit_b``, ``vit_l`` or ``vit_h``.
        checkpoint: the weights file; default: its official file name in the cache folder (``$FMSCOPE_CACHE``).
        device: torch device.
        verify: refuse a file named like the official one whose size differs (an interrupted download).
    """

    name = "sam"

    def __init__(
        self,
        model: str = "vit_b",
        checkpoint: str | os.PathLike[str] | None = None,
        device: str = "cpu",
        *,
        verify: bool = True,
    ) -> None:
        known, path = locate_checkpoint(model, checkpoint, "sam", verify=verify)
        self.model_name = model
        self.device = resolve_device(device)
        sa = _import_segment_anything()
        state = read_checkpoint(path, known)
        sam = sa.sam_model_registry[known.architecture](checkpoint=None)
        load_weights(sam, state, path, model)
        sam.to(self.device).eval()
        self.checkpoint = path
        self.sam = sam
        self._predictor = sa.SamPredictor(sam)
        self._lock = threading.RLock()

    def signature(self) -> dict[str, Any]:
        """The model and its weights file (size and time)."""
        return {"model_name": self.model_name, "checkpoint": file_stamp(self.checkpoint)}

    @serialized
    def embed(self, image: np.ndarray, profile: IntensityProfile | None = None) -> SamEmbedding:
        """Window a raw 2D slice to RGB8 and run the image encoder once (see the module doc)."""
        import torch

        arr = check_slice(image, "SAM")
        rgb, used = window_to_rgb8(arr, profile)
        with torch.inference_mode():
            self._predictor.set_image(rgb, image_format="RGB")
        p = self._predictor
        features = p.features.detach()
        self._predictor.reset_image()
        original = (int(arr.shape[0]), int(arr.shape[1]))
        input_size = (int(p.input_size[0]), int(p.input_size[1]))
        return SamEmbedding(
            features, original, input_size, input_size[0] / original[0], used.to_dict(), self.model_name
        )

    def _check_embedding(self, embedding: Any) -> SamEmbedding:
        if not isinstance(embedding, SamEmbedding):
            raise InvalidInputError(f"embedding: expected a SamEmbedding from embed(), got {type(embedding).__name__}")
        if embedding.model != self.model_name:
            raise InvalidInputError(
                f"embedding: computed by SAM {embedding.model}, this prompter is {self.model_name}; embed again"
            )
        return embedding

    @serialized
    def predict(
        self, embedding: SamEmbedding, prompt: ObjectPrompt, mask: NDArray[np.bool_] | None = None
    ) -> PromptMask:
        """The mask of one object from its 2D prompts (points, box) and an optional boolean mask prompt.

        With a single point and nothing else SAM proposes three masks and the one with the highest predicted IoU is
        kept; otherwise one mask is predicted. ``info`` holds the predicted IoUs and the chosen low-res logits.
        """
        import torch

        emb = self._check_embedding(embedding)
        check_prompt(prompt, mask, emb.original_size, "SAM")
        coords, labels = sam_points(prompt)
        box = sam_box(prompt.box) if prompt.box is not None else None
        mask_input = None
        if mask is not None:
            content = (round(emb.input_size[0] / 4), round(emb.input_size[1] / 4))  # 1024 input -> 256 logit grid
            mask_input = mask_to_logits(mask, content)
        multimask = coords is not None and len(coords) == 1 and box is None and mask is None
        _load_embedding(self._predictor, emb)
        try:
            with torch.inference_mode():
                masks, scores, low_res = self._predictor.predict(
                    point_coords=coords,
                    point_labels=labels,
                    box=box,
                    mask_input=mask_input,
                    multimask_output=multimask,
                )
        finally:
            self._predictor.reset_image()
        info = {"backend": self.name, "model": self.model_name, "multimask": multimask}
        result = choose_mask(masks, scores, low_res, info)
        logger.debug("sam prompt %d: %d pixels, score %.3f", prompt.id, int(result.mask.sum()), result.score)
        return result

    @serialized
    def automatic(
        self,
        embedding_or_image: SamEmbedding | np.ndarray,
        *,
        profile: IntensityProfile | None = None,
        points_per_side: int = 32,
        pred_iou_thresh: float = 0.88,
        stability_score_thresh: float = 0.95,
        box_nms_thresh: float = 0.7,
        min_area: int = 0,
    ) -> NDArray[np.int32]:
        """Segment everything: a label image ``(Y, X)`` (0 = background, 1..N) from SAM's automatic mask generator.

        A grid of ``points_per_side``² point prompts is decoded on the slice's embedding (a cached
        :class:`SamEmbedding` is reused, a raw slice is embedded first); masks below the predicted-IoU or stability
        thresholds are dropped, duplicates removed by box NMS. Larger masks are painted first, so a small mask inside a
        larger one stays visible; masks smaller than ``min_area`` pixels are dropped.
        """
        for name, value, lowest in (("points_per_side", points_per_side, 1), ("min_area", min_area, 0)):
            if isinstance(value, bool) or not isinstance(value, int) or value < lowest:
                raise InvalidInputError(f"{name}: expected an integer >= {lowest}, got {value!r}")
        emb = (
            self._check_embedding(embedding_or_image)
            if isinstance(embedding_or_image, SamEmbedding)
            else self.embed(embedding_or_image, profile)
        )
        sa = _import_segment_anything()

        class _CachedPredictor(sa.SamPredictor):  # type: ignore[name-defined]
            """A predictor whose ``set_image`` loads the cached embedding instead of running the encoder."""

            def set_image(self, image: np.ndarray, image_format: str = "RGB") -> None:
                _load_embedding(self, emb)

        generator = sa.SamAutomaticMaskGenerator(
            self.sam,
            points_per_side=points_per_side,
            pred_iou_thresh=pred_iou_thresh,
            stability_score_thresh=stability_score_thresh,
            box_nms_thresh=box_nms_thresh,
            crop_n_layers=0,
        )
        generator.predictor = _CachedPredictor(self.sam)
        placeholder = np.zeros((*emb.original_size, 3), dtype=np.uint8)  # only its shape is read
        import torch

        with torch.inference_mode():
            records = generator.generate(placeholder)
        labels = np.zeros(emb.original_size, dtype=np.int32)
        kept = 0
        for rec in sorted(records, key=lambda r: int(r["area"]), reverse=True):
            seg = np.asarray(rec["segmentation"], dtype=bool)
            if int(seg.sum()) < max(min_area, 1):
                continue
            kept += 1
            labels[seg] = kept
        # painting smaller masks over larger ones may hide some completely: renumber the visible ones 1..N
        visible = np.unique(labels[labels > 0])
        lut = np.zeros(kept + 1, dtype=np.int32)
        lut[visible] = np.arange(1, len(visible) + 1, dtype=np.int32)
        logger.info("sam automatic: %d masks from %d proposals", len(visible), len(records))
        return lut[labels]
