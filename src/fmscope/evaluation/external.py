"""Adapters to external segmentation tools for the benchmark harness (optional dependencies).

Cellpose (``pip install 'fmscope[cellpose]'``) runs a model read from a local weights file: nothing here ever
downloads weights (Cellpose itself falls back to downloading its default model when ``pretrained_model`` is not an
existing path; :func:`cellpose_segment` refuses such paths before Cellpose sees them).

Cellpose 4 imports torchvision at import time but does not use it for inference (only for training augmentations and
SAM's prompt tools). When importing ``cellpose.models`` fails because torchvision is missing or cannot be imported
(e.g. the CUDA-only torchvision wheel that pip picks next to a pinned CPU torch), it is imported again with a
placeholder torchvision that exists only for that import; calling one of its functions raises. Cellpose 3 does not
import torchvision.
"""

from __future__ import annotations

import importlib
import importlib.machinery
import inspect
import logging
import math
import os
import pickle
import sys
import time
import traceback
import types
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray

from fmscope.errors import FileFormatError, InvalidInputError, MissingDependencyError
from fmscope.utils.device import resolve_device

logger = logging.getLogger(__name__)

CELLPOSE_EXTRA = "cellpose"
# CellposeModel.eval arguments that cellpose_segment sets itself (diameter= and do_3d= are its own parameters).
_RESERVED_EVAL_OPTIONS = ("x", "diameter", "do_3D", "z_axis", "channel_axis")
_TORCHVISION_MODULES = (
    "torchvision",
    "torchvision.ops",
    "torchvision.ops.boxes",
    "torchvision.transforms",
    "torchvision.transforms.functional",
    "torchvision.transforms._functional_tensor",
)


class _TorchvisionPlaceholder(types.ModuleType):
    """A stand-in torchvision module: every public attribute is a function that raises when called."""

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        qualified = f"{self.__name__}.{name}"

        def unavailable(*args: Any, **kwargs: Any) -> Any:
            raise RuntimeError(
                f"{qualified} needs a working torchvision; cellpose was imported without one, which supports "
                "inference only (not Cellpose training or SAM prompting)"
            )

        unavailable.__name__ = name
        unavailable.__qualname__ = qualified
        return unavailable


def _caused_by_torchvision(err: BaseException) -> bool:
    """Whether an import failed because torchvision is missing or raised while being imported."""
    if isinstance(err, ImportError) and (err.name or "").split(".")[0] == "torchvision":
        return True
    return any("torchvision" in Path(frame.filename).parts for frame in traceback.extract_tb(err.__traceback__))


@contextmanager
def _torchvision_placeholder(reason: str = "not importable") -> Iterator[None]:
    """A placeholder torchvision in ``sys.modules`` while the body runs; the previous entries are restored after."""
    leftovers = {name: mod for name, mod in sys.modules.items() if name.split(".")[0] == "torchvision"}
    for name in leftovers:
        del sys.modules[name]
    placeholders: dict[str, types.ModuleType] = {}
    for name in _TORCHVISION_MODULES:
        module = _TorchvisionPlaceholder(name, "placeholder installed by fmscope.evaluation.external")
        module.__spec__ = importlib.machinery.ModuleSpec(name, None, is_package=True)
        module.__path__ = []
        placeholders[name] = module
        parent, _, child = name.rpartition(".")
        if parent:
            setattr(placeholders[parent], child, module)
    logger.warning(
        "torchvision cannot be imported (%s); importing cellpose with a placeholder (inference only)", reason
    )
    sys.modules.update(placeholders)
    try:
        yield
    finally:
        for name, placeholder in placeholders.items():
            if sys.modules.get(name) is placeholder:
                del sys.modules[name]
        sys.modules.update(leftovers)


def _import_cellpose() -> types.ModuleType | Exception:
    """The ``cellpose.models`` module, or the exception that importing it raised."""
    loaded = sys.modules.get("cellpose.models")
    if loaded is not None:
        return loaded
    try:
        importlib.import_module("cellpose")
        try:
            return importlib.import_module("cellpose.models")
        except Exception as err:
            if not _caused_by_torchvision(err):
                raise
            reason = f"{type(err).__name__}: {err}".splitlines()[0]
        with _torchvision_placeholder(reason):  # Cellpose 4 imports torchvision but does not use it for inference
            return importlib.import_module("cellpose.models")
    except Exception as err:  # any failure (missing package, broken dependency) means "not available"
        return err


