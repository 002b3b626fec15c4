"""``fmscope pretrain``: shipped configs, overrides, resume, and one-line errors on bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import run
from fmscope.cli.main import main
from fmscope.cli.pretrain_commands import SHIPPED, shipped_config_path
from fmscope.config import resolve_config
from fmscope.data import lightsheet_phantom
from fmscope.io import ImageMetadata, write_image
from fmscope.pretrain.config import PretrainConfig

pytest.importorskip("transformers")

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
def data(tmp_path_factory: pytest.TempPathFactory, bert: Path) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("vols")
    for i in range(2):
        ph = lightsheet_phantom((32, 40, 40), seed=i)
        write_image(folder / f"v{i}.nii.gz", ph.image, ImageMetadata.for_array(ph.image))
    (folder / "captions.json").write_text(json.dumps({"v0.nii.gz": "nuclei", "v1.nii.gz": "vessels"}))
    return folder, bert


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
    other = tmp_path / "other"
    other.mkdir()
    (other / "w.nii.gz").write_bytes((vols / "v0.nii.gz").read_bytes())  # same voxels, another source id
    code, out, err = run(capsys, "pretrain", "--data", vols, "--data", other, "--allow-missing-captions",
                         "--out", tmp_path / "c", *TINY, f"method.text_source={data[1]}")  # fmt: skip
    assert code == 0, err
    corpus = json.loads((tmp_path / "c" / "model" / "corpus.json").read_text())["volumes"]
    assert [Path(v["path"]).name for v in corpus] == ["v0.nii.gz", "v1.nii.gz", "w.nii.gz"]
    assert [v["captioned"] for v in corpus] == [True, True, False] and corpus[0]["digest"] == corpus[2]["digest"]


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


@pytest.fixture(scope="module")
def models(data: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A tiny image+text model and a tiny image-only model, pretrained for 2 steps."""
    vols, bert = data
    root = tmp_path_factory.mktemp("models")
    assert main(["pretrain", "--data", str(vols), "--out", str(root / "mm"), *TINY, f"method.text_source={bert}"]) == 0
    assert main(["pretrain", "--config", "image-only", "--data", str(vols), "--out", str(root / "io"), *TINY]) == 0
    return root / "mm" / "model", root / "io" / "model"


def test_embed_writes_embeddings_and_map(
    models: tuple[Path, Path], data: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import numpy as np

    capsys.readouterr()
    code, out, err = run(capsys, "embed", models[0], data[0], "-o", tmp_path / "emb")
    assert code == 0, err
    assert "2 image and caption embeddings (image-text, dim 8)" in out
    arrays = np.load(tmp_path / "emb" / "embeddings.npz")
    assert arrays["image"].shape == (2, 8) and arrays["text"].shape == (2, 8)
    np.testing.assert_allclose(np.linalg.norm(arrays["image"], axis=1), 1.0, rtol=1e-5)
    assert (tmp_path / "emb" / "map.png").stat().st_size > 5_000
    code, out, err = run(capsys, "embed", models[1], data[0], "-o", tmp_path / "emb2")
    assert code == 0 and "(backbone, dim 28)" in out, err  # unet-tiny levels pooled: 4 + 8 + 16 channels


def test_retrieve_ranks_all_volumes(
    models: tuple[Path, Path], data: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    capsys.readouterr()
    code, out, err = run(capsys, "retrieve", models[0], data[0], "nuclei", "--json")
    assert code == 0, err
    rows = json.loads(out)
    assert [r["rank"] for r in rows] == [1, 2]
    assert rows[0]["score"] >= rows[1]["score"]
    code, _, err = run(capsys, "retrieve", models[1], data[0], "nuclei")
    assert code == 1 and "image-only" in err


def test_embed_refuses_a_backbone_only_folder(
    models: tuple[Path, Path], data: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import shutil

    bare = tmp_path / "bare"
    shutil.copytree(models[1], bare)
    (bare / "pretrainer.json").unlink()
    code, _, err = run(capsys, "embed", bare, data[0], "-o", tmp_path / "e")
    assert code == 1 and "pretraining heads" in err and len(err.strip().splitlines()) == 1
