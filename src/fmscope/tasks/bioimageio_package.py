"""``fmscope predict PACKAGE.zip IN -o OUT``: a bioimage.io model package (ours, or any other with ``torchscript`` or
``pytorch_state_dict`` weights) run through fmscope's sliding-window prediction, so that zoo models work on volumes of
any size (a lazy input streams into a Zarr scratch array, memory bounded by one slab of windows).

What the package's ``rdf.yaml`` says is honoured, with one deliberate difference: statistics that the spec computes
per sample (``scale_range`` percentiles, ``zero_mean_unit_variance``) are computed once over the *whole* input
(streamed, :func:`fmscope.intensity.compute_stats`), not per window, so that windows of one volume share one intensity
scale. Preprocessing taken: ``scale_range``, ``clip`` (fixed bounds), ``zero_mean_unit_variance``,
``fixed_zero_mean_unit_variance``, ``scale_linear``, ``ensure_dtype``; postprocessing (per voxel, applied to each
window): ``sigmoid``, ``softmax``, ``clip``, ``scale_linear``, ``binarize``, ``ensure_dtype``. Anything else, several
input or output tensors, a multi-channel input, or outputs resized against the input are refused, naming what was
found; an output halo is not cropped (the overlapping Gaussian-weighted windows down-weight window borders). The
window is the model's own patch size for a package fmscope exported (``config.fmscope.patch_size``), else
the smallest valid input size of at least 64 voxels per axis in 3D (256 in 2D); a 2D package on
a ``(Z, Y, X)`` stack predicts slice by slice (with the stack's statistics). The output is the package's output tensor
as float32, channel first (one channel: squeezed).
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fmscope.errors import InvalidInputError, MissingDependencyError
from fmscope.inference.predict import WindowConfig, sliding_window_predict
from fmscope.utils.progress import ProgressCallback, make_progress

logger = logging.getLogger(__name__)

WEIGHT_FORMATS = ("torchscript", "pytorch_state_dict")
PRE_OPS = ("scale_range", "clip", "zero_mean_unit_variance", "fixed_zero_mean_unit_variance", "scale_linear",
           "ensure_dtype")  # fmt: skip
POST_OPS = ("sigmoid", "softmax", "clip", "scale_linear", "binarize", "ensure_dtype")
TARGET_WINDOW = {2: 256, 3: 64}


def is_package(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is a bioimage.io package: a ``.zip``, or a folder / file named ``rdf.yaml``."""
    p = Path(path)
    return p.suffix == ".zip" or p.name.endswith("rdf.yaml") or (p.is_dir() and (p / "rdf.yaml").is_file())


def _scalar(value: Any, name: str) -> float:
    """A kwarg that may be a per-channel list: one value (single-channel inputs)."""
    values = np.ravel(np.asarray(value, dtype=np.float64))
    if values.size != 1:
        raise InvalidInputError(f"package: {name} has {values.size} per-channel values; one channel is supported")
    return float(values[0])


