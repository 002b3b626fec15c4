"""Shipped pretrained backbones: found by name wherever a model folder is taken, listed by `fmscope models`, and the
packaged one is a real, small, documented model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from conftest import run
from fmscope.errors import FileFormatError
from fmscope.models import create_model, get_config, load_model, save_model
from fmscope.models import shipped as shipped_module
from fmscope.models.shipped import SHIPPED_ROOT, resolve_model_dir, shipped_models, shipped_names


@pytest.fixture()
def fake_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "pretrained"
    root.mkdir()
    torch.manual_seed(0)
    folder = save_model(create_model("unet-tiny"), root / "tiny-test")
    (folder / "MODEL_CARD.md").write_text("# tiny-test\n\nA random unet-tiny for the tests.\n")
    monkeypatch.setattr(shipped_module, "SHIPPED_ROOT", root)
    return root


def test_a_shipped_name_resolves_and_loads_anywhere(fake_root: Path, tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    assert shipped_names() == ("tiny-test",)
    assert resolve_model_dir("tiny-test") == fake_root / "tiny-test"
    monkeypatch.chdir(tmp_path)
    (tmp_path / "tiny-test").mkdir()  # a local folder of the same name: the shipped name wins, ./ means the folder
    assert resolve_model_dir("tiny-test") == fake_root / "tiny-test"
    assert resolve_model_dir("./tiny-test") == Path("tiny-test") == resolve_model_dir(Path("tiny-test"))
    with pytest.raises(FileFormatError, match="config.json"):  # the local (empty) folder, not the shipped one
        load_model("./tiny-test")
    loaded = load_model("tiny-test")
    assert loaded.model.config == get_config("unet-tiny")
    [model] = shipped_models()
    assert (model.name, model.architecture, model.summary) == ("tiny-test", "unet", "A random unet-tiny for the tests.")


def test_an_unknown_name_lists_the_shipped_ones(fake_root: Path) -> None:
    with pytest.raises(FileFormatError, match=r"no-such.*shipped: tiny-test.*fmscope models"):
        load_model("no-such")
    assert resolve_model_dir("no-such", must_exist=False) is None


def test_fmscope_models_lists_the_shipped_backbones(fake_root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "models")
    assert code == 0 and "shipped pretrained backbones" in out and "tiny-test" in out
    code, out, _ = run(capsys, "models", "--json")
    assert json.loads(out)["shipped"][0]["name"] == "tiny-test"


def test_the_packaged_backbone_is_small_documented_and_loads() -> None:
    assert "lsm-unet-cpu" in shipped_names(), f"no lsm-unet-cpu under {SHIPPED_ROOT}"
    folder = resolve_model_dir("lsm-unet-cpu")
    size = sum(p.stat().st_size for p in folder.iterdir()) / 2**20
    assert size <= 20, f"{size:.1f} MiB"
    card = (folder / "MODEL_CARD.md").read_text()
    for needed in ("## Data", "MIT", "## Command", "fmscope pretrain", "## Measured"):
        assert needed in card, needed
    corpus = json.loads((folder / "corpus.json").read_text())["volumes"]
    assert len(corpus) == 10 and all(len(v["digest"]) == 64 for v in corpus)
    model = load_model("lsm-unet-cpu").model
    assert model.config.channels == get_config("unet-cpu").channels and model.config.spatial_dims == 3
    out = model(torch.rand(1, 1, 32, 32, 32))
    assert torch.isfinite(out.dense).all()
