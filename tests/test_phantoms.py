"""Tests of the synthetic phantoms: determinism, contracts, ground truth consistency, realism checks, validation."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from scipy import ndimage
from skimage.filters import threshold_otsu
from skimage.morphology import skeletonize

from fmscope.data import Phantom, em_stack_phantom, lightsheet_phantom
from fmscope.errors import InvalidInputError

FULL = np.ones((3, 3, 3), bool)  # 26-connectivity
SMALL_LS = (24, 48, 48)
SMALL_EM = (8, 48, 48)


@pytest.fixture(scope="module")
def ls() -> Phantom:
    return lightsheet_phantom(seed=0)


@pytest.fixture(scope="module")
def em() -> Phantom:
    return em_stack_phantom(seed=0)


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    return float(2 * np.sum(a & b) / (a.sum() + b.sum()))


GENERATORS: list[tuple[Callable[..., Phantom], tuple[int, int, int]]] = [
    (lightsheet_phantom, SMALL_LS),
    (em_stack_phantom, SMALL_EM),
]


@pytest.mark.parametrize(("make", "shape"), GENERATORS)
def test_same_seed_identical_other_seed_different(make: Callable[..., Phantom], shape: tuple[int, int, int]) -> None:
    a, b, c = make(shape, seed=3), make(shape, seed=3), make(shape, seed=4)
    for name in ("image", "semantic", "instances"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    assert a.caption == b.caption
    assert not np.array_equal(a.image, c.image)
    assert not np.array_equal(a.semantic, c.semantic)
    assert (a.seed, c.seed) == (3, 4)


@pytest.mark.parametrize(
    ("make", "shape", "dtype", "classes", "kind", "unit", "spacing"),
    [
        (lightsheet_phantom, (16, 40, 32), np.uint16, ("nuclei", "plaques", "vessels"), "lightsheet", "micrometer",
         (2.0, 1.0, 1.0)),
        (em_stack_phantom, (6, 40, 64), np.uint8, ("layer", "particle"), "em", "nanometer", (10.0, 5.0, 5.0)),
    ],
)  # fmt: skip
def test_contract(
    make: Callable[..., Phantom],
    shape: tuple[int, int, int],
    dtype: type,
    classes: tuple[str, ...],
    kind: str,
    unit: str,
    spacing: tuple[float, float, float],
) -> None:
    p = make(shape, seed=1)
    assert p.image.shape == p.semantic.shape == p.instances.shape == shape
    assert (p.image.dtype, p.semantic.dtype, p.instances.dtype) == (dtype, np.uint8, np.int32)
    assert (p.class_names, p.kind, p.unit, p.spacing) == (classes, kind, unit, spacing)
    assert int(p.semantic.max()) <= len(classes)
    assert p.image.std() > 0
    assert len(p.caption) > 40


def test_lightsheet_intensity_range(ls: Phantom) -> None:
    lo, hi = np.percentile(ls.image, [1, 99.9])
    assert 100 < lo < 400  # camera offset 100 plus background photons
    assert hi > 8 * lo  # wide dynamic range (bright plaques)
    assert int(ls.image.max()) < 65535  # not saturated at the defaults


@pytest.mark.parametrize(
    ("fixture", "expected"),
    [
        ("ls", {"nuclei": (0.01, 0.15), "plaques": (1e-4, 5e-3), "vessels": (0.01, 0.15)}),
        ("em", {"layer": (0.15, 0.5), "particle": (0.01, 0.1)}),
    ],
)
def test_every_class_present_with_sensible_fraction(
    fixture: str, expected: dict[str, tuple[float, float]], request: pytest.FixtureRequest
) -> None:
    p: Phantom = request.getfixturevalue(fixture)
    assert set(p.class_names) == set(expected)
    for name, (lo, hi) in expected.items():
        assert lo < p.mask(name).mean() < hi, name


@pytest.mark.parametrize(("fixture", "instance_classes"), [("ls", {1, 2, 3}), ("em", {2})])
def test_instances_unique_and_class_consistent(
    fixture: str, instance_classes: set[int], request: pytest.FixtureRequest
) -> None:
    p: Phantom = request.getfixturevalue(fixture)
    ids = np.unique(p.instances)
    np.testing.assert_array_equal(ids, np.arange(ids.size))  # 0 plus consecutive ids 1..N
    classes_per_id = {int(i): set(np.unique(p.semantic[p.instances == i]).tolist()) for i in ids[1:]}
    assert all(len(c) == 1 for c in classes_per_id.values())  # one class per instance
    assert set().union(*classes_per_id.values()) == instance_classes
    in_instance_class = np.isin(p.semantic, list(instance_classes))
    np.testing.assert_array_equal(p.instances > 0, in_instance_class)


def test_lightsheet_object_count_and_brightness(ls: Phantom) -> None:
    image = ls.image.astype(float)
    background = image[ls.semantic == 0].mean()
    means = {name: image[ls.mask(name)].mean() for name in ls.class_names}
    assert all(m > 1.3 * background for m in means.values()), (background, means)
    assert means["plaques"] > max(means["nuclei"], means["vessels"])


def test_lightsheet_explicit_counts_and_structure_order() -> None:
    p = lightsheet_phantom(SMALL_LS, structures=("plaques", "nuclei"), n_nuclei=5, n_plaques=0, seed=2)
    assert p.class_names == ("plaques", "nuclei")
    assert not p.mask("plaques").any()
    nuclei_ids = np.unique(p.instances[p.mask("nuclei")])
    assert nuclei_ids.size == 5
    assert set(np.unique(p.semantic).tolist()) == {0, 2}
    assert "5 textured cell nuclei" in p.caption and "vessel" not in p.caption


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_vessels_form_few_connected_branching_trees(seed: int) -> None:
    p = lightsheet_phantom((32, 64, 64), structures=("vessels",), n_vessels=2, seed=seed)
    vessels = p.mask("vessels")
    _, n_components = ndimage.label(vessels, FULL)
    assert 1 <= n_components <= 2
    # Branching: an unbranched tube has 2 skeleton end points; a tree has more.
    skeleton = skeletonize(vessels)
    neighbours = ndimage.convolve(skeleton.astype(np.uint8), FULL.astype(np.uint8), mode="constant") - 1
    assert int(np.sum(skeleton & (neighbours == 1))) > 2 * n_components


def test_lightsheet_otsu_is_meaningful_but_imperfect(ls: Phantom) -> None:
    foreground = ls.semantic > 0
    dice = _dice(ls.image > threshold_otsu(ls.image), foreground)
    assert 0.4 < dice < 0.95, dice


def test_em_grey_levels(em: Phantom) -> None:
    image = em.image.astype(float)
    particle, layer = image[em.mask("particle")].mean(), image[em.mask("layer")].mean()
    background = image[em.semantic == 0].mean()
    assert particle > layer + 40 > background + 80
    assert 60 < image.mean() < 160


@pytest.mark.parametrize("drift", [0.0, 0.5, 1.5])
def test_em_particles_drift_by_about_drift_per_slice(drift: float) -> None:
    p = em_stack_phantom((24, 96, 96), drift_px_per_slice=drift, n_particles=12, seed=5)
    speeds = []
    for i in range(1, int(p.instances.max()) + 1):
        z, y, x = np.nonzero(p.instances == i)
        zs = np.unique(z)
        if zs.size < 5:
            continue
        cy = np.array([y[z == k].mean() for k in zs])
        cx = np.array([x[z == k].mean() for k in zs])
        speeds.append(np.hypot(np.polyfit(zs, cy, 1)[0], np.polyfit(zs, cx, 1)[0]))
    assert len(speeds) >= 5
    assert abs(float(np.median(speeds)) - drift) < 0.05 + 0.05 * drift, speeds


def test_mask_unknown_name_lists_names(em: Phantom) -> None:
    with pytest.raises(InvalidInputError, match=r"name: expected one of \['layer', 'particle'\], got 'pore'"):
        em.mask("pore")


def test_phantom_rejects_mismatched_shapes() -> None:
    image = np.zeros((2, 3, 4), np.uint8)
    with pytest.raises(InvalidInputError, match="semantic: expected the image shape"):
        Phantom(image, np.zeros((2, 3, 3), np.uint8), np.zeros((2, 3, 4), np.int32), ("a",), (1, 1, 1), "", "em", 0, "")


BAD_LIGHTSHEET: list[tuple[dict[str, Any], str]] = [
    ({"shape": (4, 32, 32)}, r"shape: expected 3 ints \(Z, Y, X\) of at least \(8, 16, 16\), got \(4, 32, 32\)"),
    ({"shape": (16, 32)}, "shape: expected 3 ints"),
    ({"shape": (16.0, 32, 32)}, "shape: expected 3 ints"),
    ({"shape": "abc"}, "shape: expected 3 ints"),
    ({"structures": ("nuclei", "cells")}, r"structures: expected distinct names from \['nuclei', 'plaques', 'vessels'"),
    ({"structures": ("nuclei", "nuclei")}, "structures: expected distinct names"),
    ({"structures": "nuclei"}, "structures: expected a non-empty sequence of names, got 'nuclei'"),
    ({"structures": ()}, "structures: expected a non-empty sequence"),
    ({"n_nuclei": -1}, "n_nuclei: expected None or an int >= 0, got -1"),
    ({"n_vessels": 2.5}, "n_vessels: expected None or an int >= 0, got 2.5"),
    ({"n_plaques": True}, "n_plaques: expected None or an int >= 0"),
    ({"structures": ("nuclei",), "n_vessels": 2}, "n_vessels: expected None because 'vessels' is not in structures"),
    ({"seed": -3}, "seed: expected an int >= 0, got -3"),
    ({"blur_sigma": (1.0, -1.0, 1.0)}, r"blur_sigma: expected 3 finite numbers >= 0 \(Z, Y, X\)"),
    ({"spacing": (1.0, 0.0, 1.0)}, r"spacing: expected 3 finite numbers > 0"),
    ({"spacing": (1.0, 1.0)}, "spacing: expected 3 finite numbers > 0"),
    ({"spacing": (1.0, float("nan"), 1.0)}, "spacing: expected 3 finite numbers > 0"),
    ({"photons": 0}, "photons: expected a finite number > 0.0, got 0"),
    ({"background": -0.1}, "background: expected a finite number >= 0.0, got -0.1"),
]
BAD_EM: list[tuple[dict[str, Any], str]] = [
    ({"shape": (4, 16, 64)}, r"shape: expected 3 ints \(Z, Y, X\) of at least \(4, 32, 32\)"),
    ({"shape": (0, 64, 64)}, "shape: expected 3 ints"),
    ({"n_particles": -2}, "n_particles: expected None or an int >= 0, got -2"),
    ({"drift_px_per_slice": -0.5}, "drift_px_per_slice: expected a finite number >= 0.0, got -0.5"),
    ({"drift_px_per_slice": float("inf")}, "drift_px_per_slice: expected a finite number"),
    ({"porosity": 0.95}, "porosity: expected a finite number >= 0.0 and <= 0.9, got 0.95"),
    ({"porosity": "high"}, "porosity: expected a finite number"),
    ({"noise_sigma": -1}, "noise_sigma: expected a finite number >= 0.0"),
    ({"spacing": (10.0, -5.0, 5.0)}, "spacing: expected 3 finite numbers > 0"),
    ({"seed": 1.5}, "seed: expected an int >= 0, got 1.5"),
]


@pytest.mark.parametrize(
    ("make", "kwargs", "message"),
    [(lightsheet_phantom, k, m) for k, m in BAD_LIGHTSHEET] + [(em_stack_phantom, k, m) for k, m in BAD_EM],
)
def test_bad_parameters_raise(make: Callable[..., Phantom], kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidInputError, match=message):
        make(**kwargs)


def test_em_zero_porosity_and_no_particles() -> None:
    p = em_stack_phantom(SMALL_EM, porosity=0.0, n_particles=0, noise_sigma=0.0)
    assert not p.mask("particle").any() and p.instances.max() == 0
    band_rows = p.mask("layer").any(axis=(0, 2))
    assert band_rows.sum() > 0.4 * SMALL_EM[1]
    assert "0 bright" in p.caption