@dataclass
class PackageModel:
    """A loaded package: its network and what the spec says around it (see the module doc)."""

    name: str
    network: Any
    weight_format: str
    input_axes: tuple[str, ...]  # the input tensor's axis types/ids in order: "batch", "channel", "z", "y", "x"
    output_axes: tuple[str, ...]
    spatial: tuple[str, ...]  # "z", "y", "x" or "y", "x"
    window: tuple[int, ...]
    out_channels: int
    preprocessing: tuple[Any, ...]
    postprocessing: tuple[Any, ...]

    def fit_statistics(self, data: Any) -> list[dict[str, float]]:
        """Per preprocessing step, the whole-input values it needs (percentiles, mean and std), each fitted on the
        input as the steps before it left it (streamed; lazily for a dask input)."""
        return self._run(data, None)[1]

    def normalise(self, data: Any, fitted: list[dict[str, float]] | None = None) -> Any:
        """The input after the package's preprocessing, with whole-input statistics (``fitted``: from
        :meth:`fit_statistics`, computed here when None); numpy or dask, lazily."""
        return self._run(data, fitted)[0]

    def _run(self, data: Any, fitted: list[dict[str, float]] | None) -> tuple[Any, list[dict[str, float]]]:
        from fmscope.intensity import compute_stats

        values: list[dict[str, float]] = []
        x: Any = data.astype(np.float32)
        for i, op in enumerate(self.preprocessing):
            k = op.kwargs
            v = fitted[i] if fitted is not None else {}
            if op.id == "scale_range":
                if fitted is None:
                    lo, hi = float(k.min_percentile), float(k.max_percentile)
                    stats = compute_stats(x, percentiles=(lo, hi))
                    v = {"low": float(stats.value(lo)), "high": float(stats.value(hi))}
                x = (x - v["low"]) / (v["high"] - v["low"] + float(k.eps))
            elif op.id == "zero_mean_unit_variance":
                if fitted is None:
                    stats = compute_stats(x)
                    v = {"mean": float(stats.mean), "std": float(stats.std)}
                x = (x - v["mean"]) / (v["std"] + float(k.eps))
            elif op.id == "clip":
                x = x.clip(k.min, k.max)
            elif op.id == "fixed_zero_mean_unit_variance":
                x = (x - _scalar(k.mean, "mean")) / (_scalar(k.std, "std") + float(k.eps))
            elif op.id == "scale_linear":
                x = x * _scalar(k.gain, "gain") + _scalar(k.offset, "offset")
            values.append(v)
            x = x.astype(np.float32)
        return x, values

    def predictor(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, 1, *window)`` -> ``(B, C_out, *window)``: the network on the package's axis order, then the
        postprocessing."""
        if "batch" not in self.input_axes and x.shape[0] > 1:  # a network without a batch axis: one window a time
            return torch.cat([self.predictor(w) for w in x.split(1)])
        y = self.network(_to_axes(x, self.input_axes, self.spatial))
        y = _from_axes(y, self.output_axes, self.spatial).float()
        for op in self.postprocessing:
            k = op.kwargs
            if op.id == "sigmoid":
                y = torch.sigmoid(y)
            elif op.id == "softmax":
                y = torch.softmax(y, dim=1)
            elif op.id == "clip":
                y = y.clamp(k.min, k.max)
            elif op.id == "scale_linear":
                y = y * _scalar(k.gain, "gain") + _scalar(k.offset, "offset")
            elif op.id == "binarize":
                y = (y > _scalar(k.threshold, "threshold")).float()
        return y


def _to_axes(x: torch.Tensor, axes: tuple[str, ...], spatial: tuple[str, ...]) -> torch.Tensor:
    """Our ``(B, C, *spatial)`` in the package's axis order (missing batch / channel axes squeezed away)."""
    ours = ["batch", "channel", *spatial]
    kept = [a for a in ours if a in axes]
    for a in ("channel", "batch"):
        if a not in axes:
            x = x.squeeze(ours.index(a))
    return x.permute([kept.index(a) for a in axes])


def _from_axes(y: torch.Tensor, axes: tuple[str, ...], spatial: tuple[str, ...]) -> torch.Tensor:
    """The package's output back to ``(B, C, *spatial)``."""
    ours = ["batch", "channel", *spatial]
    y = y.permute([axes.index(a) for a in ours if a in axes])
    for a in ("batch", "channel"):
        if a not in axes:
            y = y.unsqueeze(ours.index(a))
    return y


def _axis_names(tensor: Any, what: str) -> tuple[str, ...]:
    names = []
    for axis in tensor.axes:
        kind = str(axis.type)
        if kind in ("batch", "channel"):
            names.append(kind)
        elif kind == "space" and str(axis.id) in ("z", "y", "x"):
            names.append(str(axis.id))
        else:
            raise InvalidInputError(f"package: {what} axis {axis.id!r} of type {kind!r}; fmscope runs batch, channel "
                                    "and z / y / x axes")  # fmt: skip
    return tuple(names)


def _same_size(out_axis: Any, in_axis: Any) -> bool:
    """An output axis the size of the input axis: a reference to it without offset, or equal fixed sizes; scale 1.
    (An output halo is not cropped: the overlapping, Gaussian-weighted windows down-weight window borders.)"""
    size = out_axis.size
    if float(getattr(out_axis, "scale", 1.0)) != 1.0:
        return False
    if isinstance(size, int):
        return isinstance(in_axis.size, int) and size == in_axis.size
    return str(getattr(size, "axis_id", "")) == str(in_axis.id) and int(getattr(size, "offset", 0) or 0) == 0


