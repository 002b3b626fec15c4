"""The quickstart folder holds what its report refers to, and no training checkpoint; its progress names each stage."""

from __future__ import annotations

import re
from pathlib import Path

from fmscope.evaluation.quickstart import run_quickstart


def test_quickstart_keeps_the_exported_model_and_everything_the_report_links_but_no_checkpoint(
    tmp_path: Path,
) -> None:
    out = tmp_path / "qs"
    seen: list[tuple[int, int | None, str]] = []
    result = run_quickstart(out, pretrain_steps=2, finetune=False, progress=lambda d, t, m="": seen.append((d, t, m)))
    stages = [m for _, t, m in seen if m.startswith("quickstart")]
    assert stages[-1] == "quickstart: pretraining unet-cpu for 2 steps" and seen[-1][0] == seen[-1][1]
    assert any(m.startswith("pretraining: pretrain") for _, _, m in seen)  # the long step says what it is doing
    report = result.report_path.read_text()
    linked = re.findall(r"\]\(([^)]+)\)", report) + re.findall(r"`([\w/.-]+\.\w+)`", report)
    assert "pretrain/run/loss_curves.png" in linked and "run.fmscope.json" in linked
    for name in linked:
        assert (out / name).is_file(), name
    model = out / "pretrain" / "run" / "model"
    assert (model / "model.safetensors").is_file() and (model / "pretrainer.safetensors").is_file()
    assert not list(out.rglob("checkpoints")) and not list(out.rglob("*.pt"))


def test_the_default_budget_fine_tunes_from_the_shipped_backbone(tmp_path: Path) -> None:
    from dataclasses import replace

    from fmscope.evaluation.quickstart import BUDGETS

    assert BUDGETS["full"].init == "lsm-unet-cpu" and BUDGETS["full"].pretrain_steps == 0
    small = replace(BUDGETS["tiny"], model="unet-cpu", init="lsm-unet-cpu", pretrain_steps=0)
    result = run_quickstart(tmp_path / "qs", budget=small)
    report = result.report_path.read_text()
    assert "| fine-tuned from the shipped lsm-unet-cpu |" in report and "## Pretraining" not in report
    summary = (tmp_path / "qs" / "finetune" / "run_pretrained" / "summary.json").read_text()
    assert "lsm-unet-cpu" in summary
