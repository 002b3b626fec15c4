"""Text grounding: a phrase -> boxes on a 2D slice, through a Grounding DINO detector the user supplies.

The boxes then prompt a promptable model (SAM, SAM2, the rf backend...) as ordinary box prompts, so a text object of
a prompts file (``{"id": 2, "text": "mitochondrion"}``) becomes one :class:`ObjectPrompt` per detected instance.

**The detector** is a local folder loadable with ``transformers`` (``AutoProcessor`` +
``AutoModelForZeroShotObjectDetection``), ``model_type`` ``grounding-dino`` (``GroundingDinoForObjectDetection``) or
``mm-grounding-dino``. Nothing is ever downloaded: the folder is read with ``local_files_only=True``. Expected folders:

* a Hugging Face checkpoint such as ``IDEA-Research/grounding-dino-tiny`` or ``-base``, obtained on a machine with
  network access by ``git clone https://huggingface.co/IDEA-Research/grounding-dino-tiny`` (with git-lfs) or by
  ``AutoProcessor.from_pretrained(name).save_pretrained(folder)`` and
  ``AutoModelForZeroShotObjectDetection.from_pretrained(name).save_pretrained(folder)``, then copied over;
* it holds ``config.json``, the weights (``model.safetensors``), the tokenizer files (``vocab.txt``/``tokenizer.json``,
  ``tokenizer_config.json``) and the image-processor settings (``preprocessor_config.json``, or a
  ``processor_config.json`` as written by transformers 5).

The original IDEA-Research ``.pth`` checkpoints (``groundingdino_swint_ogc.pth``) are a different format and are not
read here.

**No torchvision.** transformers 5 has two backends for the Grounding DINO image processor: ``torchvision``
(``GroundingDinoImageProcessor``, needs torchvision) and ``pil`` (``GroundingDinoImageProcessorPil``, numpy + Pillow).
The processor is loaded with ``backend="pil"`` explicitly, so it never touches torchvision, even where a broken CUDA
build of it is installed; the model itself (with a transformers Swin backbone, as in the HF checkpoints) needs no
torchvision or timm. Preprocessing is therefore the checkpoint's own: resize (shortest edge 800, longest 1333 for the
IDEA-Research checkpoints), rescale, normalise with the config's mean/std, pad.

**Pipeline of** :meth:`GroundingDetector.detect`: the raw slice (any dtype) is windowed to [0, 1] by the intensity
profile (default: its own 1st/99.8th percentiles), made 8-bit and grey -> RGB; the phrase is lower-cased and ends with
a period (Grounding DINO's convention; ``"cell. nucleus."`` asks for two classes); the model's query scores are the
sigmoid of its logits, maximised over the text tokens; queries above ``box_threshold`` are kept; their boxes
(normalised ``(cx, cy, w, h)``) become pixel boxes ``(y_min, x_min, y_max, x_max)`` of the input slice (corners on pixel
edges, as in :mod:`fmscope.interactive.prompts`), clipped to the slice; boxes with no area left are dropped; the label
of a box is the phrase tokens whose score passes ``text_threshold`` (may be empty). Detections come sorted by score,
best first. No non-maximum suppression is applied (Grounding DINO's queries rarely duplicate).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from fmscope.errors import FileFormatError, InvalidInputError, MissingDependencyError
from fmscope.intensity import IntensityProfile
from fmscope.interactive.prompts import ObjectPrompt
from fmscope.interactive.protocol import rgb8, window_slice
from fmscope.utils.device import resolve_device

logger = logging.getLogger(__name__)

MODEL_TYPES = ("grounding-dino", "mm-grounding-dino")


@dataclass(frozen=True)
class Detection:
    """One detected box: ``(y_min, x_min, y_max, x_max)`` in pixels of the input slice, its score in [0, 1] and the
    phrase tokens it matched."""

    box: tuple[float, float, float, float]
    score: float
    label: str


def cxcywh_to_yxyx(boxes: Any, image_shape: Sequence[int]) -> NDArray[np.float64]:
    """Normalised ``(cx, cy, w, h)`` boxes ``(N, 4)`` -> pixel ``(y_min, x_min, y_max, x_max)`` boxes ``(N, 4)`` of an
    image of shape ``(H, W)``, clipped to ``[0, H] x [0, W]`` (corners on pixel edges: ``(0.5, 0.5, 1, 1)`` is the
    whole image ``(0, 0, H, W)``)."""
    b = np.asarray(boxes, dtype=np.float64)
    if b.ndim != 2 or b.shape[1] != 4:
        raise InvalidInputError(f"boxes: expected an (N, 4) array of (cx, cy, w, h), got shape {b.shape}")
    if len(image_shape) != 2 or any(int(s) < 1 for s in image_shape):
        raise InvalidInputError(f"image_shape: expected (H, W) with H, W >= 1, got {tuple(image_shape)}")
    h, w = float(image_shape[0]), float(image_shape[1])
    cx, cy, bw, bh = b[:, 0], b[:, 1], b[:, 2], b[:, 3]
    out = np.stack([(cy - bh / 2) * h, (cx - bw / 2) * w, (cy + bh / 2) * h, (cx + bw / 2) * w], axis=1)
    out[:, [0, 2]] = np.clip(out[:, [0, 2]], 0.0, h)
    out[:, [1, 3]] = np.clip(out[:, [1, 3]], 0.0, w)
    return out


def select_detections(
    probs: Any,
    boxes: Any,
    image_shape: Sequence[int],
    *,
    box_threshold: float,
    text_threshold: float,
    token_ids: Sequence[int] = (),
    content_tokens: Any = None,
    decode: Callable[[list[int]], str] | None = None,
) -> list[Detection]:
    """Detections from one image's model output, best first (pure function; the post-processing of ``detect``).

    ``probs`` ``(Q, T)``: per-query, per-text-token probabilities (sigmoid of the logits; padding tokens 0);
    ``boxes`` ``(Q, 4)``: normalised ``(cx, cy, w, h)``. A query is kept when its best token probability is above
    ``box_threshold``; its label decodes the ``token_ids`` at the positions where ``content_tokens`` (bool ``(T,)``,
    default all) is true and the probability is above ``text_threshold``. Boxes with no area after clipping to the
    image are dropped.
    """
    p = np.asarray(probs, dtype=np.float64)
    if p.ndim != 2:
        raise InvalidInputError(f"probs: expected a (queries, tokens) array, got shape {p.shape}")
    b = np.asarray(boxes, dtype=np.float64)
    if b.shape != (p.shape[0], 4):
        raise InvalidInputError(f"boxes: expected shape ({p.shape[0]}, 4) to match probs, got {b.shape}")
    scores = p.max(axis=1) if p.shape[1] else np.zeros(p.shape[0])
    pixel = cxcywh_to_yxyx(b, image_shape)
    ids = [int(t) for t in token_ids]
    n = min(len(ids), p.shape[1])
    content = np.ones(n, dtype=bool) if content_tokens is None else np.asarray(content_tokens, dtype=bool)[:n]
    out: list[Detection] = []
    for q in np.flatnonzero(scores > box_threshold):
        y0, x0, y1, x1 = (float(v) for v in pixel[q])
        if not (y1 > y0 and x1 > x0):
            continue
        label = ""
        if decode is not None and n:
            picked = [ids[t] for t in np.flatnonzero(content & (p[q, :n] > text_threshold))]
            label = " ".join(decode(picked).replace(".", " ").split()) if picked else ""
        out.append(Detection((y0, x0, y1, x1), float(scores[q]), label))
    out.sort(key=lambda d: d.score, reverse=True)
    return out


def _threshold(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0.0 <= float(value) <= 1.0:
        raise InvalidInputError(f"{name}: expected a number in [0, 1], got {value!r}")
    return float(value)


def _read_model_type(path: Path) -> str:
    """The folder's ``model_type`` (checked before transformers is imported, so errors are specific)."""
    if not path.exists():
        raise FileFormatError(f"grounding model folder '{path}' does not exist")
    if not path.is_dir():
        raise FileFormatError(f"grounding model folder '{path}' is not a folder")
    config_file = path / "config.json"
    if not config_file.is_file():
        raise FileFormatError(
            f"grounding model folder '{path}' has no config.json (expected a Hugging Face Grounding DINO folder)"
        )
    try:
        config = json.loads(config_file.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise FileFormatError(f"grounding model folder '{path}': config.json is not valid JSON: {err}") from None
    model_type = config.get("model_type") if isinstance(config, dict) else None
    if model_type not in MODEL_TYPES:
        raise FileFormatError(
            f"grounding model folder '{path}' holds a model of type {model_type!r}, expected one of {list(MODEL_TYPES)}"
            " (a Grounding DINO checkpoint such as IDEA-Research/grounding-dino-tiny)"
        )
    return str(model_type)


def _window_rgb(image: np.ndarray, profile: IntensityProfile | None) -> np.ndarray:
    """8-bit RGB ``(H, W, 3)`` of a raw 2D slice, windowed by ``profile`` (resampling dropped: boxes stay in the
    slice's pixels) or by the slice's own 1st/99.8th percentiles."""
    if profile is not None and (profile.spacing is not None or profile.target_spacing is not None):
        profile = dataclasses.replace(profile, spacing=None, target_spacing=None)
    return rgb8(window_slice(image, profile)[0])


def _import_transformers() -> tuple[Any, Any]:
    """``AutoProcessor`` and ``AutoModelForZeroShotObjectDetection`` (transformers: the ``text`` extra).

    The SAM backends register their torchvision stand-in only while importing SAM
    (:func:`fmscope.utils.torchvision_compat.torchvision_compat_scope`), so transformers never mistakes it for a real
    torchvision, whichever is imported first.
    """
    try:
        from transformers import AutoModelForZeroShotObjectDetection, AutoProcessor
    except ImportError as err:
        if err.name == "transformers":
            raise MissingDependencyError("transformers", "text") from err
        raise
    return AutoProcessor, AutoModelForZeroShotObjectDetection


class GroundingDetector:
    """A Grounding DINO detector loaded from a local folder (see the module doc)."""

    def __init__(
        self,
        folder: str | os.PathLike[str],
        *,
        box_threshold: float = 0.35,
        text_threshold: float = 0.25,
        device: str = "cpu",
    ) -> None:
        """Load the processor and model from ``folder`` (never from the network). Raises ``FileFormatError`` for a
        missing folder, a folder without ``config.json``, another model type or files transformers cannot load;
        ``MissingDependencyError`` without transformers."""
        self.box_threshold = _threshold(box_threshold, "box_threshold")
        self.text_threshold = _threshold(text_threshold, "text_threshold")
        path = Path(folder).expanduser()
        self.model_type = _read_model_type(path)
        self.folder = path

        self.device = resolve_device(device)
        # Only local folders are ever read; make sure no library underneath tries the Hub either.
        os.environ["HF_HUB_OFFLINE"] = "1"
        os.environ["TRANSFORMERS_OFFLINE"] = "1"
        auto_processor, auto_model = _import_transformers()
        start = time.perf_counter()
        try:
            # backend="pil": the numpy/Pillow image processor, which needs no torchvision (see the module doc).
            self.processor = auto_processor.from_pretrained(str(path), local_files_only=True, backend="pil")
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as err:
            raise FileFormatError(
                f"grounding model folder '{path}': cannot load the processor (tokenizer + image processor): {err}"
            ) from err
        for part in ("tokenizer", "image_processor"):
            if getattr(self.processor, part, None) is None:
                raise FileFormatError(f"grounding model folder '{path}': the processor has no {part}")
        try:
            model, info = auto_model.from_pretrained(str(path), local_files_only=True, output_loading_info=True)
        except (OSError, ValueError, KeyError, TypeError, RuntimeError) as err:
            raise FileFormatError(f"grounding model folder '{path}': cannot load the model: {err}") from err
        missing = sorted(info.get("missing_keys", ()))
        mismatched = sorted(str(k) for k in info.get("mismatched_keys", ()))
        if missing or mismatched:
            raise FileFormatError(
                f"grounding model folder '{path}': the weights do not fit the model "
                f"(missing {len(missing)}: {missing[:10]}; mismatched {len(mismatched)}: {mismatched[:10]})"
            )
        unexpected = sorted(info.get("unexpected_keys", ()))
        if unexpected:
            logger.warning(
                "grounding model %s: %d unexpected weights ignored: %s", path, len(unexpected), unexpected[:10]
            )
        self.model = model.to(self.device).eval()
        self.max_text_len = int(getattr(self.model.config, "max_text_len", 256))
        logger.info(
            "loaded grounding model %s (%s) from %s in %.2f s",
            type(self.model).__name__,
            self.model_type,
            path,
            time.perf_counter() - start,
        )

    @staticmethod
    def phrase(text: str) -> str:
        """Grounding DINO's form of a phrase: lower case, single spaces, ending with a period."""
        phrase = " ".join(text.lower().split())
        return phrase if phrase.endswith(".") else phrase + "."

    def detect(self, image2d: np.ndarray, text: str, profile: IntensityProfile | None = None) -> list[Detection]:
        """Boxes of ``text`` on a raw 2D slice ``(H, W)`` of any dtype, best first (see the module doc)."""
        arr = np.asarray(image2d)
        if arr.ndim != 2:
            raise InvalidInputError(
                f"image2d: grounding works on 2D slices (H, W), got shape {arr.shape}; detect slice by slice"
            )
        if arr.shape[0] < 1 or arr.shape[1] < 1:
            raise InvalidInputError(f"image2d: expected a non-empty slice, got shape {arr.shape}")
        if not isinstance(text, str) or not text.strip() or not text.strip(" .\t\n"):
            raise InvalidInputError(f"text: expected a non-empty phrase, got {text!r}")
        import torch
        from PIL import Image

        rgb = _window_rgb(arr, profile)
        inputs = self.processor(images=Image.fromarray(rgb), text=self.phrase(text), return_tensors="pt")
        n_tokens = int(inputs["input_ids"].shape[1])
        if n_tokens > self.max_text_len:
            raise InvalidInputError(
                f"text: the phrase has {n_tokens} tokens, the grounding model takes at most {self.max_text_len}"
            )
        inputs = inputs.to(self.device)
        with torch.inference_mode():
            outputs = self.model(**inputs)
        probs = torch.sigmoid(outputs.logits[0].float()).cpu().numpy()
        boxes = outputs.pred_boxes[0].float().cpu().numpy()
        token_ids = [int(t) for t in inputs["input_ids"][0].tolist()]
        tokenizer = self.processor.tokenizer
        special = set(tokenizer.all_special_ids)
        content = np.array([t not in special for t in token_ids], dtype=bool)
        return select_detections(
            probs,
            boxes,
            arr.shape,
            box_threshold=self.box_threshold,
            text_threshold=self.text_threshold,
            token_ids=token_ids,
            content_tokens=content,
            decode=lambda ids: str(tokenizer.decode(ids, skip_special_tokens=True)),
        )

    def __repr__(self) -> str:
        return (
            f"GroundingDetector({str(self.folder)!r}, box_threshold={self.box_threshold}, "
            f"text_threshold={self.text_threshold}, device={str(self.device)!r})"
        )


def prompts_from_text(
    detector: GroundingDetector,
    image2d: np.ndarray,
    text: str,
    *,
    first_id: int = 1,
    max_objects: int | None = None,
    profile: IntensityProfile | None = None,
) -> list[ObjectPrompt]:
    """One box :class:`ObjectPrompt` per detection of ``text`` on a 2D slice (best first, ids ``first_id, ...``,
    at most ``max_objects``); each keeps the phrase in ``.text``. Empty when nothing passes the thresholds."""
    if isinstance(first_id, bool) or not isinstance(first_id, int) or first_id < 1:
        raise InvalidInputError(f"first_id: expected a positive integer, got {first_id!r}")
    if max_objects is not None and (
        isinstance(max_objects, bool) or not isinstance(max_objects, int) or max_objects < 1
    ):
        raise InvalidInputError(f"max_objects: expected None or an integer >= 1, got {max_objects!r}")
    detections = detector.detect(image2d, text, profile=profile)
    if max_objects is not None:
        detections = detections[:max_objects]
    phrase = text.strip()
    return [ObjectPrompt(first_id + k, box=d.box, text=phrase) for k, d in enumerate(detections)]


def require_grounding(prompt_text: str, detector: GroundingDetector | None) -> GroundingDetector:
    """``detector``, or an ``InvalidInputError`` saying how to supply one when a text prompt came without it."""
    if detector is None:
        raise InvalidInputError(
            f"text prompt {prompt_text!r} needs a grounding model: pass --grounding FOLDER "
            "(a local Grounding DINO folder loadable with transformers)"
        )
    return detector


def text_to_prompts(
    detector: GroundingDetector | None,
    image: np.ndarray,
    prompts: Sequence[ObjectPrompt],
    phrases: Sequence[str] = (),
    *,
    text_slice: int | None = None,
    profile: IntensityProfile | None = None,
) -> list[ObjectPrompt]:
    """``prompts`` with every text-only object (and each extra phrase of ``phrases``) replaced by one box object per
    detection on a 2D image, or on slice ``text_slice`` of a ``(Z, Y, X)`` stack (default: the middle one); new ids
    follow the largest given id. Without text nothing is detected and ``prompts`` come back unchanged; text without a
    ``detector`` is refused, saying how to supply one."""
    is_text = [p.text is not None and not p.has_positive for p in prompts]
    wanted = [p.text for p, t in zip(prompts, is_text, strict=True) if t and p.text] + list(phrases)
    if not wanted:
        return list(prompts)
    found_by = require_grounding(wanted[0], detector)
    kept = [p for p, t in zip(prompts, is_text, strict=True) if not t]
    z = None
    if np.ndim(image) == 3:
        depth = int(np.shape(image)[0])
        z = depth // 2 if text_slice is None else text_slice
        if isinstance(z, bool) or not isinstance(z, int | np.integer) or not 0 <= z < depth:
            raise InvalidInputError(f"text_slice: expected a slice in [0, {depth - 1}], got {text_slice!r}")
    plane = np.asarray(image if z is None else image[int(z)])
    next_id = max((p.id for p in kept), default=0) + 1
    for phrase in wanted:
        found = prompts_from_text(found_by, plane, phrase, first_id=next_id, profile=profile)
        logger.info("'%s': %d box(es)%s", phrase, len(found), "" if z is None else f" on slice {z}")
        for p in found:
            box = p.box if z is None or p.box is None else (float(z), *p.box)
            kept.append(ObjectPrompt(p.id, box=box, text=phrase))
        next_id += len(found)
    return kept