def _window_size(axis: Any, ndim: int) -> int:
    import bioimageio.spec.model.v0_5 as v

    size = axis.size
    if isinstance(size, int):
        return size
    if isinstance(size, v.ParameterizedSize):
        n = max(0, math.ceil((TARGET_WINDOW[ndim] - size.min) / size.step))
        return int(size.min + n * size.step)
    raise InvalidInputError(f"package: input axis {axis.id!r} has a size of type {type(size).__name__}; fmscope "
                            "takes fixed or parameterized (min + n * step) input sizes")  # fmt: skip


def load_package(
    source: str | os.PathLike[str], *, weight_format: str | None = None, device: str = "cpu"
) -> PackageModel:
    """Read and check a bioimage.io package and load its network (``weight_format``: default the first of
    torchscript, pytorch_state_dict that it has)."""
    try:
        from bioimageio.spec import load_model_description
    except ImportError:
        raise MissingDependencyError("bioimageio.core", "bioimageio") from None
    path = Path(source)
    if not path.exists():
        raise InvalidInputError(f"model: '{path}' does not exist")
    descr: Any = load_model_description(path, format_version="latest", perform_io_checks=False)
    if getattr(descr, "type", None) != "model" or not hasattr(descr, "weights"):
        raise InvalidInputError(f"model: '{path}' is not a valid bioimage.io model package ({descr})")
    formats = ("keras_hdf5", "keras_v3", "onnx", "pytorch_state_dict", "tensorflow_js", "tensorflow_saved_model_bundle",
               "torchscript")  # fmt: skip
    found = [f for f in formats if getattr(descr.weights, f, None)]
    usable = [f for f in WEIGHT_FORMATS if f in found and (weight_format is None or f == weight_format)]
    if weight_format is not None and weight_format not in WEIGHT_FORMATS:
        raise InvalidInputError(f"weight_format: fmscope runs {' or '.join(WEIGHT_FORMATS)}, got {weight_format!r}")
    if not usable:
        wanted = weight_format or " or ".join(WEIGHT_FORMATS)
        raise InvalidInputError(f"model: '{path}' has weights {', '.join(found) or 'none'}, not {wanted}; fmscope "
                                f"runs {' or '.join(WEIGHT_FORMATS)}")  # fmt: skip
    if len(descr.inputs) != 1 or len(descr.outputs) != 1:
        raise InvalidInputError(f"model: '{path}' has {len(descr.inputs)} inputs and {len(descr.outputs)} outputs; "
                                "fmscope runs one of each")  # fmt: skip
    inp, out = descr.inputs[0], descr.outputs[0]
    in_axes, out_axes = _axis_names(inp, "input"), _axis_names(out, "output")
    spatial = tuple(a for a in ("z", "y", "x") if a in in_axes)
    if spatial not in (("y", "x"), ("z", "y", "x")) or tuple(a for a in ("z", "y", "x") if a in out_axes) != spatial:
        raise InvalidInputError(f"model: input axes {in_axes}, output axes {out_axes}: expected y, x (and z) in both")
    channel = next((a for a in inp.axes if str(a.type) == "channel"), None)
    if channel is not None and len(channel.channel_names) != 1:
        raise InvalidInputError(f"model: the input has {len(channel.channel_names)} channels; fmscope runs "
                                "single-channel inputs")  # fmt: skip
    for axis in out.axes:
        if str(axis.type) == "space" and not _same_size(axis, next(a for a in inp.axes if str(a.id) == str(axis.id))):
            raise InvalidInputError(f"model: output axis {axis.id!r} is not the input's size; fmscope runs outputs "
                                    "the size of their input")  # fmt: skip
    out_channel = next((a for a in out.axes if str(a.type) == "channel"), None)
    for ops, allowed, what in ((inp.preprocessing, PRE_OPS, "preprocessing"),
                               (out.postprocessing, POST_OPS, "postprocessing")):  # fmt: skip
        bad = [str(op.id) for op in ops if str(op.id) not in allowed]
        if bad:
            raise InvalidInputError(f"model: {what} {', '.join(bad)} not supported; fmscope takes {', '.join(allowed)}")
        if any(str(op.id) == "clip" and getattr(op.kwargs, "min_percentile", None) is not None for op in ops):
            raise InvalidInputError(f"model: {what} clip by percentiles is not supported (fixed bounds only)")
    network = _network(descr, usable[0], device)
    window = tuple(_window_size(next(a for a in inp.axes if str(a.id) == s), len(spatial)) for s in spatial)
    ours = getattr(descr.config, "fmscope", None)  # extra fields of the spec's config
    if isinstance(ours, dict) and len(ours.get("patch_size", ())) == len(spatial):  # an fmscope export: its window
        window = tuple(int(p) for p in ours["patch_size"])
    n_out = len(out_channel.channel_names) if out_channel is not None else 1
    logger.info("bioimage.io package %s: %s weights, window %s, %d output channels", path, usable[0], window, n_out)
    return PackageModel(str(descr.name), network, usable[0], in_axes, out_axes, spatial, window, n_out,
                        tuple(inp.preprocessing), tuple(out.postprocessing))  # fmt: skip


