"""Augmentations: shared spatial parameters for image+label, seed reproducibility, clamp, picklability."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch

from fmscope.data import AugmentConfig, build_augmentation, build_paired_augmentation, lightsheet_phantom
from fmscope.errors import InvalidInputError
from fmscope.intensity import normalize


@pytest.fixture(scope="module")
def image() -> torch.Tensor:
    v = lightsheet_phantom((24, 32, 32), seed=2).image.astype(np.float32)
    lo, hi = np.percentile(v, [1, 99.8])
    return torch.from_numpy(normalize(v, float(lo), float(hi)))[None]


def test_paired_spatial_parameters_shared(image: torch.Tensor) -> None:
    thr = 0.5 * float(image.max())
    label = (image > thr).to(torch.uint8)
    spatial = AugmentConfig.spatial_only().to_dict()
    cfg = AugmentConfig(**{**spatial, "flip_prob": 1.0, "rotate90_prob": 1.0, "affine_prob": 1.0, "rotate_range": 0.2})
    changed = 0
    for seed in range(3):
        out = build_paired_augmentation(cfg, seed=seed)({"image": image, "label": label})
        img, lab = out["image"], out["label"]
        assert set(torch.unique(lab).tolist()) <= {0, 1}  # nearest: still binary
        agree = float(((img > thr) == (lab > 0)).float().mean())
        assert agree > 0.97, agree
        changed += int(not torch.equal(lab.as_tensor().to(torch.uint8), label))
    assert changed == 3


def test_paired_intensity_on_image_only(image: torch.Tensor) -> None:
    label = (image > 0.5).to(torch.uint8)
    cfg = AugmentConfig(**{**AugmentConfig.none().to_dict(), "noise_prob": 1.0, "shift_prob": 1.0, "scale_prob": 1.0})
    out = build_paired_augmentation(cfg, seed=0)({"image": image, "label": label})
    assert torch.equal(out["label"].as_tensor(), label)
    assert not torch.equal(out["image"].as_tensor(), image)


def test_seed_reproducibility_and_clamp(image: torch.Tensor) -> None:
    cfg = AugmentConfig(noise_prob=1.0, noise_std=0.3, shift_prob=1.0, shift_offset=0.5, affine_prob=1.0)
    a = build_augmentation(cfg, seed=5)(image)
    b = build_augmentation(cfg, seed=5)(image)
    c = build_augmentation(cfg, seed=6)(image)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    assert float(a.min()) >= 0.0
    assert float(a.max()) <= 1.0
    assert a.shape == image.shape
    pipeline = pickle.loads(pickle.dumps(build_augmentation(cfg, seed=5)))
    assert torch.equal(pipeline(image), a)


def test_none_is_identity(image: torch.Tensor) -> None:
    out = build_augmentation(AugmentConfig.none(), seed=0)(image)
    assert torch.equal(torch.as_tensor(out), image)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"flip_prob": 1.5}, "flip_prob"),
        ({"noise_std": -1.0}, "noise_std"),
        ({"rotate90_planes": ((1, 1),)}, "rotate90_planes"),
        ({"smooth_sigma": (1.0, 0.5)}, "smooth_sigma"),
        ({"padding_mode": "wrap"}, "padding_mode"),
        ({"flip_axes": (3,)}, "flip_axes"),
    ],
)
def test_bad_config(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(InvalidInputError, match=match):
        AugmentConfig(**kwargs)  # type: ignore[arg-type]
