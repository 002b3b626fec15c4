"""Fine-tuning resumes exactly: a run killed with SIGKILL and resumed with ``--resume`` ends with the weights and
metrics of the uninterrupted run; a resume of another run, a corrupt newest checkpoint and a missing one are handled."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from conftest import write_pairs
from fmscope.cli.main import main
from fmscope.engine.trainer import LoopConfig, Trainer
from fmscope.errors import InvalidInputError

SETTINGS = ["model=unet-tiny", "epochs=6", "steps_per_epoch=3", "batch_size=2", "augment=true", "patience=20"]


def _finetune(*args: str | Path) -> subprocess.Popen[bytes]:
    command = [sys.executable, "-m", "fmscope.cli.main", "finetune", "seg", *map(str, args)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _digest(folder: Path) -> str:
    return hashlib.sha256((folder / "model" / "model.safetensors").read_bytes()).hexdigest()


def _metrics(folder: Path) -> list[str]:
    """metrics.csv without the wall-clock column."""
    lines = (folder / "metrics.csv").read_text().splitlines()
    seconds = lines[0].split(",").index("seconds")
    return [",".join(v for i, v in enumerate(line.split(",")) if i != seconds) for line in lines]


@pytest.mark.slow
def test_kill_9_then_resume_equals_the_uninterrupted_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    train, val = write_pairs(tmp_path / "train", [0]), write_pairs(tmp_path / "val", [1])
    data = ["--train", train, "--val", val]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the killed run's process (OMP_NUM_THREADS=1): the same float reductions
    try:
        assert main(["finetune", "seg", *map(str, data), "--out", str(tmp_path / "whole"), *SETTINGS]) == 0
    finally:
        torch.set_num_threads(threads)

    killed = _finetune(*data, "--out", tmp_path / "killed", *SETTINGS)
    latest = tmp_path / "killed" / "checkpoints" / "latest"
    deadline = time.monotonic() + 600
    while not (latest.is_file() and latest.read_text().strip() >= "step_00000006.pt") and killed.poll() is None:
        assert time.monotonic() < deadline, "no checkpoint within 10 minutes"
        time.sleep(0.02)
    killed.send_signal(signal.SIGKILL)
    assert killed.wait(timeout=60) == -signal.SIGKILL, "the run ended before it could be killed"
    resumed = _finetune(*data, "--out", tmp_path / "killed", "--resume", *SETTINGS)
    out, err = resumed.communicate(timeout=600)
    assert resumed.returncode == 0, err.decode()[-2000:]
    assert "fine-tuned segment for 6 epochs" in out.decode()
    assert _digest(tmp_path / "killed") == _digest(tmp_path / "whole")
    assert _metrics(tmp_path / "killed") == _metrics(tmp_path / "whole")

    # another setting: refused, naming what differs; a missing checkpoint: refused (in this process: no start-up)
    assert main(["finetune", "seg", *map(str, data), "--out", str(tmp_path / "killed"), "--resume", *SETTINGS,
                 "lr=0.001"]) != 0  # fmt: skip
    assert "lr: checkpoint 0.0003, now 0.001" in capsys.readouterr().err
    assert main(["finetune", "seg", *map(str, data), "--out", str(tmp_path / "none"), "--resume", *SETTINGS]) != 0
    assert "no checkpoint found" in capsys.readouterr().err


def _tiny_trainer(folder: Path, signature: dict[str, str]) -> tuple[Trainer, torch.nn.Linear]:
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 1)
    optimiser = torch.optim.SGD(model.parameters(), lr=0.1)
    return Trainer(model, optimiser, LoopConfig(steps=6, checkpoint_every=1, keep_last=3), folder=folder,
                   signature=signature), model  # fmt: skip


def _loss(model: torch.nn.Linear) -> tuple[torch.Tensor, dict[str, float]]:
    x = torch.randn(4, 3)
    return ((model(x) - x.sum(dim=1, keepdim=True)) ** 2).mean(), {}


def test_a_corrupt_newest_checkpoint_falls_back_to_the_previous_one(tmp_path: Path) -> None:
    trainer, model = _tiny_trainer(tmp_path, {"task": "t"})
    trainer.fit(lambda step: _loss(model), stop_after=4)
    (tmp_path / "step_00000004.pt").write_bytes(b"not a checkpoint")
    again, model2 = _tiny_trainer(tmp_path, {"task": "t"})
    assert again.resume() == 3
    with pytest.raises(InvalidInputError, match=r"task: checkpoint 't', now 'other'"):
        _tiny_trainer(tmp_path, {"task": "other"})[0].resume()
    for name in ("step_00000001.pt", "step_00000002.pt", "step_00000003.pt"):
        (tmp_path / name).write_bytes(b"")
    with pytest.raises(InvalidInputError, match="no readable checkpoint"):
        _tiny_trainer(tmp_path, {"task": "t"})[0].resume()


def test_engine_resume_is_exact(tmp_path: Path) -> None:
    whole, model = _tiny_trainer(tmp_path / "a", {})
    whole.fit(lambda step: _loss(model))
    part, model_b = _tiny_trainer(tmp_path / "b", {})
    part.fit(lambda step: _loss(model_b), stop_after=2)
    rest, model_c = _tiny_trainer(tmp_path / "b", {})
    assert rest.resume() == 2
    rest.fit(lambda step: _loss(model_c))
    torch.testing.assert_close(model_c.state_dict(), model.state_dict(), rtol=0, atol=0)
