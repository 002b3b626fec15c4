"""Deblurring building blocks: degradation (numpy and torch), the restoration loss, metrics, and the real LSM pairs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from scipy import ndimage

from fmscope.data.degradation import DegradationConfig, degrade, degrade_torch
from fmscope.errors import InvalidInputError
from fmscope.io import read_image
from fmscope.metrics import ssim
from fmscope.tasks.restoration import DeblurLossWeights, deblur_loss, residual_output, restoration_metrics

NO_NOISE = {"noise": "none"}


def _smooth_volume(shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    """Random structure with a few voxels of correlation, in [0, 1]."""
    raw = ndimage.gaussian_filter(np.random.default_rng(seed).random(shape), 1.0)
    return ((raw - raw.min()) / (raw.max() - raw.min())).astype(np.float32)


def _batch(volume: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(volume)[None, None]


# --- configs -------------------------------------------------------------------------------------------------------


def test_scalar_sigma_is_broadcast() -> None:
    config = DegradationConfig(sigma=1.5)  # type: ignore[arg-type]
    assert config.sigma == (1.5,)
    assert config.sigma_for(3) == (1.5, 1.5, 1.5)
    assert config.sigma_for(2) == (1.5, 1.5)
    assert DegradationConfig(sigma=[1, 2]).sigma == (1.0, 2.0)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"sigma": (1.0, -0.5, 1.0)}, "sigma"),
        ({"sigma": ()}, "sigma"),
        ({"sigma": "big"}, "sigma"),
        ({"sigma": (1.0, float("nan"))}, "sigma"),
        ({"noise": "salt"}, "noise"),
        ({"noise_std": -1.0}, "noise_std"),
        ({"photons": 0.0}, "photons"),
        ({"clip": (1.0, 0.0)}, "clip"),
        ({"clip": (0.0,)}, "clip"),
    ],
)
def test_bad_degradation_config_names_the_field(kwargs: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidInputError, match=f"^{field}:"):
        DegradationConfig(**kwargs)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"l1": -1.0}, "l1"),
        ({"ssim": float("inf")}, "ssim"),
        ({"edge": -0.1}, "edge"),
        ({"high_freq": -2}, "high_freq"),
    ],
)
def test_bad_loss_weights_name_the_field(kwargs: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidInputError, match=f"^{field}:"):
        DeblurLossWeights(**kwargs)


def test_all_zero_loss_weights_raise() -> None:
    with pytest.raises(InvalidInputError, match="at least one weight"):
        DeblurLossWeights(l1=0, ssim=0, edge=0, high_freq=0)


def test_sigma_length_must_match_the_dimensionality() -> None:
    assert DegradationConfig(sigma=(1.0, 1.0, 1.0)).sigma_for(2) == (1.0, 1.0)  # isotropic: fits 2D too
    config = DegradationConfig(sigma=(2.0, 1.0, 1.0))
    with pytest.raises(InvalidInputError, match="^sigma:"):
        degrade(np.zeros((16, 16), np.float32), config)
    with pytest.raises(InvalidInputError, match="^sigma:"):
        degrade_torch(torch.zeros(1, 1, 16, 16), config)


# --- degradation ---------------------------------------------------------------------------------------------------


def test_degrade_is_deterministic_per_seed_and_differs_across_seeds() -> None:
    volume = _smooth_volume((16, 16, 16))
    config = DegradationConfig(sigma=1.0, noise_std=0.05)  # type: ignore[arg-type]
    a, b, c = degrade(volume, config, 3), degrade(volume, config, 3), degrade(volume, config, 4)
    assert a.dtype == np.float32 and a.shape == volume.shape
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    np.testing.assert_array_equal(volume, _smooth_volume((16, 16, 16)))  # input untouched


def test_sigma_zero_without_noise_is_the_identity() -> None:
    volume = _smooth_volume((8, 12, 10))
    config = DegradationConfig(sigma=0.0, noise="none")  # type: ignore[arg-type]
    np.testing.assert_array_equal(degrade(volume, config), volume)
    torch.testing.assert_close(degrade_torch(_batch(volume), config), _batch(volume))


def test_blur_acts_only_along_the_axes_with_sigma() -> None:
    rng = np.random.default_rng(1)
    along_z = np.broadcast_to(rng.random((24, 1, 1)), (24, 20, 20)).astype(np.float32)  # varies only along Z
    out_x = degrade(along_z, DegradationConfig(sigma=(0.0, 0.0, 2.0), **NO_NOISE))  # type: ignore[arg-type]
    np.testing.assert_allclose(out_x, along_z, atol=1e-6)  # a blur along X leaves Z-lines unchanged
    out_z = degrade(along_z, DegradationConfig(sigma=(2.0, 0.0, 0.0), **NO_NOISE))  # type: ignore[arg-type]
    hf_before = np.abs(np.diff(along_z, axis=0)).mean()
    assert np.abs(np.diff(out_z, axis=0)).mean() < 0.3 * hf_before  # the blur along Z removes high frequencies
    torch_x = degrade_torch(_batch(along_z), DegradationConfig(sigma=(0.0, 0.0, 2.0), **NO_NOISE))  # type: ignore[arg-type]
    np.testing.assert_allclose(torch_x[0, 0].numpy(), along_z, atol=1e-6)


def test_gaussian_noise_has_the_configured_std() -> None:
    flat = np.full((32, 32, 32), 100.0, np.float32)
    config = DegradationConfig(sigma=1.0, noise_std=2.5)  # type: ignore[arg-type]
    out = degrade(flat, config, 0)
    assert abs(float(out.std()) - 2.5) < 0.05 and abs(float(out.mean()) - 100.0) < 0.05
    out_t = degrade_torch(_batch(flat), config, torch.Generator().manual_seed(0))
    assert abs(float(out_t.std()) - 2.5) < 0.05 and abs(float(out_t.mean()) - 100.0) < 0.05


def test_poisson_noise_preserves_the_mean() -> None:
    flat = np.full((32, 32, 32), 0.5, np.float32)
    config = DegradationConfig(sigma=0.0, noise="poisson", photons=100.0)  # type: ignore[arg-type]
    out = degrade(flat, config, 0)
    # max 0.5 -> 100 counts: per-voxel std 0.5 / sqrt(100) = 0.05, mean over 32^3 voxels within ~3e-4
    assert abs(float(out.mean()) - 0.5) < 2e-3 and abs(float(out.std()) - 0.05) < 3e-3
    out_t = degrade_torch(_batch(flat), config, torch.Generator().manual_seed(0))
    assert abs(float(out_t.mean()) - 0.5) < 2e-3 and abs(float(out_t.std()) - 0.05) < 3e-3


def test_clip_is_applied_last() -> None:
    out = degrade(np.full((16, 16), 0.5, np.float32), DegradationConfig(sigma=1.0, noise_std=1.0, clip=(0.0, 1.0)), 0)  # type: ignore[arg-type]
    assert out.min() == 0.0 and out.max() == 1.0


@pytest.mark.parametrize(
    ("shape", "sigma"),
    [
        ((20, 24, 28), (2.5, 2.5, 2.5)),
        ((12, 30, 9), (1.3, 0.0, 3.0)),
        ((6, 16, 16), (4.0, 1.0, 0.7)),
        ((32, 28), (2.5, 1.2)),
    ],
)
def test_degrade_torch_agrees_with_numpy(shape: tuple[int, ...], sigma: tuple[float, ...]) -> None:
    volume = np.random.default_rng(2).random(shape).astype(np.float32)  # white noise: the hardest case for borders
    config = DegradationConfig(sigma=sigma, noise="none")
    expected = degrade(volume, config)
    got = degrade_torch(_batch(volume), config)[0, 0].numpy()
    np.testing.assert_allclose(got, expected, atol=1e-5)  # also with a border pad wider than the axis (6 < 2 * 8)


def test_degrade_torch_handles_batches_and_channels_independently() -> None:
    volumes = [_smooth_volume((10, 12, 14), seed) for seed in range(3)]
    batch = torch.from_numpy(np.stack(volumes)).reshape(1, 3, 10, 12, 14).repeat(2, 1, 1, 1, 1)
    config = DegradationConfig(sigma=(1.0, 2.0, 0.5), noise="none")
    out = degrade_torch(batch, config)
    for c, volume in enumerate(volumes):
        np.testing.assert_allclose(out[1, c].numpy(), degrade(volume, config), atol=1e-5)


# --- loss ----------------------------------------------------------------------------------------------------------


def _sharp_and_blurred(shape: tuple[int, ...]) -> tuple[torch.Tensor, torch.Tensor]:
    sharp = _smooth_volume(shape, 5)
    blurred = degrade(sharp, DegradationConfig(sigma=2.0, noise="none"))  # type: ignore[arg-type]
    return _batch(sharp), _batch(blurred)


@pytest.mark.parametrize("shape", [(32, 32, 32), (64, 64)])
def test_deblur_loss_is_zero_for_identical_inputs_and_positive_otherwise(shape: tuple[int, ...]) -> None:
    sharp, blurred = _sharp_and_blurred(shape)
    total, terms = deblur_loss(sharp, sharp.clone())
    assert abs(float(total)) < 1e-6 and all(abs(v) < 1e-6 for v in terms.values())
    total, terms = deblur_loss(blurred, sharp)
    assert set(terms) == {"l1", "ssim", "edge", "high_freq"}
    assert all(v > 0 for v in terms.values()), terms
    expected = terms["l1"] + 0.2 * terms["ssim"] + 0.1 * terms["edge"] + 0.1 * terms["high_freq"]
    assert float(total) == pytest.approx(expected, rel=1e-5)


def test_gradients_reach_the_prediction_through_every_term() -> None:
    sharp, blurred = _sharp_and_blurred((16, 16, 16))
    for name in ("l1", "ssim", "edge", "high_freq"):
        prediction = blurred.clone().requires_grad_(True)
        weights = DeblurLossWeights(**{k: float(k == name) for k in ("l1", "ssim", "edge", "high_freq")})
        total, _ = deblur_loss(prediction, sharp, weights)
        total.backward()
        assert prediction.grad is not None and torch.isfinite(prediction.grad).all(), name
        assert float(prediction.grad.abs().sum()) > 0, name


def test_zero_weight_turns_a_term_off() -> None:
    sharp, blurred = _sharp_and_blurred((16, 16, 16))
    total, terms = deblur_loss(blurred, sharp, DeblurLossWeights(ssim=0.0, high_freq=0.0))
    assert terms["ssim"] == 0.0 and terms["high_freq"] == 0.0 and terms["l1"] > 0
    assert float(total) == pytest.approx(terms["l1"] + 0.1 * terms["edge"], rel=1e-5)


@pytest.mark.parametrize("shape", [(24, 24, 24), (48, 40)])
def test_ssim_term_matches_the_numpy_metric(shape: tuple[int, ...]) -> None:
    sharp, blurred = _sharp_and_blurred(shape)
    noisy = (blurred + 0.05 * torch.randn(blurred.shape, generator=torch.Generator().manual_seed(0))).clamp(0, 1)
    _, terms = deblur_loss(noisy, sharp, DeblurLossWeights(l1=0.0, ssim=1.0, edge=0.0, high_freq=0.0))
    reference = 1.0 - ssim(noisy[0, 0].numpy(), sharp[0, 0].numpy(), data_range=1.0)
    # Same definition (Gaussian 11 / 1.5, population covariance, mean where the window fits): identical in float64,
    # float32 rounding only here (measured differences ~3e-7)
    assert terms["ssim"] == pytest.approx(reference, abs=1e-5)


def test_ssim_term_shrinks_the_window_for_small_inputs() -> None:
    sharp, blurred = _sharp_and_blurred((4, 8, 16))
    total, terms = deblur_loss(blurred, sharp, DeblurLossWeights(l1=0.0, ssim=1.0, edge=0.0, high_freq=0.0))
    assert 0 < terms["ssim"] < 1 and torch.isfinite(total)


def test_deblur_loss_rejects_bad_shapes() -> None:
    with pytest.raises(InvalidInputError, match="^target:"):
        deblur_loss(torch.zeros(1, 1, 8, 8, 8), torch.zeros(1, 1, 8, 8, 9))
    with pytest.raises(InvalidInputError, match="^prediction:"):
        deblur_loss(torch.zeros(8, 8, 8), torch.zeros(8, 8, 8))


def test_residual_output_is_clamped() -> None:
    degraded = torch.tensor([[[[0.2, 0.9], [0.5, 0.0]]]])
    residual = torch.tensor([[[[0.1, 0.3], [-0.6, -0.1]]]])
    torch.testing.assert_close(residual_output(degraded, residual), torch.tensor([[[[0.3, 1.0], [0.0, 0.0]]]]))
    with pytest.raises(InvalidInputError, match="^residual:"):
        residual_output(degraded, residual[..., :1])


def test_restoration_metrics() -> None:
    sharp = _smooth_volume((16, 16, 16))
    blurred = degrade(sharp, DegradationConfig(sigma=1.5, noise="none"))  # type: ignore[arg-type]
    metrics = restoration_metrics(blurred, sharp)
    assert set(metrics) == {"ssim", "psnr"} and 0 < metrics["ssim"] < 1 and 10 < metrics["psnr"] < 60
    assert restoration_metrics(sharp, sharp)["ssim"] == pytest.approx(1.0)


# --- real data -----------------------------------------------------------------------------------------------------


def test_degradation_reproduces_the_shipped_blurred_lsm_patch(shared_data: Path) -> None:
    folder = shared_data / "lsm_selma3d_wu_patches" / "finetune" / "train"
    if not folder.is_dir():
        pytest.skip(f"shared LSM data not found at {folder}")
    sharp = read_image(folder / "vessels_patch_014_vol013_ch0.nii.gz").numpy()
    shipped = read_image(folder / "vessels_patch_014_vol013_ch0_blurred.nii.gz").numpy()
    ours = degrade(sharp, DegradationConfig(), rng=0)  # reference: sigma 2.5, Gaussian noise std 2.5 raw units
    low, high = np.percentile(sharp, [1.0, 99.8])

    def norm(x: np.ndarray) -> np.ndarray:
        return np.clip((x - low) / (high - low), 0.0, 1.0)

    ssim_ours = ssim(norm(ours), norm(shipped), data_range=1.0)
    ssim_sharp = ssim(norm(sharp), norm(shipped), data_range=1.0)
    assert ssim_ours > ssim_sharp
    assert ssim_ours > 0.95  # same blur, only the noise draw differs
