"""A first run that goes wrong: paths never parsed as YAML, no empty run folder left after a bad input, SIGTERM
handled like Ctrl-C (temporaries removed, checkpoints kept, one line saying how to resume), leftover run folders
without results never block a rerun."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import FINETUNE_TINY as TINY_FT
from conftest import write_pairs
from fmscope.cli.main import main, sigterm_as_interrupt
from fmscope.config import resolve_config
from fmscope.data import lightsheet_phantom
from fmscope.data.labelled import load_labelled
from fmscope.engine.run_folder import prepare_run_folder
from fmscope.errors import Interrupted, OutputExistsError, Terminated
from fmscope.io import ImageMetadata, write_image
from fmscope.pretrain.config import PretrainConfig
from fmscope.tasks.config import FinetuneConfig
from fmscope.tasks.finetune import finetune
from fmscope.utils.atomic import atomic_output

finetune_module = sys.modules[finetune.__module__]  # the package re-exports the function under the module's name

TINY = [
    "--config", "image-only",
    "method.model=unet-tiny", "data.patch_size=[32, 32, 32]", "data.patches_per_volume=1", "data.min_foreground=0",
    "method.n_prototypes=8", "method.head_hidden=8", "method.embed_dim=8", "train.checkpoint_every=1",
]  # fmt: skip


def volumes(folder: Path) -> Path:
    folder.mkdir(parents=True)
    ph = lightsheet_phantom((32, 40, 40), seed=0)
    write_image(folder / "v0.tif", ph.image, ImageMetadata.for_array(ph.image))
    return folder


def test_values_are_never_parsed_as_yaml() -> None:
    cfg = resolve_config(PretrainConfig, None, ["train.steps=5"], {"data.path": "my data #2"})
    assert (cfg.data.path, cfg.train.steps) == ("my data #2", 5)
    assert resolve_config(PretrainConfig, None, None, {"data.path": "run: 1"}).data.path == "run: 1"


def test_pretrain_data_path_with_hash_and_colon(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = volumes(tmp_path / "my data #2")
    out = tmp_path / "runs" / "first"  # a missing parent is created
    assert main(["pretrain", "--data", str(data), "--out", str(out), *TINY, "train.steps=1"]) == 0
    assert (out / "model").is_dir()
    capsys.readouterr()
    missing = tmp_path / "run: 1"
    assert main(["pretrain", "--data", str(missing), "--out", str(tmp_path / "bad"), *TINY]) == 1
    err = capsys.readouterr().err
    assert "run: 1" in err and "does not exist" in err and "internal error" not in err
    assert not (tmp_path / "bad").exists()  # a bad input leaves no empty run folder behind


def test_leftover_run_folder_does_not_block_but_other_folders_do(tmp_path: Path) -> None:
    left = tmp_path / "left"
    (left / "tensorboard").mkdir(parents=True)
    (left / "config.yaml").write_text("seed: 0\n")
    (left / "metrics.csv").write_text("step\n")
    prepare_run_folder(left, overwrite=False, results=("model",))
    assert left.is_dir() and not any(left.iterdir())
    done = tmp_path / "done"
    (done / "model").mkdir(parents=True)
    (done / "model" / "config.json").write_text("{}")
    (done / "config.yaml").write_text("seed: 0\n")
    with pytest.raises(OutputExistsError, match="--overwrite"):
        prepare_run_folder(done, overwrite=False, results=("model",))
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("not a run")
    with pytest.raises(OutputExistsError):
        prepare_run_folder(mine, overwrite=False, results=("model",))
    assert (mine / "notes.txt").is_file()


def test_interrupted_finetune_says_what_was_kept_and_reruns(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    train = load_labelled(write_pairs(tmp_path / "train", [0]), "segment")
    val = load_labelled(write_pairs(tmp_path / "val", [1]), "segment")
    config = FinetuneConfig(task="segment", **{**TINY_FT, "epochs": 3, "freeze_epochs": 0})  # type: ignore[arg-type]
    calls = {"n": 0}
    real = finetune_module.validate

    def stop_at_second(*args: object, **kwargs: object) -> dict[str, float]:
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(finetune_module, "validate", stop_at_second)
    with pytest.raises(Interrupted, match=r"best model so far \(epoch 0\)"):
        finetune(config, train, val, tmp_path / "run")
    assert (tmp_path / "run" / "model" / "config.json").is_file()  # the best model is kept
    calls["n"] = 1
    with pytest.raises(Interrupted, match="no model was saved yet"):
        finetune(config, train, val, tmp_path / "run2")
    assert not (tmp_path / "run2").exists()
    monkeypatch.setattr(finetune_module, "validate", real)
    result = finetune(config, train, val, tmp_path / "run2")  # nothing blocks the rerun
    assert result.epochs_run == 3
    assert "start random, as intended" in result.init_report or result.init_report == "random weights (scratch)"


def test_sigterm_unwinds_like_ctrl_c_and_removes_temporaries(tmp_path: Path) -> None:
    target = tmp_path / "out.tif"
    with pytest.raises(Terminated), sigterm_as_interrupt(), atomic_output(target) as tmp:
        tmp.write_bytes(b"partial")
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)
    assert list(tmp_path.iterdir()) == []
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL or callable(signal.getsignal(signal.SIGTERM))


def test_sigterm_in_pretraining_keeps_checkpoints_and_says_how_to_resume(tmp_path: Path) -> None:
    data = volumes(tmp_path / "vols")
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "fmscope.cli.main", "pretrain", "--data", str(data), "--out", str(out), *TINY,
           "train.steps=100000"]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not (out / "checkpoints" / "latest").is_file() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err
    assert "terminated (SIGTERM); resume with --resume (from step" in err
    assert list((out / "checkpoints").glob("step_*.pt"))
    assert not [p for p in out.rglob("*") if ".tmp-" in p.name]
    step = int(err.split("(from step ")[1].split(",")[0])
    resumed = main(["pretrain", "--data", str(data), "--out", str(out), "--resume", *TINY, f"train.steps={step + 1}"])
    assert resumed == 0 and np.isfinite(step)