def _network(descr: Any, weight_format: str, device: str) -> Any:
    if weight_format == "torchscript":
        net = torch.jit.load(descr.weights.torchscript.get_reader(), map_location=device)
    else:
        from bioimageio.core.backends.pytorch_backend import load_torch_model

        net = load_torch_model(descr.weights.pytorch_state_dict, devices=[device])
    return net.eval()


def predict_package(
    package: PackageModel,
    image: Any,
    *,
    overlap: float = 0.5,
    batch_size: int = 2,
    out: Any = None,
    device: str = "cpu",
    progress: ProgressCallback | bool | None = None,
) -> Any:
    """The package's output ``(C, *spatial)`` over a raw 2D/3D array (see the module doc)."""
    ndim = len(package.spatial)
    if image.ndim not in (ndim, ndim + 1) or (image.ndim == ndim + 1 and ndim == 3):
        raise InvalidInputError(f"image: the package is {ndim}D, got an array of shape {tuple(image.shape)}")
    x = package.normalise(image)
    window = WindowConfig(package.window, overlap=overlap, batch_size=batch_size)
    if image.ndim == ndim:
        return sliding_window_predict(x, package.predictor, window, out_channels=package.out_channels, out=out,
                                      device=device, progress=progress)  # fmt: skip
    target = np.zeros((package.out_channels, *image.shape), np.float32) if out is None else out
    with make_progress(progress, image.shape[0], "predict slices") as advance:
        for z in range(image.shape[0]):
            target[:, z] = sliding_window_predict(np.asarray(x[z]), package.predictor, window,
                                                  out_channels=package.out_channels, device=device)  # fmt: skip
            advance(1)
    return target


def predict_package_file(
    source: str | os.PathLike[str],
    input_path: str | os.PathLike[str],
    output: str | os.PathLike[str],
    *,
    overlap: float = 0.5,
    batch_size: int = 2,
    weight_format: str | None = None,
    device: str = "cpu",
    overwrite: bool = False,
    progress: ProgressCallback | bool | None = None,
) -> tuple[Path, tuple[int, ...]]:
    """Run the package ``source`` over the image file ``input_path`` and write the output (see the module doc);
    returns the path written and the input's shape."""
    from fmscope.io import read_image
    from fmscope.tasks.predict import as_lazy, scores_target, write_like
    from fmscope.utils.atomic import check_output_path

    out = check_output_path(output, overwrite)
    input_path = Path(input_path)
    package = load_package(source, weight_format=weight_format, device=device)
    image = read_image(input_path)
    data = image.data
    per_slice = data.ndim == len(package.spatial) + 1
    with scores_target(data, package.out_channels, per_slice, out.parent) as target:
        scores = as_lazy(predict_package(package, data, overlap=overlap, batch_size=batch_size, out=target,
                                         device=device, progress=progress))  # fmt: skip
        result = scores[0] if package.out_channels == 1 else scores
        written = write_like(out, result, image, input_path, overwrite=overwrite, labels=False)
    logger.info("wrote the output of bioimage.io package %s for %s to %s", source, input_path, written)
    return written, tuple(int(n) for n in data.shape)
