"""The pretraining loop: resume == uninterrupted run, NaN guard, checkpoints, bad inputs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from fmscope.config import resolve_config
from fmscope.data import lightsheet_phantom
from fmscope.engine import latest_checkpoint
from fmscope.engine.logs import read_metrics
from fmscope.errors import InvalidInputError, OutputExistsError, TrainingDivergedError
from fmscope.io import ImageMetadata, write_image
from fmscope.models import get_config, load_model
from fmscope.pretrain.config import PretrainConfig
from fmscope.pretrain.train import pretrain

pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def volumes(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three small light-sheet phantoms with captions (two share a caption, as patches of one stain would)."""
    folder = tmp_path_factory.mktemp("vols")
    captions = {}
    for i, caption in enumerate(["nuclei and vessels", "nuclei and vessels", "bright plaques"]):
        ph = lightsheet_phantom((32, 48, 48), seed=i)
        name = f"vol{i}.tif"
        write_image(folder / name, ph.image, ImageMetadata.for_array(ph.image))
        captions[name] = caption
    (folder / "captions.json").write_text(json.dumps(captions))
    return folder


def config(volumes: Path, bert: Path, *extra: str) -> PretrainConfig:
    return resolve_config(
        PretrainConfig,
        None,
        [
            f"data.path={volumes}",
            "data.patch_size=[32, 32, 32]",
            "data.patches_per_volume=1",
            "data.min_foreground=0.0",
            "method.model=unet-tiny",
            "method.n_prototypes=16",
            "method.head_hidden=8",
            "method.embed_dim=16",
            "method.queue_size=4",
            f"method.text_source={bert}",
            "train.steps=6",
            "train.batch_size=2",
            "train.checkpoint_every=3",
            "train.text_warmup_steps=2",
            "optim.warmup_steps=2",
            "optim.lr=1e-3",
            "masking.block_size=8",
            "masking.warmup_steps=2",
            *extra,
        ],
    )


def test_resume_reproduces_the_uninterrupted_run(volumes: Path, bert: Path, tmp_path: Path) -> None:
    cfg = config(volumes, bert)
    full = pretrain(cfg, tmp_path / "full", progress=False)
    assert full.model_dir is not None
    part = pretrain(cfg, tmp_path / "part", stop_after=3, progress=False)
    assert part.model_dir is None and latest_checkpoint(tmp_path / "part" / "checkpoints") is not None
    pretrain(cfg, tmp_path / "part", resume=True, progress=False)
    for run in ("full", "part"):  # checkpoints at steps 3 and 6; the default train.keep_checkpoints=1 keeps the last
        assert sorted(p.name for p in (tmp_path / run / "checkpoints").glob("*.pt")) == ["step_00000006.pt"]
    a = read_metrics(tmp_path / "full" / "metrics.csv")
    b = read_metrics(tmp_path / "part" / "metrics.csv")
    keys = ["loss", "distill", "recon", "align", "clip", "clip_scale", "lr", "grad_norm", "mask_fraction"]
    assert [r["step"] for r in b] == list(range(6))
    np.testing.assert_allclose([[r[k] for k in keys] for r in b], [[r[k] for k in keys] for r in a], rtol=1e-5)
    assert all(r["clip"] > 0 and r["align"] > 0 and r["distill"] > 0 and r["recon"] > 0 for r in a)
    assert a[-1]["clip_scale"] != a[0]["clip_scale"]  # the temperature is learned


def test_outputs_and_model_folder(volumes: Path, bert: Path, tmp_path: Path) -> None:
    cfg = config(volumes, bert, "train.steps=2", "method.weights.align=0", "method.weights.clip=0")
    result = pretrain(cfg, tmp_path / "run", progress=False)
    assert (tmp_path / "run" / "config.yaml").exists()
    assert (tmp_path / "run" / "loss_curves.png").stat().st_size > 5_000
    loaded = load_model(result.model_dir)  # type: ignore[arg-type]
    assert loaded.config == get_config("unet-tiny")
    rows = read_metrics(tmp_path / "run" / "metrics.csv")
    assert len(rows) == 2 and rows[0]["clip"] == 0.0 and rows[0]["align"] == 0.0


def test_nan_guard_stops_with_a_clear_message(volumes: Path, bert: Path, tmp_path: Path) -> None:
    cfg = config(volumes, bert, "optim.lr=1e30", "optim.grad_clip=1e30", "train.steps=20")
    with pytest.raises(TrainingDivergedError, match="step"):
        pretrain(cfg, tmp_path / "nan", progress=False)


def test_bad_inputs(volumes: Path, bert: Path, tmp_path: Path) -> None:
    cfg = config(volumes, bert, "train.steps=1")
    pretrain(cfg, tmp_path / "once", progress=False)
    with pytest.raises(OutputExistsError, match="not empty"):
        pretrain(cfg, tmp_path / "once", progress=False)
    with pytest.raises(InvalidInputError, match="no checkpoint"):
        pretrain(cfg, tmp_path / "empty", resume=True, progress=False)
    other = config(volumes, bert, "train.steps=1", "method.model=unet-cpu", "data.patch_size=[32, 32, 32]")
    with pytest.raises(InvalidInputError, match="unet-tiny"):
        pretrain(other, tmp_path / "once", resume=True, progress=False)
    with pytest.raises(InvalidInputError, match="patch"):
        pretrain(config(volumes, bert, "data.patch_size=[64, 64, 64]"), tmp_path / "big", progress=False)
    with pytest.raises(InvalidInputError, match="keep_checkpoints"):
        config(volumes, bert, "train.keep_checkpoints=-1")


def test_a_corpus_of_captioned_and_uncaptioned_sources_trains_and_is_recorded(
    volumes: Path, bert: Path, tmp_path: Path
) -> None:
    from fmscope.pretrain.export import package_backbone, read_corpus

    bare = tmp_path / "bare"
    bare.mkdir()
    ph = lightsheet_phantom((32, 48, 48), seed=7)
    write_image(bare / "em.tif", ph.image, ImageMetadata.for_array(ph.image))
    paths = f"data.path=[{volumes}, {bare}]"
    with pytest.raises(InvalidInputError, match="captions.json"):
        pretrain(config(volumes, bert, paths, "train.steps=2"), tmp_path / "refused", progress=False)
    cfg = config(volumes, bert, paths, "train.steps=4", "data.allow_missing_captions=true")
    result = pretrain(cfg, tmp_path / "mix", progress=False)
    rows = read_metrics(tmp_path / "mix" / "metrics.csv")
    # one uncaptioned volume of four: every batch of two holds a captioned one, so the text terms train every step
    assert all(r["clip"] > 0 or r["align"] > 0 for r in rows)
    corpus = read_corpus(result.model_dir)  # type: ignore[arg-type]
    assert corpus is not None and [c["captioned"] for c in corpus] == [True, True, True, False]
    shipped = package_backbone(result.model_dir, tmp_path / "ship", data_root=tmp_path)  # type: ignore[arg-type]
    assert sorted(p.name for p in shipped.iterdir()) == ["config.json", "corpus.json", "model.safetensors"]
    assert read_corpus(shipped)[-1]["path"] == "bare/em.tif"  # type: ignore[index]
    assert load_model(shipped).config == get_config("unet-tiny")
    only_bare = config(bare, bert, "train.steps=1", "data.allow_missing_captions=true")
    with pytest.raises(InvalidInputError, match="none of the 1 volume"):
        pretrain(only_bare, tmp_path / "nocaps", progress=False)
