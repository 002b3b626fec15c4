"""The torchvision stand-in: NMS against a brute force, scriptable transforms, scoped installation."""

from __future__ import annotations

import sys
import warnings

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from fmscope.utils import torchvision_compat as tvc


def _boxes(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(n, 2, generator=g) * 50
    wh = torch.rand(n, 2, generator=g) * 20 + 0.5
    return torch.cat([xy, xy + wh], dim=1), torch.rand(n, generator=g)


def _brute_nms(boxes: torch.Tensor, scores: torch.Tensor, thr: float) -> list[int]:
    def iou(a: list[float], b: list[float]) -> float:
        iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
        ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
        inter = iw * ih
        union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
        return inter / union

    order = sorted(range(len(scores)), key=lambda i: -float(scores[i]))
    b = boxes.tolist()
    keep: list[int] = []
    for i in order:
        if all(iou(b[i], b[k]) <= thr for k in keep):
            keep.append(i)
    return keep


@pytest.mark.parametrize(("n", "seed", "thr"), [(1, 0, 0.5), (40, 1, 0.3), (200, 2, 0.5), (200, 3, 0.7)])
def test_nms_matches_brute_force(n: int, seed: int, thr: float) -> None:
    boxes, scores = _boxes(n, seed)
    assert tvc.nms(boxes, scores, thr).tolist() == _brute_nms(boxes, scores, thr)


def test_batched_nms_keeps_categories_apart() -> None:
    boxes, scores = _boxes(120, 4)
    idxs = torch.arange(120) % 3
    keep = tvc.batched_nms(boxes, scores, idxs, 0.4).tolist()
    expected: list[int] = []
    for c in range(3):
        members = [i for i in range(120) if i % 3 == c]
        expected += [members[k] for k in _brute_nms(boxes[members], scores[members], 0.4)]
    assert sorted(keep) == sorted(expected)
    assert keep == sorted(keep, key=lambda i: -float(scores[i]))  # by decreasing score, as torchvision
    # the same box in two categories survives twice
    same = torch.tensor([[0.0, 0.0, 10.0, 10.0]] * 2)
    assert tvc.batched_nms(same, torch.tensor([0.9, 0.8]), torch.tensor([0, 1]), 0.5).tolist() == [0, 1]
    assert tvc.nms(torch.empty(0, 4), torch.empty(0), 0.5).numel() == 0


def test_box_area_and_iou() -> None:
    boxes = torch.tensor([[0.0, 0.0, 2.0, 3.0], [1.0, 1.0, 3.0, 4.0]])
    assert tvc.box_area(boxes).tolist() == [6.0, 6.0]
    assert tvc.box_iou(boxes, boxes)[0, 1].item() == pytest.approx(2.0 / 10.0)


def test_transforms_are_scriptable_and_match_eager() -> None:
    eager = nn.Sequential(tvc.Resize((32, 40)), tvc.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225]))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # torch.jit.script is deprecated in torch 2.13
        scripted = torch.jit.script(eager)
        shorter = torch.jit.script(tvc.Resize(20))
    x = torch.rand(3, 50, 70)
    assert scripted(x).shape == (3, 32, 40)
    assert torch.allclose(scripted(x), eager(x))
    assert shorter(x).shape == (3, 20, 28)  # an int is the new shorter side
    assert shorter(x[None]).shape == (1, 3, 20, 28)


def test_to_tensor_and_pil_helpers() -> None:
    img = np.random.default_rng(0).integers(0, 256, (6, 8, 3), dtype=np.uint8)
    t = tvc.ToTensor()(img)
    assert t.shape == (3, 6, 8) and t.dtype == torch.float32
    assert torch.allclose(t * 255, torch.from_numpy(img).permute(2, 0, 1).float())
    pil = tvc.to_pil_image(img)
    assert isinstance(pil, Image.Image) and pil.size == (8, 6)
    resized = tvc.resize(pil, (12, 16))
    assert resized.size == (16, 12)
    assert tvc.resize(torch.rand(3, 6, 8), 3).shape == (3, 3, 4)


def test_scope_installs_only_when_needed_and_cleans_up() -> None:
    before = sys.modules.get("torchvision")
    with tvc.torchvision_compat_scope() as used:
        import torchvision

        if used:  # no working torchvision here: the stand-in serves the imports SAM/SAM2 make
            from torchvision.ops.boxes import batched_nms
            from torchvision.transforms import Normalize, Resize, ToTensor  # noqa: F401
            from torchvision.transforms.functional import resize, to_pil_image  # noqa: F401

            assert batched_nms is tvc.batched_nms and tvc.is_compat_installed()
            assert torchvision.__version__ == tvc.STUB_VERSION
        else:
            assert not tvc.is_compat_installed()
    if used:  # removed again, so that other libraries do not take it for a real torchvision
        assert sys.modules.get("torchvision") is before and not tvc.is_compat_installed()
