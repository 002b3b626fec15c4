"""The fm backend: the forest prompter on a model folder's dense features (random weights; 2D and 3D backbones)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from skimage.draw import disk

from fmscope.errors import FileFormatError, InvalidInputError
from fmscope.interactive import ObjectPrompt
from fmscope.interactive.backends import make_backend
from fmscope.interactive.fm_backend import FoundationPrompter
from fmscope.metrics import dice
from fmscope.models import create_model, save_model


def _image() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    image = rng.normal(1000.0, 60.0, (60, 70))
    truth = np.zeros(image.shape, bool)
    truth[disk((30, 35), 10, shape=image.shape)] = True
    image[truth] += 600.0
    return image.astype(np.uint16), truth


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_dense_features_are_appended_and_prompts_work(
    tmp_path: Path, spatial_dims: int, one_torch_thread: None
) -> None:
    patch = (16,) * spatial_dims
    folder = save_model(create_model("unet-tiny", spatial_dims=spatial_dims, patch_size=patch), tmp_path / "m")
    backend = make_backend("fm", model_dir=folder)
    assert isinstance(backend, FoundationPrompter) and backend.name == "fm"
    image, truth = _image()  # 60 x 70: not a multiple of the downsampling factor (padded and cropped back)
    embedding = backend.embed(image)
    rf_features = make_backend("rf").embed(image).features
    assert embedding.shape == image.shape
    assert embedding.features.shape[-1] == rf_features.shape[-1] + backend.backbone.config.out_channels
    np.testing.assert_allclose(embedding.features[..., : rf_features.shape[-1]], rf_features)
    result = backend.predict(embedding, ObjectPrompt(1, positive=((30.0, 35.0),)))
    assert dice(result.mask, truth) > 0.8


def test_bad_model_folders(tmp_path: Path) -> None:
    with pytest.raises(InvalidInputError, match="model folder"):
        make_backend("fm")
    with pytest.raises(FileFormatError):
        make_backend("fm", model_dir=tmp_path)
    with pytest.raises(InvalidInputError, match="checkpoint"):
        make_backend("rf", checkpoint=tmp_path / "x.pth")
    with pytest.raises(InvalidInputError, match="method"):
        make_backend("cellpose")