def cellpose_available() -> str | None:
    """None when the `cellpose` package can be imported, else the reason (one line, with the pip hint)."""
    result = _import_cellpose()
    if isinstance(result, types.ModuleType):
        return None
    reason = f"{type(result).__name__}: {result}".splitlines()[0]
    return f"cellpose cannot be imported ({reason}); {MissingDependencyError('cellpose', CELLPOSE_EXTRA)}"


def _check_model_path(model: str | os.PathLike[str]) -> Path:
    if not isinstance(model, str | os.PathLike):
        raise InvalidInputError(
            f"model: expected the path of a local Cellpose weights file, got {type(model).__name__}"
        )
    path = Path(os.fspath(model)).expanduser()
    if not path.is_file():
        what = "a folder" if path.is_dir() else "no such file"
        raise InvalidInputError(
            f"model: expected the path of a local Cellpose weights file, got {os.fspath(model)!r} ({what}; "
            "built-in model names such as 'cpsam' are not accepted because weights are never downloaded)"
        )
    return path.resolve()


def _check_images(images: Sequence[np.ndarray], do_3d: bool, stitch: bool) -> list[NDArray[np.float32]]:
    if isinstance(images, np.ndarray) or not isinstance(images, Sequence) or len(images) == 0:
        raise InvalidInputError(f"images: expected a non-empty sequence of arrays, got {type(images).__name__}")
    out: list[NDArray[np.float32]] = []
    for i, image in enumerate(images):
        arr = np.asarray(image)
        if arr.dtype.kind not in "biuf":
            raise InvalidInputError(f"images: expected numeric arrays, got dtype {arr.dtype} for image {i}")
        if arr.ndim not in (2, 3) or 0 in arr.shape:
            raise InvalidInputError(
                f"images: expected non-empty 2D (Y, X) or 3D (Z, Y, X) arrays, got {arr.shape} for image {i}"
            )
        if do_3d and arr.ndim != 3:
            raise InvalidInputError(
                f"do_3d: expected 3D (Z, Y, X) images with do_3d=True, got {arr.shape} for image {i}"
            )
        if not do_3d and arr.ndim == 3 and not stitch:
            raise InvalidInputError(
                f"do_3d: image {i} is 3D {arr.shape}; pass do_3d=True, or stitch_threshold > 0 in eval_options to "
                "segment its planes in 2D and stitch them"
            )
        arr = arr.astype(np.float32)
        if not bool(np.isfinite(arr).all()):
            raise InvalidInputError(
                f"images: expected finite values, got {int(np.count_nonzero(~np.isfinite(arr)))} NaN/inf in image {i}"
            )
        out.append(arr)
    return out


def _check_diameter(diameter: float | None) -> float | None:
    if diameter is None:
        return None
    if isinstance(diameter, bool) or not isinstance(diameter, int | float | np.integer | np.floating):
        raise InvalidInputError(f"diameter: expected None or a positive number of pixels, got {diameter!r}")
    value = float(diameter)
    if not math.isfinite(value) or value <= 0:
        raise InvalidInputError(f"diameter: expected None or a positive number of pixels, got {diameter!r}")
    return value


def _check_eval_options(eval_fn: Callable[..., Any], eval_options: Mapping[str, Any]) -> None:
    reserved = sorted(set(eval_options) & set(_RESERVED_EVAL_OPTIONS))
    if reserved:
        raise InvalidInputError(
            f"eval_options: {reserved} are set by cellpose_segment (use its diameter= and do_3d= parameters; images "
            "are single-channel (Y, X) or (Z, Y, X))"
        )
    accepted = set(inspect.signature(eval_fn).parameters) - {"self"}
    unknown = sorted(set(eval_options) - accepted)
    if unknown:
        raise InvalidInputError(
            f"eval_options: expected CellposeModel.eval arguments, got unknown {unknown} "
            f"(accepted: {sorted(accepted - set(_RESERVED_EVAL_OPTIONS))})"
        )


