"""Apply a fine-tuned task model to a whole image or volume of any size and write the result.

The input is read lazily (Zarr, HDF5, MRC and large TIFF stay on disk), windowed by its own percentiles exactly as in
training (the percentiles are streamed over chunks), predicted by :func:`fmscope.inference.sliding_window_predict`
and written in the output's format, as the model's task says (:meth:`fmscope.tasks.base.Task.output_image`):

* ``segment``: a label image (uint8 class indices), or per-class probabilities (float32, channel first);
* ``deblur``: the restored image, float32 in [0, 1] (the input's percentile window);
* ``classify`` (not dense): one class for the whole input (centre crop), returned and written as JSON.

A 2D model applied to a ``(Z, Y, X)`` stack predicts it slice by slice, each slice windowed by its own percentiles as
the 2D training images were (``instances`` are then labelled in 3D: an object's touching slices share one id).

For a Zarr input the per-class scores are accumulated in a temporary Zarr array beside the output, so memory is bounded
by one slab of windows, not by the volume.
"""

from __future__ import annotations

import contextlib
import json
import logging
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fmscope.data.samples import centre_patch
from fmscope.errors import InvalidInputError
from fmscope.inference.predict import WindowConfig, sliding_window_predict
from fmscope.intensity import apply_profile, fit_profile
from fmscope.io import ImageMetadata, read_image, write_image
from fmscope.tasks.model import TaskModel, load_task_model
from fmscope.utils.atomic import atomic_output, check_output_path
from fmscope.utils.progress import ProgressCallback, make_progress

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class PredictionResult:
    """The written output, the model's task, the input shape; the predicted class (classification) and the model's
    class names in index order."""

    output: Path
    task: str
    shape: tuple[int, ...]
    class_name: str | None = None
    classes: tuple[str, ...] = ()


def _windowed(model: TaskModel, data: Any) -> Any:
    spec = model.spec
    profile = fit_profile(data, low_percentile=spec.low_percentile, high_percentile=spec.high_percentile)
    return apply_profile(data, profile)


def predict_array(
    model: TaskModel,
    image: Any,
    *,
    overlap: float = 0.5,
    flips: bool = False,
    batch_size: int = 2,
    out: Any = None,
    device: str | torch.device = "cpu",
    progress: ProgressCallback | bool | None = None,
) -> Any:
    """Blended dense outputs ``(C, *spatial)`` of a raw 2D/3D array: per-class probabilities (segment), the restored
    image (deblur). A 2D model and a 3D array: slice by slice (``out``, when given, is filled slice by slice)."""
    task = model.task
    if not task.dense:
        raise InvalidInputError(f"model: a {task.name} model has no dense output; use classify_array")
    spatial_dims = model.backbone.config.spatial_dims
    if image.ndim == spatial_dims + 1 == 3:
        return _slice_by_slice(model, image, overlap, flips, batch_size, out, device, progress)
    if image.ndim != spatial_dims:
        raise InvalidInputError(f"image: the model is {spatial_dims}D, got an array of shape {tuple(image.shape)}")
    window = WindowConfig(model.backbone.config.patch_size, overlap=overlap, batch_size=batch_size, flips=flips)
    model = model.to(device).eval()
    normalised = _windowed(model, image)
    return sliding_window_predict(
        normalised, model.dense, window, out_channels=model.spec.n_outputs, out=out, device=device, progress=progress
    )


def _slice_by_slice(
    model: TaskModel,
    stack: Any,
    overlap: float,
    flips: bool,
    batch_size: int,
    out: Any,
    device: str | torch.device,
    progress: ProgressCallback | bool | None,
) -> Any:
    """A 2D model over a ``(Z, Y, X)`` stack: each slice windowed by its own percentiles and predicted alone."""
    shape = (model.spec.n_outputs, *(int(s) for s in stack.shape))
    target = np.zeros(shape, dtype=np.float32) if out is None else out
    with make_progress(progress, shape[1], "predict slices") as advance:
        for z in range(shape[1]):
            plane = np.asarray(stack[z])
            target[:, z] = predict_array(
                model, plane, overlap=overlap, flips=flips, batch_size=batch_size, device=device
            )
            advance(1)
    return target


