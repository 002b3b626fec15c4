"""The quickstart folder holds what its report refers to, and no training checkpoint."""

from __future__ import annotations

import re
from pathlib import Path

from fmscope.evaluation.quickstart import run_quickstart


def test_quickstart_keeps_the_exported_model_and_everything_the_report_links_but_no_checkpoint(
    tmp_path: Path,
) -> None:
    out = tmp_path / "qs"
    result = run_quickstart(out, pretrain_steps=2, finetune=False, progress=False)
    report = result.report_path.read_text()
    linked = re.findall(r"\]\(([^)]+)\)", report) + re.findall(r"`([\w/.-]+\.\w+)`", report)
    assert "pretrain/run/loss_curves.png" in linked and "run.fmscope.json" in linked
    for name in linked:
        assert (out / name).is_file(), name
    model = out / "pretrain" / "run" / "model"
    assert (model / "model.safetensors").is_file() and (model / "pretrainer.safetensors").is_file()
    assert not list(out.rglob("checkpoints")) and not list(out.rglob("*.pt"))