def _load_model(models: types.ModuleType, path: Path, device: torch.device) -> Any:
    """``CellposeModel`` from the weights file ``path`` (an existing file, so Cellpose never downloads)."""
    model_cls = models.CellposeModel
    kwargs: dict[str, Any] = {"gpu": device.type != "cpu", "pretrained_model": os.fspath(path), "device": device}
    if device.type == "cpu" and "use_bfloat16" in inspect.signature(model_cls).parameters:
        kwargs["use_bfloat16"] = False  # Cellpose 4 defaults to bfloat16, about 4x slower than float32 on a CPU
    start = time.perf_counter()
    try:
        model = model_cls(**kwargs)
    except (RuntimeError, ValueError, OSError, KeyError, EOFError, pickle.UnpicklingError) as err:
        first = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise FileFormatError(f"model: cannot load Cellpose weights from {path}: {first}") from err
    logger.info("cellpose: loaded %s on %s in %.1f s", path, device, time.perf_counter() - start)
    return model


def _cellpose_major() -> int:
    version = str(getattr(sys.modules.get("cellpose"), "version", ""))
    head = version.split(".")[0]
    return int(head) if head.isdigit() else 0


def cellpose_segment(
    images: Sequence[np.ndarray],
    *,
    model: str | os.PathLike[str],
    diameter: float | None = None,
    do_3d: bool = False,
    device: str = "cpu",
    **eval_options: Any,
) -> list[np.ndarray]:
    """Instance labels (uint32, same spatial shape) for each 2D (Y, X) or 3D (Z, Y, X) float image (already
    normalised to [0, 1]) from a Cellpose model loaded from a LOCAL weights file `model` (never downloaded: a path
    that does not exist -> InvalidInputError naming `model`; nothing may trigger a download from the internet).

    ``diameter`` is the typical object diameter in pixels; images are rescaled by 30 / diameter (Cellpose 4; Cellpose 3
    uses the model's diam_mean) before the network. None: no rescaling.
    With ``do_3d`` each image must be 3D and is segmented as a volume (``do_3D=True``, ``z_axis=0``); without it,
    3D images need ``stitch_threshold > 0`` in ``eval_options`` (planes segmented in 2D, then stitched).
    ``eval_options`` go to ``CellposeModel.eval`` unchanged; Cellpose's own percentile normalisation stays on
    (``normalize=True``) unless they say otherwise. On the CPU the model runs in float32 (Cellpose 4's bfloat16
    default is much slower there).
    """
    weights = _check_model_path(model)
    if not isinstance(do_3d, bool):
        raise InvalidInputError(f"do_3d: expected a bool, got {do_3d!r}")
    stitch = eval_options.get("stitch_threshold")
    arrays = _check_images(images, do_3d, isinstance(stitch, int | float | np.number) and float(stitch) > 0)
    diam = _check_diameter(diameter)
    torch_device = resolve_device(device)
    models = _import_cellpose()
    if not isinstance(models, types.ModuleType):
        raise MissingDependencyError("cellpose", CELLPOSE_EXTRA) from models
    _check_eval_options(models.CellposeModel.eval, eval_options)
    options: dict[str, Any] = {"normalize": True, **eval_options}
    if _cellpose_major() == 3 and "channels" not in options:
        options["channels"] = [0, 0]  # Cellpose 3: grayscale input
    cp_model = _load_model(models, weights, torch_device)

    labels: list[np.ndarray] = []
    for i, arr in enumerate(arrays):
        volume = arr.ndim == 3
        start = time.perf_counter()
        out = cp_model.eval(arr, diameter=diam, do_3D=do_3d, z_axis=0 if volume else None, channel_axis=None, **options)
        masks = np.asarray(out[0])
        if masks.shape != arr.shape:
            if masks.size != arr.size:
                raise RuntimeError(f"cellpose returned masks of shape {masks.shape} for image {i} of shape {arr.shape}")
            masks = masks.reshape(arr.shape)  # Cellpose squeezes singleton axes
        result = masks.astype(np.uint32)
        labels.append(result)
        logger.info(
            "cellpose: image %d %s -> %d objects in %.1f s",
            i,
            arr.shape,
            len(np.unique(result)) - int(result.min() == 0),
            time.perf_counter() - start,
        )
    return labels
