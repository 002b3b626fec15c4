"""Metric logs: one CSV row per logged step (every loss term, learning rate, temperature...), TensorBoard if present.

On resume the CSV is truncated to the rows before the resumed step, so a resumed run's log is the same as an
uninterrupted one's.
"""

from __future__ import annotations

import csv
import logging
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)


class MetricLogger:
    """Append metric rows to ``folder/metrics.csv`` (and TensorBoard event files when tensorboard is installed)."""

    def __init__(self, folder: Path, *, resume_step: int | None = None, tensorboard: bool = True) -> None:
        self.path = folder / "metrics.csv"
        self.fields: list[str] | None = None
        if resume_step is not None and self.path.exists():
            with self.path.open(newline="") as f:
                rows = [r for r in csv.DictReader(f) if int(r["step"]) < resume_step]
            if rows:
                self.fields = list(rows[0].keys())
            with self.path.open("w", newline="") as f:
                if self.fields:
                    writer = csv.DictWriter(f, fieldnames=self.fields)
                    writer.writeheader()
                    writer.writerows(rows)
        elif self.path.exists():
            self.path.unlink()
        self.writer: Any = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.writer = SummaryWriter(str(folder / "tensorboard"), purge_step=resume_step)
            except ImportError:
                logger.debug("tensorboard not installed: CSV log only")

    def log(self, step: int, values: dict[str, float]) -> None:
        row = {"step": step, **values}
        if self.fields is None:
            self.fields = list(row.keys())
        new = not self.path.exists() or self.path.stat().st_size == 0
        with self.path.open("a", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=self.fields, extrasaction="ignore")
            if new:
                writer.writeheader()
            writer.writerow(row)
        if self.writer is not None:
            for key, value in values.items():
                self.writer.add_scalar(key, value, step)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def read_metrics(path: Path) -> list[dict[str, float]]:
    """Rows of a metrics CSV as floats."""
    with path.open(newline="") as f:
        return [{k: float(v) for k, v in row.items()} for row in csv.DictReader(f)]
