"""``fmscope pretrain``: shipped configs, overrides, resume, and one-line errors on bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fmscope.cli.main import main
from fmscope.cli.pretrain_commands import SHIPPED, shipped_config_path
from fmscope.config import resolve_config
from fmscope.data import lightsheet_phantom
from fmscope.io import ImageMetadata, write_image
from fmscope.pretrain.config import PretrainConfig

pytest.importorskip("transformers")
from test_text_encoder import make_tiny_bert  # noqa: E402

TINY = [
    "method.model=unet-tiny",
    "data.patch_size=[32, 32, 32]",
    "data.patches_per_volume=1",
    "data.min_foreground=0",
    "method.n_prototypes=8",
    "method.head_hidden=8",
    "method.embed_dim=8",
    "train.steps=2",
    "train.checkpoint_every=1",
]


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("vols")
    for i in range(2):
        ph = lightsheet_phantom((32, 40, 40), seed=i)
        write_image(folder / f"v{i}.nii.gz", ph.image, ImageMetadata.for_array(ph.image))
    (folder / "captions.json").write_text(json.dumps({"v0.nii.gz": "nuclei", "v1.nii.gz": "vessels"}))
    return folder, make_tiny_bert(tmp_path_factory.mktemp("bert"))


def run(capsys: pytest.CaptureFixture[str], *argv: str | Path) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_configs_resolve(name: str) -> None:
    cfg = resolve_config(PretrainConfig, shipped_config_path(name))
    assert cfg.method.model in ("unet-cpu", "unet", "swinunetr")
    assert (cfg.method.weights.clip == 0) == (name == "image-only")


def test_pretrain_then_resume(data: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    vols, bert = data
    out = tmp_path / "run"
    args = ["pretrain", "--data", vols, "--out", out, *TINY, f"method.text_source={bert}"]
    code, stdout, err = run(capsys, *args)
    assert code == 0, err
    assert "pretrained 2 steps" in stdout and (out / "model" / "model.safetensors").exists()
    code, stdout, err = run(capsys, *args[:-2], "train.steps=3", f"method.text_source={bert}", "--resume")
    assert code == 0, err
    assert "pretrained 3 steps" in stdout
    code, _, err = run(capsys, *args)
    assert code == 1 and "not empty" in err and len(err.strip().splitlines()) == 1


def test_image_only_without_captions(
    data: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    vols, _ = data
    bare = tmp_path / "bare"
    bare.mkdir()
    for f in vols.glob("*.nii.gz"):
        (bare / f.name).write_bytes(f.read_bytes())
    code, _, err = run(capsys, "pretrain", "--data", bare, "--out", tmp_path / "a", *TINY)
    assert code == 1 and "captions" in err and len(err.strip().splitlines()) == 1
    code, _, err = run(capsys, "pretrain", "--config", "image-only", "--data", bare, "--out", tmp_path / "b", *TINY)
    assert code == 0, err


@pytest.mark.parametrize(
    ("extra", "fragment"),
    [
        (["--config", "nope"], "--config"),
        (["--config", "/nonexistent.yaml"], "does not exist"),
        (["train.stepz=3"], "unknown config key"),
        (["--resume"], "no checkpoint"),
        (["data.patch_size=[64, 64, 64]"], "patch"),
    ],
)
def test_bad_input(
    extra: list[str], fragment: str, data: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    vols, bert = data
    code, _, err = run(
        capsys, "pretrain", "--data", vols, "--out", tmp_path / "x", *TINY, f"method.text_source={bert}", *extra
    )
    assert code == 1 and fragment in err, err
    assert len(err.strip().splitlines()) == 1
