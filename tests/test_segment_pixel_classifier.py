"""Random-forest pixel classifier on synthetic images with known ground truth."""

from __future__ import annotations

import dataclasses
import logging

import numpy as np
import pytest
from scipy import ndimage as ndi
from skimage.filters import gaussian
from sklearn.exceptions import NotFittedError

from conftest import disks
from fmscope.errors import InvalidInputError
from fmscope.metrics import dice
from fmscope.segment.pixel_classifier import PixelClassifier, PixelClassifierConfig, _slabs, pixel_features

FAST = PixelClassifierConfig(sigmas=(1.0, 2.0, 4.0), n_estimators=20)


def _scene(shape: tuple[int, int], seed: int) -> tuple[np.ndarray, np.ndarray, list[tuple[int, int]]]:
    """Six bright disks (radius 5-8, may touch) on a dark noisy background: (image, ground truth, disk centres)."""
    rng = np.random.default_rng(seed)
    image, labels, centres = disks(rng, shape, 6, (5, 9), margin=12, background=0.2, foreground=0.7, noise=0.12)
    return image, labels > 0, centres


def _sphere(shape: tuple[int, int, int], seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    grid = np.indices(shape)
    centre = [s // 2 for s in shape]
    gt = sum((g - c) ** 2 for g, c in zip(grid, centre, strict=True)) <= 6**2
    return (np.where(gt, 0.8, 0.2) + rng.normal(0.0, 0.1, shape)).astype(np.float32), gt


def _scribbles(gt: np.ndarray, centres: list[tuple[int, int]]) -> np.ndarray:
    """-1 everywhere except 3x3 foreground dabs at two disk centres and a few background dabs away from disks."""
    labels = np.full(gt.shape, -1, np.int64)
    for cy, cx in centres[:2]:
        labels[cy - 1 : cy + 2, cx - 1 : cx + 2] = 1
    far = ndi.distance_transform_edt(~gt) > 4
    far[:2], far[-2:], far[:, :2], far[:, -2:] = False, False, False, False
    points = np.argwhere(far)
    for y, x in points[np.random.default_rng(0).choice(len(points), 6, replace=False)]:
        labels[y - 1 : y + 2, x - 1 : x + 2] = 0
    return labels


def test_scribbles_generalise_to_another_image() -> None:
    image, gt, centres = _scene((96, 96), seed=1)
    labels = _scribbles(gt, centres)
    assert np.count_nonzero(labels >= 0) < 100  # a handful of labelled pixels
    assert set(np.unique(labels).tolist()) == {-1, 0, 1}
    clf = PixelClassifier(FAST).fit([image], [labels])
    other, other_gt, _ = _scene((96, 96), seed=2)
    pred = clf.predict(other)
    assert pred.shape == other.shape
    assert dice(pred == 1, other_gt) > 0.9
    np.testing.assert_array_equal(clf.classes_, [0, 1])


def test_full_labels_3d_volume() -> None:
    image, gt = _sphere((16, 32, 32), seed=3)
    clf = PixelClassifier(FAST).fit([image], [gt.astype(np.uint8)])
    test_image, test_gt = _sphere((16, 32, 32), seed=4)
    proba = clf.predict_proba(test_image)
    assert proba.shape == (2, 16, 32, 32)
    assert proba.dtype == np.float32
    np.testing.assert_allclose(proba.sum(axis=0), 1.0, atol=1e-5)
    assert dice(clf.predict(test_image) == 1, test_gt) > 0.9


@pytest.mark.parametrize("shape", [(64, 48), (40, 24, 24)])
def test_chunked_predict_equals_whole_image(shape: tuple[int, ...], caplog: pytest.LogCaptureFixture) -> None:
    rng = np.random.default_rng(5)
    image = gaussian(rng.random(shape), 1.5).astype(np.float32)
    labels = (image > np.median(image)).astype(np.int64)
    cfg = PixelClassifierConfig(sigmas=(1.0, 2.0), n_estimators=10, max_samples_per_class=500)
    clf = PixelClassifier(cfg).fit([image], [labels])
    whole = clf.predict_proba(image)
    plane = int(np.prod(shape[1:]))
    clf.config = dataclasses.replace(cfg, chunk_voxels=plane * (2 * cfg.margin + 3))  # 3 core rows per slab
    chunked = clf.predict_proba(image)
    np.testing.assert_allclose(chunked, whole, atol=1e-5)
    clf.config = dataclasses.replace(cfg, chunk_voxels=1)  # below one row: 1-row slabs, with a warning
    with caplog.at_level(logging.WARNING):
        np.testing.assert_allclose(clf.predict_proba(image), whole, atol=1e-5)
    assert "chunk_voxels" in caplog.text
    np.testing.assert_allclose(whole.sum(axis=0), 1.0, atol=1e-5)


def test_an_image_that_fits_is_one_slab() -> None:
    # A shallow stack whose margins would span it (20 rows, margin 34) is computed once, not row by row.
    cfg = PixelClassifierConfig()
    image = np.zeros((20, 64, 64), np.float32)
    assert list(_slabs(image, cfg)) == [(0, 20, 0, 20)]
    small = dataclasses.replace(cfg, chunk_voxels=64 * 64 * (2 * cfg.margin + 5))
    assert [s[:2] for s in _slabs(np.zeros((100, 64, 64), np.float32), small)] == [(k, k + 5) for k in range(0, 100, 5)]


def test_chunked_fit_equals_whole_image_fit() -> None:
    image, gt, _ = _scene((64, 64), seed=6)
    cfg = PixelClassifierConfig(sigmas=(1.0, 2.0), n_estimators=10)
    whole = PixelClassifier(cfg).fit([image], [gt.astype(int)])
    chunked = PixelClassifier(dataclasses.replace(cfg, chunk_voxels=64 * (2 * cfg.margin + 4))).fit([image], [gt])
    np.testing.assert_allclose(chunked.predict_proba(image), whole.predict_proba(image), atol=1e-5)


def test_unseen_classes_get_zero_probability() -> None:
    image, gt, _ = _scene((64, 64), seed=7)
    labels = np.where(gt, 2, 0)
    clf = PixelClassifier(FAST).fit([image], [labels])
    proba = clf.predict_proba(image)
    assert proba.shape == (3, 64, 64)
    assert clf.n_classes == 3
    np.testing.assert_array_equal(clf.classes_, [0, 2])
    assert not proba[1].any()
    np.testing.assert_allclose(proba.sum(axis=0), 1.0, atol=1e-5)
    assert set(np.unique(clf.predict(image)).tolist()) <= {0, 2}


def test_sampling_caps_pixels_per_class(caplog: pytest.LogCaptureFixture) -> None:
    image, gt, _ = _scene((64, 64), seed=8)
    cfg = dataclasses.replace(FAST, max_samples_per_class=50)
    with caplog.at_level(logging.INFO, logger="fmscope.segment.pixel_classifier"):
        PixelClassifier(cfg).fit([image, image], [gt.astype(int), gt.astype(int)])
    assert "fit on 100 pixels" in caplog.text
    a = PixelClassifier(cfg).fit([image], [gt.astype(int)]).predict_proba(image)
    b = PixelClassifier(cfg).fit([image], [gt.astype(int)]).predict_proba(image)
    np.testing.assert_array_equal(a, b)  # seeded


def test_pixel_features_follow_config() -> None:
    image = np.random.default_rng(9).random((24, 20)).astype(np.float32)
    feats = pixel_features(image, PixelClassifierConfig(sigmas=(1.5, 3.0)))
    assert feats.shape == (24, 20, 2 * 4)  # per sigma: intensity, edges, 2 Hessian eigenvalues
    assert feats.dtype == np.float32
    np.testing.assert_allclose(feats[..., 0], gaussian(image, 1.5), atol=1e-5)  # exact configured scale
    np.testing.assert_allclose(feats[..., 4], gaussian(image, 3.0), atol=1e-5)
    only_texture = pixel_features(
        image[None].repeat(5, 0), PixelClassifierConfig(sigmas=[1.0], intensity=False, edges=False)
    )
    assert only_texture.shape == (5, 24, 20, 3)
    threaded = pixel_features(image, PixelClassifierConfig(sigmas=(1.5, 3.0), n_jobs=2))
    np.testing.assert_array_equal(threaded, feats)


def test_image_errors() -> None:
    image, gt, _ = _scene((32, 32), seed=10)
    with pytest.raises(InvalidInputError, match="image"):
        pixel_features(np.zeros((2, 3, 4, 5)), FAST)
    bad = image.copy()
    bad[3, 3] = np.nan
    with pytest.raises(InvalidInputError, match="image"):
        pixel_features(bad, FAST)
    with pytest.raises(InvalidInputError, match=r"images\[0\]"):
        PixelClassifier(FAST).fit([bad], [gt.astype(int)])
    clf = PixelClassifier(FAST)
    with pytest.raises(NotFittedError, match="fit"):
        clf.predict(image)
    with pytest.raises(NotFittedError):
        _ = clf.classes_
    clf.fit([image], [gt.astype(int)])
    with pytest.raises(InvalidInputError, match="image"):
        clf.predict_proba(bad)
    with pytest.raises(InvalidInputError, match="2D"):
        clf.predict(np.zeros((4, 32, 32)))


def test_label_errors() -> None:
    image, gt, _ = _scene((32, 32), seed=11)
    clf = PixelClassifier(FAST)
    with pytest.raises(InvalidInputError, match="labels"):
        clf.fit([image], [np.zeros(image.shape, int)])  # one class only
    with pytest.raises(InvalidInputError, match="labels"):
        clf.fit([image], [np.full(image.shape, -1)])  # nothing labelled
    with pytest.raises(InvalidInputError, match=r"labels\[0\].*shape"):
        clf.fit([image], [gt[:-1].astype(int)])
    with pytest.raises(InvalidInputError, match=r"labels\[0\]"):
        clf.fit([image], [np.where(gt, 1, -2)])
    with pytest.raises(InvalidInputError, match=r"labels\[0\]"):
        clf.fit([image], [np.where(gt, 1.5, 0.0)])
    with pytest.raises(InvalidInputError, match="labels"):
        clf.fit([image, image], [gt.astype(int)])
    with pytest.raises(InvalidInputError, match="images"):
        clf.fit([], [])
    with pytest.raises(InvalidInputError, match="images"):
        clf.fit([image, np.zeros((4, 32, 32))], [gt.astype(int), np.zeros((4, 32, 32), int)])
    assert clf.fit([image], [gt.astype(np.float64)]).n_classes == 2  # integral floats are accepted


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("sigmas", ()),
        ("sigmas", (1.0, -2.0)),
        ("sigmas", (1.0, float("nan"))),
        ("sigmas", "1,2"),
        ("sigmas", (True,)),
        ("intensity", 1),
        ("n_estimators", 0),
        ("max_depth", 0),
        ("min_samples_leaf", 0),
        ("max_samples_per_class", 0),
        ("seed", -1),
        ("n_jobs", 0),
        ("n_jobs", -2),
        ("chunk_voxels", 0),
        ("chunk_voxels", 1.5),
    ],
)
def test_config_errors(field: str, value: object) -> None:
    with pytest.raises(InvalidInputError, match=field):
        PixelClassifierConfig(**{field: value})  # type: ignore[arg-type]


