"""Multi-level Otsu: one phase of a multi-phase material (pores / layer / particles)."""

from __future__ import annotations

import numpy as np
import pytest

from fmscope.data import em_stack_phantom
from fmscope.errors import InvalidInputError
from fmscope.metrics import dice
from fmscope.segment import ClassicalConfig, multiotsu_mask, segment_classical


@pytest.fixture
def three_phases() -> tuple[np.ndarray, np.ndarray]:
    """Phases 0/1/2 at grey levels 20/120/220 with noise; returns (image, phase map)."""
    rng = np.random.default_rng(1)
    phase = np.zeros((6, 48, 48), np.uint8)
    phase[:, 12:36, :] = 1
    phase[:, 20:28, 10:30] = 2
    image = (np.array([20.0, 120.0, 220.0])[phase] + rng.normal(0, 12, phase.shape)).astype(np.float32)
    return image, phase


@pytest.mark.parametrize(("phase", "expected"), [(0, 0), (1, 1), (2, 2), (-1, 2), (-3, 0)])
def test_each_phase_is_recovered(three_phases: tuple[np.ndarray, np.ndarray], phase: int, expected: int) -> None:
    image, truth = three_phases
    mask, thresholds = multiotsu_mask(image, classes=3, phase=phase)
    assert len(thresholds) == 2 and thresholds[0] < thresholds[1]
    assert dice(mask, truth == expected) > 0.98


def test_per_slice_thresholds(three_phases: tuple[np.ndarray, np.ndarray]) -> None:
    image, truth = three_phases
    result = segment_classical(image, ClassicalConfig("multiotsu", per_slice=True, min_size=5), instances=True)
    assert len(result.thresholds) == 2 * image.shape[0]
    assert dice(result.mask, truth == 2) > 0.98
    assert result.labels is not None and result.labels.max() == image.shape[0]  # one object per slice


def test_em_phantom_particles_need_four_phases() -> None:
    """The EM phantom has background/pores, substrate, layer and particles: plain Otsu cannot isolate particles."""
    ph = em_stack_phantom((12, 64, 64), seed=3)
    otsu = segment_classical(ph.image, ClassicalConfig("otsu", smooth_sigma=1.0)).mask
    multi = segment_classical(ph.image, ClassicalConfig("multiotsu", classes=4, smooth_sigma=1.0)).mask
    truth = ph.mask("particle")
    assert dice(multi, truth) > 0.7
    assert dice(multi, truth) > dice(otsu, truth) + 0.3


def test_constant_slice_gives_empty_mask_and_nan_thresholds() -> None:
    image = np.zeros((2, 16, 16), np.float32)
    image[1] = np.arange(256).reshape(16, 16)
    mask, thresholds = multiotsu_mask(image, classes=3, per_slice=True)
    assert not mask[0].any() and np.isnan(thresholds[:2]).all()
    assert mask[1].any() and np.isfinite(thresholds[2:]).all()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"classes": 1}, "classes"),
        ({"classes": 9}, "classes"),
        ({"phase": 3}, "phase"),
        ({"phase": -4}, "phase"),
        ({"phase": 1.5}, "phase"),
    ],
)
def test_bad_parameters(three_phases: tuple[np.ndarray, np.ndarray], kwargs: dict[str, float], message: str) -> None:
    with pytest.raises(InvalidInputError, match=message):
        multiotsu_mask(three_phases[0], **kwargs)  # type: ignore[arg-type]


def test_dark_objects_is_refused_for_multiotsu() -> None:
    with pytest.raises(InvalidInputError, match="phase=0"):
        ClassicalConfig("multiotsu", dark_objects=True)