@torch.no_grad()
def classify_array(model: TaskModel, image: Any, *, device: str | torch.device = "cpu") -> tuple[str, np.ndarray]:
    """Class name and probabilities of a whole image: windowed by its own percentiles (as in training), then the
    centre crop of the model's patch size (padded if smaller)."""
    if model.task.dense:
        raise InvalidInputError(f"model: expected a classification model, got a {model.spec.task} model")
    size = model.backbone.config.patch_size
    if image.ndim != len(size):
        raise InvalidInputError(f"image: the model is {len(size)}D, got an array of shape {tuple(image.shape)}")
    windowed = _windowed(model, image)  # percentiles of the whole image; only the crop is computed
    index = tuple(slice(max((s - n) // 2, 0), max((s - n) // 2, 0) + n) for s, n in zip(image.shape, size, strict=True))
    crop = centre_patch(np.asarray(windowed[index], dtype=np.float32), size)
    logits = model.to(device).eval()(torch.from_numpy(crop)[None, None].to(device))
    probs = torch.softmax(logits, dim=1)[0].cpu().numpy()
    return model.spec.classes[int(probs.argmax())], probs


@contextlib.contextmanager
def scores_target(data: Any, n_outputs: int, per_slice: bool, folder: Path) -> Iterator[Any]:
    """Where dense scores ``(n_outputs, *data.shape)`` accumulate: None (a numpy array in memory) for a numpy input;
    for a lazy input a Zarr array in a scratch folder beside the output, removed afterwards. ``per_slice``: chunks of
    one slice (a 2D model writes a slice at a time)."""
    if isinstance(data, np.ndarray):
        yield None
        return
    import zarr

    scratch = Path(tempfile.mkdtemp(prefix=".fmscope-predict-", dir=folder))
    try:
        chunks = (1, 1, *[min(s, 256) for s in data.shape[1:]]) if per_slice else (1, *[min(s, 64) for s in data.shape])
        yield zarr.open_array(store=str(scratch / "scores.zarr"), mode="w", shape=(n_outputs, *data.shape),
                              chunks=chunks, dtype="float32")  # fmt: skip
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def as_lazy(scores: Any) -> Any:
    """Scores as returned by the predictor: numpy stays, a Zarr scratch array becomes dask (read chunk by chunk)."""
    if isinstance(scores, np.ndarray):
        return scores
    import dask.array as da

    return da.from_zarr(scores)


def write_like(out: Path, result: Any, image: Any, input_path: str | Path, *, overwrite: bool, labels: bool) -> Path:
    """Write a prediction with the input's spacing and unit (a leading channel axis when it has one more axis)."""
    meta = image.meta
    axes = ("C" if result.ndim > len(meta.spatial_axes) else "") + meta.spatial_axes
    out_meta = ImageMetadata.for_array(result, axes=axes, spacing=meta.spacing, unit=meta.unit, source=str(input_path))
    return write_image(out, result, out_meta, overwrite=overwrite, labels=labels)


def predict_file(
    model_dir: str | Path,
    input_path: str | Path,
    output: str | Path,
    *,
    probabilities: bool = False,
    instances: str | None = None,
    overlap: float = 0.5,
    flips: bool = False,
    batch_size: int = 2,
    device: str | torch.device = "cpu",
    overwrite: bool = False,
    progress: ProgressCallback | bool | None = None,
) -> PredictionResult:
    """Predict ``input_path`` with the task model in ``model_dir`` and write ``output`` (format from its extension).

    ``instances`` (segmentation): ``'components'`` (connected components of the foreground classes) or ``'watershed'``
    (touching objects split by distance-transform seeds) instead of class labels; uint32 labels, computed in memory.
    """
    if instances not in (None, "components", "watershed"):
        raise InvalidInputError(f"instances: expected None, 'components' or 'watershed', got {instances!r}")
    from fmscope.tasks.bioimageio_package import is_package

    if is_package(model_dir):  # a bioimage.io model package: its own path (no task, no classes)
        if probabilities or instances or flips:
            raise InvalidInputError("model: a bioimage.io package writes its output tensor as it is; drop "
                                    "--probabilities, --instances and --flips")  # fmt: skip
        from fmscope.tasks.bioimageio_package import predict_package_file

        written, shape = predict_package_file(model_dir, input_path, output, overlap=overlap, batch_size=batch_size,
                                              device=str(device), overwrite=overwrite, progress=progress)  # fmt: skip
        return PredictionResult(written, "bioimage.io", shape)
    out = check_output_path(output, overwrite)
    model = load_task_model(model_dir, map_location=device)
    image = read_image(input_path)
    data = image.data  # numpy, or dask when the format reads lazily
    if not model.task.dense:
        name, probs = classify_array(model, data, device=device)
        doc = {
            "input": str(input_path),
            "class": name,
            "probabilities": dict(zip(model.spec.classes, probs.tolist(), strict=True)),
        }
        with atomic_output(out, overwrite) as tmp:
            tmp.write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
        return PredictionResult(out, model.spec.task, tuple(data.shape), name)
    per_slice = data.ndim == model.backbone.config.spatial_dims + 1  # a 2D model writes one slice at a time
    with scores_target(data, model.spec.n_outputs, per_slice, out.parent) as target:
        scores = predict_array(
            model, data, overlap=overlap, flips=flips, batch_size=batch_size, out=target, device=device,
            progress=progress,
        )  # fmt: skip
        result, labels = model.task.output_image(as_lazy(scores), probabilities=probabilities, instances=instances)
        write_like(out, result, image, input_path, overwrite=overwrite, labels=labels)
    logger.info("wrote %s prediction of %s to %s", model.spec.task, input_path, out)
    return PredictionResult(out, model.spec.task, tuple(data.shape), classes=tuple(model.spec.classes))
