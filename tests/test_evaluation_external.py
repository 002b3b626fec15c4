"""Cellpose adapter: input checks (always run) and a random-weights round trip through the real Cellpose (optional).

The round-trip tests need ``cellpose`` (skipped where it is not installed). Cellpose-SAM's network (Cellpose 4) is a
SAM ViT-L (305 M parameters, ~18 s per 256x256 tile on one CPU thread, and a 3D stack runs Z + Y + X tiles), so they
swap in a 2-block, 64-wide SAM image encoder through ``cellpose.vit.sam_model_registry``: the weights file,
``CellposeModel`` and ``eval`` are otherwise real. With Cellpose 3 they use its full-size U-net.
"""

from __future__ import annotations

import functools
import socket
import sys
import types
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from fmscope.errors import FileFormatError, InvalidInputError, MissingDependencyError
from fmscope.evaluation import external
from fmscope.evaluation.external import cellpose_available, cellpose_segment

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture
def no_cellpose(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make ``import cellpose`` fail, whether or not it is installed."""
    monkeypatch.setitem(sys.modules, "cellpose", None)
    monkeypatch.setitem(sys.modules, "cellpose.models", None)


@pytest.fixture
def dummy_weights(tmp_path: Path) -> Path:
    path = tmp_path / "weights.pt"
    path.write_bytes(b"not a checkpoint")
    return path


def _blobs_2d(size: int = 128, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    img = np.zeros((size, size), np.float32)
    for cy, cx in rng.integers(12, size - 12, size=(6, 2)):
        img[(yy - cy) ** 2 + (xx - cx) ** 2 < 64] = 1.0
    return np.clip(img + 0.05 * rng.standard_normal(img.shape), 0.0, 1.0).astype(np.float32)


# ---------------------------------------------------------------- always run (no cellpose needed)


def test_cellpose_available_gives_one_line_reason_when_import_fails(no_cellpose: None) -> None:
    reason = cellpose_available()
    assert isinstance(reason, str)
    assert "\n" not in reason
    assert "cellpose" in reason
    assert "pip install 'fmscope[cellpose]'" in reason


def test_segment_without_cellpose_raises_missing_dependency(no_cellpose: None, dummy_weights: Path) -> None:
    with pytest.raises(MissingDependencyError, match=r"fmscope\[cellpose\]") as info:
        cellpose_segment([np.zeros((16, 16), np.float32)], model=dummy_weights)
    assert info.value.package == "cellpose"
    assert info.value.extra == "cellpose"


@pytest.mark.parametrize("kind", ["missing", "builtin_name", "folder"])
def test_weights_must_be_an_existing_local_file(kind: str, tmp_path: Path, no_cellpose: None) -> None:
    # checked before cellpose is imported (it is made unimportable here), so a built-in name is never downloaded
    model = {"missing": tmp_path / "nope.pt", "builtin_name": "cpsam", "folder": tmp_path}[kind]
    with pytest.raises(InvalidInputError, match=r"^model: .*never downloaded"):
        cellpose_segment([np.zeros((16, 16), np.float32)], model=model)


@pytest.mark.parametrize(
    ("images", "kwargs", "param"),
    [
        (np.zeros((2, 16, 16), np.float32), {}, "images"),  # a bare array, not a sequence
        ([], {}, "images"),
        ([np.zeros((2, 2, 16, 16), np.float32)], {}, "images"),
        ([np.full((16, 16), np.nan, np.float32)], {}, "images"),
        ([np.array([["a"]])], {}, "images"),
        ([np.zeros((16, 16), np.float32)], {"do_3d": True}, "do_3d"),
        ([np.zeros((4, 16, 16), np.float32)], {}, "do_3d"),  # 3D needs do_3d or stitch_threshold
        ([np.zeros((4, 16, 16), np.float32)], {"stitch_threshold": 0.0}, "do_3d"),
        ([np.zeros((16, 16), np.float32)], {"diameter": -3.0}, "diameter"),
        ([np.zeros((16, 16), np.float32)], {"diameter": float("nan")}, "diameter"),
        ([np.zeros((16, 16), np.float32)], {"diameter": True}, "diameter"),
        ([np.zeros((16, 16), np.float32)], {"device": "gpu0"}, "device"),
    ],
)
def test_invalid_inputs_name_their_parameter(
    images: Any, kwargs: dict[str, Any], param: str, dummy_weights: Path, no_cellpose: None
) -> None:
    with pytest.raises(InvalidInputError, match=rf"^{param}: "):
        cellpose_segment(images, model=dummy_weights, **kwargs)


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_unavailable_cuda_device_is_rejected(dummy_weights: Path, no_cellpose: None) -> None:
    with pytest.raises(InvalidInputError, match=r"^device: .*without CUDA"):
        cellpose_segment([np.zeros((16, 16), np.float32)], model=dummy_weights, device="cuda")


def test_torchvision_placeholder_exists_only_inside_the_block(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "torchvision", None)  # as if torchvision were absent or broken
    before = {name: mod for name, mod in sys.modules.items() if name.split(".")[0] == "torchvision"}
    with external._torchvision_placeholder():
        from torchvision.ops.boxes import batched_nms
        from torchvision.transforms import _functional_tensor as F_t

        with pytest.raises(RuntimeError, match="needs a working torchvision"):
            batched_nms()
        with pytest.raises(RuntimeError, match="needs a working torchvision"):
            F_t.hflip(torch.zeros(1))
    after = {name: mod for name, mod in sys.modules.items() if name.split(".")[0] == "torchvision"}
    assert after == before
    assert sys.modules["torchvision"] is None


@pytest.mark.parametrize(
    ("err", "expected"),
    [
        (ModuleNotFoundError("No module named 'torchvision'", name="torchvision"), True),
        (ModuleNotFoundError("No module named 'torchvision.ops'", name="torchvision.ops"), True),
        (ModuleNotFoundError("No module named 'segment_anything'", name="segment_anything"), False),
        (RuntimeError("unrelated"), False),
    ],
)
def test_only_torchvision_failures_get_the_placeholder(err: Exception, expected: bool) -> None:
    assert external._caused_by_torchvision(err) is expected


# ---------------------------------------------------------------- with cellpose: real round trip, random weights


@pytest.fixture
def cp_models(monkeypatch: pytest.MonkeyPatch) -> types.ModuleType:
    """``cellpose.models`` with every download route made to fail loudly (and no network at all)."""
    pytest.importorskip("cellpose")
    reason = cellpose_available()
    if reason is not None:
        pytest.skip(reason)
    models = external._import_cellpose()
    assert isinstance(models, types.ModuleType)
    import cellpose.utils

    def no_network(*args: object, **kwargs: object) -> None:
        raise AssertionError(f"network access attempted: {args!r}")

    monkeypatch.setattr(models, "cache_model_path", no_network)
    monkeypatch.setattr(cellpose.utils, "download_url_to_file", no_network)
    monkeypatch.setattr(urllib.request, "urlopen", no_network)
    monkeypatch.setattr(socket.socket, "connect", no_network)
    return models


@pytest.fixture
def tiny_weights(cp_models: types.ModuleType, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """A random-weights checkpoint saved the way ``CellposeModel`` loads it: Cellpose-SAM with a small SAM encoder
    (Cellpose 4), or the full-size residual U-net ``CPnet`` (Cellpose 3, already small)."""
    path = tmp_path / "cellpose_random.pt"
    torch.manual_seed(0)
    if external._cellpose_major() < 4:
        from cellpose.resnet_torch import CPnet

        cpnet = CPnet(nbase=[2, 32, 64, 128, 256], nout=3, sz=3, mkldnn=False, max_pool=True, diam_mean=30.0)
        torch.save(cpnet.state_dict(), path)
        return path

    import cellpose.vit
    from segment_anything.build_sam import _build_sam

    def tiny_sam(checkpoint: str | None = None) -> Any:
        return _build_sam(
            encoder_embed_dim=64,
            encoder_depth=2,
            encoder_num_heads=2,
            encoder_global_attn_indexes=[1],
            checkpoint=checkpoint,
        )

    monkeypatch.setitem(cellpose.vit.sam_model_registry, "vit_l", tiny_sam)
    torch.save(cellpose.vit.CPSAM(dtype=torch.float32).state_dict(), path)
    return path


def _record_models(cp_models: types.ModuleType, monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """The ``CellposeModel`` instances that ``eval`` is called on, in call order."""
    used: list[Any] = []
    original = cp_models.CellposeModel.eval

    @functools.wraps(original)
    def recording_eval(self: Any, *args: Any, **kwargs: Any) -> Any:
        used.append(self)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(cp_models.CellposeModel, "eval", recording_eval)
    return used


def test_round_trip_2d(cp_models: types.ModuleType, tiny_weights: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    used = _record_models(cp_models, monkeypatch)
    images = [_blobs_2d(128, seed=0), _blobs_2d(96, seed=1)[:, :80]]
    labels = cellpose_segment(images, model=tiny_weights, diameter=20.0)
    assert [lab.shape for lab in labels] == [(128, 128), (96, 80)]
    assert all(lab.dtype == np.uint32 for lab in labels)
    # the saved random weights are the ones used, in float32 on the CPU
    model = used[0]
    assert len(used) == 2 and used[1] is model  # one model, loaded once
    saved = torch.load(tiny_weights, weights_only=True)
    params = {k: v.to_dense() if v.is_mkldnn else v for k, v in model.net.named_parameters()}  # Cellpose 3: MKLDNN
    assert params and all(torch.equal(saved[k], v) for k, v in params.items())
    assert next(model.net.parameters()).dtype == torch.float32
    assert model.device == torch.device("cpu")


def test_round_trip_3d(cp_models: types.ModuleType, tiny_weights: Path) -> None:
    rng = np.random.default_rng(0)
    volume = np.clip(rng.random((8, 64, 64), dtype=np.float32), 0.0, 1.0)
    (labels,) = cellpose_segment([volume], model=tiny_weights, do_3d=True)
    assert labels.shape == (8, 64, 64)
    assert labels.dtype == np.uint32
    # planes segmented in 2D and stitched
    (stitched,) = cellpose_segment([volume], model=tiny_weights, stitch_threshold=0.5)
    assert stitched.shape == (8, 64, 64)
    assert stitched.dtype == np.uint32


def test_eval_options_are_checked_against_cellpose(cp_models: types.ModuleType, dummy_weights: Path) -> None:
    image = [np.zeros((16, 16), np.float32)]
    with pytest.raises(InvalidInputError, match=r"^eval_options: .*z_axis"):
        cellpose_segment(image, model=dummy_weights, z_axis=1)
    with pytest.raises(InvalidInputError, match=r"^eval_options: .*no_such_option"):
        cellpose_segment(image, model=dummy_weights, no_such_option=1)


def test_unreadable_weights_file_is_a_file_format_error(cp_models: types.ModuleType, dummy_weights: Path) -> None:
    with pytest.raises(FileFormatError, match=r"^model: cannot load Cellpose weights"):
        cellpose_segment([np.zeros((16, 16), np.float32)], model=dummy_weights)
