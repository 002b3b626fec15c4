"""Read one real file of every shared dataset (../shared/data) with the shapes and dtypes their READMEs state."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from fmscope.io import read_image

REAL_FILES = [
    # (path under shared/data, format, axes, shape, dtype)
    ("isbi2012_em_membranes/raw.tif", "tiff", "ZYX", (30, 512, 512), "uint8"),
    ("isbi2012_em_membranes/original_png/image/07.png", "png", "YX", (512, 512), "uint8"),
    ("lsm_selma3d_wu_patches/pretrain/01_aa1-po-c-r45.nii.gz", "nifti", "ZYX", (96, 96, 96), "uint16"),
    ("lsm_selma3d_wu_patches/finetune/train/vessels_patch_014_vol013_ch0.nii.gz", "nifti", "ZYX", (96, 96, 96),
     "float32"),
    ("lsm_selma3d_wu_patches/finetune/train/vessels_patch_014_vol013_ch0_label.nii.gz", "nifti", "ZYX", (96, 96, 96),
     "uint8"),
    ("vesselnn_2pm_vasculature/images/burgess2014_lowerRes_hiSNR_BM4D_denoised.tif", "tiff", "ZYX", (26, 320, 320),
     "uint8"),
    ("vesselnn_2pm_vasculature/labels/santos2015_lowContrastVessels_labelsMarc.tif", "tiff", "ZYX", (15, 512, 512),
     "uint16"),
    ("dsb2018_bbbc038_nuclei_subset/images/00071198d059ba7f5914a526d124d28e6d010c92466da21d4a04cd5413362552.png",
     "png", "CYX", (4, 256, 256), "uint8"),
    ("tio2_sem_particles_bam/images_sem/1908248.tif", "tiff", "YX", (768, 1024), "uint8"),
    ("tio2_sem_particles_bam/masks_4classes_rgb/1908248_cm.tif", "tiff", "CYX", (3, 704, 1024), "uint8"),
]  # fmt: skip


@pytest.mark.parametrize(("rel", "fmt", "axes", "shape", "dtype"), REAL_FILES)
def test_read_real_file(shared_data: Path, rel: str, fmt: str, axes: str, shape: tuple[int, ...], dtype: str) -> None:
    path = shared_data / rel
    if not path.exists():
        pytest.skip(f"{rel} is not in this copy of the shared data")
    image = read_image(path)
    assert (image.meta.format, image.meta.axes, image.shape, image.meta.dtype) == (fmt, axes, shape, dtype)
    assert image.numpy().shape == shape


def test_isbi_raw_statistics(shared_data: Path) -> None:
    data = read_image(shared_data / "isbi2012_em_membranes/raw.tif").numpy()
    assert abs(float(data.mean()) - 126.2) < 0.1  # README: mean 126.2, std 44.0
    assert abs(float(data.std()) - 44.0) < 0.1


def test_isbi_png_folder_equals_tiff_stack(shared_data: Path) -> None:
    stack = read_image(shared_data / "isbi2012_em_membranes/original_png/image", lazy=True)
    assert stack.meta.format == "slices" and stack.shape == (30, 512, 512) and stack.is_lazy
    raw = read_image(shared_data / "isbi2012_em_membranes/raw.tif").numpy()
    np.testing.assert_array_equal(stack.data[[0, 7, 29]].compute(), raw[[0, 7, 29]])


def test_lsm_pretrain_patch_squeezes_channel_and_reads_zooms(shared_data: Path) -> None:
    image = read_image(shared_data / "lsm_selma3d_wu_patches/pretrain/01_aa1-po-c-r45.nii.gz")
    assert any("singleton" in note for note in image.meta.notes)
    assert image.meta.spacing == (0.002, 0.001866, 0.001866)  # header zooms (x, y, z) = (0.001866, 0.001866, 0.002)
    assert image.meta.unit is None  # xyzt_units 'unknown'


def test_dsb_rgba_channels_identical(shared_data: Path) -> None:
    folder = shared_data / "dsb2018_bbbc038_nuclei_subset/images"
    image = read_image(sorted(folder.glob("*.png"))[0]).numpy()
    np.testing.assert_array_equal(image[0], image[1])
    np.testing.assert_array_equal(image[0], image[2])
    assert len(np.unique(image[3])) == 1  # alpha is constant