def test_config_accepts_yaml_lists() -> None:
    cfg = PixelClassifierConfig(sigmas=[1, 2.5])  # type: ignore[arg-type]
    assert cfg.sigmas == (1.0, 2.5)
    assert cfg.margin == 12
    with pytest.raises(InvalidInputError, match="intensity"):
        PixelClassifierConfig(intensity=False, edges=False, texture=False)
    with pytest.raises(InvalidInputError, match="config"):
        PixelClassifier({"sigmas": (1.0,)})  # type: ignore[arg-type]


def test_precomputed_features_give_the_same_forest() -> None:
    # Interactive use computes a slice's features once and refits on every click: same result as fit/predict.
    image, gt, _ = _scene((64, 64), seed=7)
    labels = np.full(gt.shape, -1, np.int64)
    labels[::7, ::7] = gt[::7, ::7]
    cfg = PixelClassifierConfig(sigmas=(1.0, 2.0), n_estimators=10)
    feats = pixel_features(image, cfg)
    direct = PixelClassifier(cfg).fit([image], [labels]).predict_proba(image)
    cached = PixelClassifier(cfg).fit_features([feats], [labels]).predict_proba_features(feats)
    np.testing.assert_allclose(cached, direct, atol=1e-6)
    with pytest.raises(InvalidInputError, match="features"):
        PixelClassifier(cfg).fit_features([feats], [labels]).predict_proba_features(feats[..., 0])
