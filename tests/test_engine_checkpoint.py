"""Checkpoint rotation: exactly the newest ``keep_last`` step files plus ``best.pt``, written atomically."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from fmscope.engine.checkpoint import (
    BEST,
    best_checkpoint,
    latest_checkpoint,
    load_checkpoint,
    save_checkpoint,
)
from fmscope.errors import InvalidInputError


def _names(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.suffix == ".pt")


def _payload(step: int) -> dict[str, torch.Tensor]:
    return {"weights": torch.full((64,), float(step))}


# (keep_last, steps marked best, expected .pt files after saving steps 1..6)
ROTATION = [
    ((1, ()), ["step_00000006.pt"]),
    ((2, ()), ["step_00000005.pt", "step_00000006.pt"]),
    ((3, ()), ["step_00000004.pt", "step_00000005.pt", "step_00000006.pt"]),
    ((0, ()), [f"step_{s:08d}.pt" for s in range(1, 7)]),
    ((1, (2,)), [BEST, "step_00000006.pt"]),
    ((1, (2, 4)), [BEST, "step_00000006.pt"]),
    ((2, (6,)), [BEST, "step_00000005.pt", "step_00000006.pt"]),
]


@pytest.mark.parametrize(("args", "expected"), ROTATION)
def test_rotation_keeps_exactly_the_last_n_plus_the_best(
    args: tuple[int, tuple[int, ...]], expected: list[str], tmp_path: Path
) -> None:
    keep_last, best_steps = args
    for step in range(1, 7):
        save_checkpoint(tmp_path, step, _payload(step), keep_last=keep_last, best=step in best_steps)
        assert len([n for n in _names(tmp_path) if n.startswith("step_")]) == (min(step, keep_last) or step)
    assert _names(tmp_path) == expected
    assert latest_checkpoint(tmp_path) == tmp_path / "step_00000006.pt"
    best = best_checkpoint(tmp_path)
    if best_steps:
        assert best == tmp_path / BEST
        loaded = load_checkpoint(best)  # type: ignore[arg-type]
        assert loaded.step == max(best_steps) and float(loaded.payload["weights"][0]) == max(best_steps)
    else:
        assert best is None
    assert not [p for p in tmp_path.iterdir() if ".tmp-" in p.name]  # nothing half-written left behind


def test_default_keeps_one_and_best_shares_the_file_while_it_is_the_newest(tmp_path: Path) -> None:
    for step in (1, 2):
        save_checkpoint(tmp_path, step, _payload(step), best=step == 2)
    assert _names(tmp_path) == [BEST, "step_00000002.pt"]
    # a hard link: no second copy on disk (where the file system has hard links, as the test machines' do)
    assert (tmp_path / BEST).stat().st_ino == (tmp_path / "step_00000002.pt").stat().st_ino
    save_checkpoint(tmp_path, 3, _payload(3))
    assert _names(tmp_path) == [BEST, "step_00000003.pt"] and load_checkpoint(tmp_path / BEST).step == 2


@pytest.mark.parametrize("bad", [-1, 1.5, True])
def test_bad_keep_last_is_refused(bad: object, tmp_path: Path) -> None:
    with pytest.raises(InvalidInputError, match="keep_last"):
        save_checkpoint(tmp_path, 1, _payload(1), keep_last=bad)  # type: ignore[arg-type]
    assert not tmp_path.joinpath("step_00000001.pt").exists()
