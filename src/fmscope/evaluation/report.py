"""Report of a cross-validated benchmark: fold aggregates, Markdown tables, train-size sweeps and example overlays.

Input: the result rows of a run (one per method, datatype, train size and fold, as in ``results.csv``), with numbers or
numeric strings (:class:`csv.DictReader`); ``""``, ``None`` or ``"nan"`` is missing. Untrained baselines
(``train_size == 0``, e.g. Otsu) are shown as constants: the same cell in every size column, a dashed line in plots.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fmscope.errors import InvalidInputError
from fmscope.evaluation.figures import save_overlay
from fmscope.tasks.registry import get_task, task_names
from fmscope.utils.atomic import atomic_output
from fmscope.utils.plotting import PALETTE, pyplot, save_figure

logger = logging.getLogger(__name__)


_TWO_DECIMALS = frozenset({"psnr", "count_ratio"})
_REQUIRED = ("method", "datatype", "task", "train_size")
_MISSING = "–"
_MARKERS = ("o", "s", "^", "D", "v", "P", "X")


@dataclass(frozen=True)
class _Row:
    task: str
    datatype: str
    method: str
    train_size: int
    ok: bool
    note: str
    values: dict[str, float]


def _number(value: Any, what: str) -> float:
    """A float from a number or numeric string; NaN for ``None``, ``""`` or ``"nan"``."""
    if value is None or (isinstance(value, str) and value.strip().lower() in ("", "nan", "none")):
        return math.nan
    try:
        return float(value)
    except (TypeError, ValueError):
        raise InvalidInputError(f"rows: {what} must be a number, got {value!r}") from None


def _parse(rows: Sequence[Mapping[str, Any]]) -> list[_Row]:
    """Validate and normalise the result rows (all of them, skipped ones included)."""
    if isinstance(rows, Mapping | str):
        raise InvalidInputError(f"rows: expected a sequence of row mappings, got {type(rows).__name__}")
    parsed = []
    for i, row in enumerate(rows):
        if not isinstance(row, Mapping):
            raise InvalidInputError(f"rows[{i}]: expected a mapping, got {type(row).__name__}")
        for key in _REQUIRED:
            if row.get(key) is None or str(row.get(key)).strip() == "":
                raise InvalidInputError(f"rows[{i}]: missing required key '{key}' (rows need {', '.join(_REQUIRED)})")
        task = str(row["task"]).strip()
        if task not in task_names():
            raise InvalidInputError(f"task: unknown task {task!r} in rows[{i}]; expected one of {sorted(task_names())}")
        size = _number(row["train_size"], f"rows[{i}]['train_size']")
        if not math.isfinite(size) or size < 0 or size != int(size):
            raise InvalidInputError(f"rows[{i}]: 'train_size' must be an integer >= 0, got {row['train_size']!r}")
        ok = str(row.get("status") or "ok").strip().lower() == "ok"
        values = {m: _number(row.get(m), f"rows[{i}]['{m}']") for m in get_task(task).metrics}
        name, datatype, note = str(row["method"]).strip(), str(row["datatype"]).strip(), str(row.get("note") or "")
        parsed.append(_Row(task, datatype, name, int(size), ok, note.strip(), values))
    return parsed


def _first_seen(items: Sequence[str]) -> list[str]:
    return list(dict.fromkeys(items))


def _aggregate(parsed: Sequence[_Row]) -> list[dict[str, Any]]:
    tasks = _first_seen([r.task for r in parsed])
    datatypes = _first_seen([r.datatype for r in parsed])
    methods = _first_seen([r.method for r in parsed])
    groups: dict[tuple[str, str, str, int], list[_Row]] = {}
    for r in parsed:
        if r.ok:
            groups.setdefault((r.task, r.datatype, r.method, r.train_size), []).append(r)
    out = []
    for key in sorted(groups, key=lambda k: (tasks.index(k[0]), datatypes.index(k[1]), methods.index(k[2]), k[3])):
        members = groups[key]
        entry: dict[str, Any] = dict(zip(("task", "datatype", "method", "train_size"), key, strict=True))
        entry["n_folds"] = len(members)
        for metric in get_task(key[0]).metrics:
            vals = np.array([r.values[metric] for r in members], dtype=np.float64)
            vals = vals[np.isfinite(vals)]
            mean = float(vals.mean()) if vals.size else math.nan
            std = (float(vals.std(ddof=1)) if vals.size >= 2 else 0.0) if vals.size else math.nan
            entry[f"{metric}_mean"], entry[f"{metric}_std"] = mean, std
        out.append(entry)
    return out


def aggregate(rows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Mean and spread over folds of each (task, datatype, method, train_size), from the ``status == "ok"`` rows.

    Args:
        rows: Result rows; a missing ``status`` counts as ``"ok"``, any other status is left out.

    Returns:
        One dict per group, ordered by first appearance of task, datatype and method, then by train size, with keys
        ``task, datatype, method, train_size, n_folds`` and, for each metric of the task (``Task.metrics``),
        ``f"{metric}_mean"`` and ``f"{metric}_std"``. The std is the *sample* standard deviation (``ddof=1``) over
        the folds that have the metric, 0.0 with one such fold; missing values are ignored per metric, and a metric
        missing in every fold has NaN mean and std. ``n_folds`` counts the ok rows of the group.

    Raises:
        InvalidInputError: A row lacks ``method``/``datatype``/``task``/``train_size`` or has a non-numeric value
            (names ``rows``), or has an unknown task (names ``task``).
    """
    return _aggregate(_parse(rows))


def _cell(entry: Mapping[str, Any] | None, metric: str) -> str:
    """``"mean ± std"`` of one aggregate entry, or ``"–"`` when missing."""
    if entry is None or not math.isfinite(entry[f"{metric}_mean"]):
        return _MISSING
    digits = 2 if metric in _TWO_DECIMALS else 3
    mean, std = (round(entry[f"{metric}_{k}"], digits) + 0.0 for k in ("mean", "std"))  # + 0.0: no "-0.000"
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


def _esc(text: str) -> str:
    return text.replace("|", "\\|")


def _task_section(task: str, parsed: Sequence[_Row], entries: Sequence[dict[str, Any]]) -> list[str]:
    """Markdown lines of one task: one table per main metric, methods x datatypes, cells over train sizes."""
    mine = [r for r in parsed if r.task == task]
    datatypes = _first_seen([r.datatype for r in mine])
    methods = _first_seen([r.method for r in mine])
    sizes = sorted({r.train_size for r in mine if r.train_size > 0}) or [0]
    found = {(e["datatype"], e["method"], e["train_size"]): e for e in entries if e["task"] == task}
    trained = {(d, m) for (d, m, s) in found if s > 0}
    folds = sorted({e["n_folds"] for e in found.values()})
    lines = [f"## {task}", ""]
    if not found:
        return [*lines, "No successful runs.", ""]
    n = str(folds[0]) if len(folds) == 1 else f"{folds[0]}–{folds[-1]}"
    for metric in get_task(task).table_metrics:
        header = f"cells: train sizes {' / '.join(map(str, sizes))}, mean ± std over {n} folds"
        lines += [f"### {metric}", "", header, ""]
        lines += ["| method | " + " | ".join(map(_esc, datatypes)) + " |", "|---" * (len(datatypes) + 1) + "|"]
        for method in methods:
            cells = []
            for d in datatypes:
                constant = (d, method) not in trained  # untrained baseline: its train_size 0 value in every column
                parts = [_cell(found.get((d, method, 0 if constant else s)), metric) for s in sizes]
                cells.append(" / ".join(parts))
            lines.append(f"| {_esc(method)} | " + " | ".join(cells) + " |")
        lines.append("")
    return lines


def summary_markdown(rows: Sequence[Mapping[str, Any]], *, title: str, notes: Sequence[str] = ()) -> str:
    """Markdown summary laid out like the paper's Table 1: per task and main metric a methods x datatypes table.

    Main metrics: segment ``dice, instance_f1, iou``; classify ``accuracy, macro_f1``; deblur ``ssim, psnr``. A cell
    holds ``"mean ± std"`` for each train size of the task, smallest first, joined by ``" / "``; untrained baselines
    (train size 0) repeat their value in every size; ``"–"`` marks a missing value. Three decimals, two for ``psnr``
    and ``count_ratio``. Tasks, methods and datatypes in order of first appearance. Then a "Skipped" list of the rows
    whose status is not ok (method, datatype, task, train sizes, note; deduplicated) and the notes.

    Args:
        rows: Result rows (see :func:`aggregate`).
        title: Heading of the document.
        notes: Free-text notes, written as a bullet list at the end.

    Returns:
        The Markdown text, ending with a newline.

    Raises:
        InvalidInputError: Invalid rows (see :func:`aggregate`).
    """
    parsed = _parse(rows)
    entries = _aggregate(parsed)
    lines = [f"# {title}", ""]
    for task in _first_seen([r.task for r in parsed]):
        lines += _task_section(task, parsed, entries)
    skipped: dict[tuple[str, str, str, str], list[int]] = {}
    for r in parsed:
        if not r.ok:
            sizes = skipped.setdefault((r.method, r.datatype, r.task, r.note), [])
            sizes += [] if r.train_size in sizes else [r.train_size]
    lines += ["## Skipped", ""]
    for (method, datatype, task, note), sizes in skipped.items():
        where = f"{task}, train size{'s' if len(sizes) > 1 else ''} {', '.join(map(str, sorted(sizes)))}"
        lines.append(f"- {method} on {datatype} ({where}): {note or 'no reason given'}")
    lines += [] if skipped else ["None."]
    if notes:
        lines += ["", "## Notes", "", *(f"- {note}" for note in notes)]
    return "\n".join(lines).rstrip("\n") + "\n"


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_-]", "_", name) or "_"


def plot_sweeps(rows: Sequence[Mapping[str, Any]], folder: Path) -> list[Path]:
    """One PNG per (task, datatype): the main metric's mean against train size for each method, error bars = std.

    The main metric is ``dice`` (segment), ``accuracy`` (classify) or ``ssim`` (deblur); linear x axis, a marker
    per point; untrained baselines (train size 0 only) are horizontal dashed lines. A method keeps its colour across
    plots. Pairs without any value of the metric get no plot.

    Args:
        rows: Result rows (see :func:`aggregate`; invalid ones raise :class:`InvalidInputError` naming ``rows``).
        folder: Output folder, created if needed. Files ``f"{task}_{datatype}_{metric}.png"`` (names reduced to
            ``[A-Za-z0-9_-]``) are written atomically, replacing earlier ones.

    Returns:
        The written paths.
    """
    parsed = _parse(rows)
    entries = _aggregate(parsed)
    methods = _first_seen([r.method for r in parsed])
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths: list[Path] = []
    for task, datatype in dict.fromkeys((e["task"], e["datatype"]) for e in entries):
        metric = get_task(task).main_metric
        mine = [e for e in entries if (e["task"], e["datatype"]) == (task, datatype)]
        mine = [e for e in mine if math.isfinite(e[f"{metric}_mean"])]
        if not mine:
            logger.info("plot_sweeps: no %s values for %s/%s, no plot", metric, task, datatype)
            continue
        fig = _sweep_figure(mine, metric, methods, f"{datatype} – {task}")
        stem = name = f"{_safe(task)}_{_safe(datatype)}_{metric}"
        while folder / f"{stem}.png" in paths:  # two names that sanitise alike
            stem = f"{name}-{len(paths)}"
        paths.append(save_figure(fig, folder / f"{stem}.png"))
    logger.info("plot_sweeps: wrote %d plot(s) to %s", len(paths), folder)
    return paths


def _sweep_figure(entries: Sequence[dict[str, Any]], metric: str, methods: Sequence[str], title: str) -> Any:
    """Figure of ``metric`` against train size, one series per method (colour and marker by index in ``methods``)."""
    fig, ax = pyplot().subplots(figsize=(5.2, 3.8))
    mean, std = f"{metric}_mean", f"{metric}_std"
    for method in _first_seen([e["method"] for e in entries]):
        idx = methods.index(method)
        colour = PALETTE[idx % len(PALETTE)]
        points = [e for e in entries if e["method"] == method]
        trained = [e for e in points if e["train_size"] > 0]
        if trained:
            x, y, err = ([e[k] for e in trained] for k in ("train_size", mean, std))
            marker = _MARKERS[idx % len(_MARKERS)]
            ax.errorbar(x, y, yerr=err, color=colour, marker=marker, capsize=3, label=method)
        else:  # untrained baseline: a constant, its std as a faint band
            base = points[0]
            ax.axhline(base[mean], color=colour, linestyle="--", label=f"{method} (untrained)")
            ax.axhspan(base[mean] - base[std], base[mean] + base[std], color=colour, alpha=0.12, linewidth=0)
    sizes = sorted({e["train_size"] for e in entries if e["train_size"] > 0})
    if sizes:
        ax.set_xticks(sizes)
    ax.set(xlabel="train size (labelled units)", ylabel=f"{metric} (mean ± std over folds)")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return fig


def _example_masks(datatype: str, example: Mapping[str, np.ndarray]) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Validated image and ``{"ground truth": truth, method: mask, ...}`` of one example."""
    for key in ("image", "truth"):
        if key not in example:
            raise InvalidInputError(f"examples[{datatype!r}]: missing key '{key}' (need 'image', 'truth', methods)")
    image = np.asarray(example["image"])
    if image.ndim != 2:
        raise InvalidInputError(f"examples[{datatype!r}]['image']: expected a 2D array, got shape {image.shape}")
    masks = {"ground truth": np.asarray(example["truth"])}
    masks.update({k: np.asarray(v) for k, v in example.items() if k not in ("image", "truth")})
    for name, mask in masks.items():
        if mask.shape != image.shape:
            raise InvalidInputError(f"examples[{datatype!r}]: '{name}' has shape {mask.shape}, image {image.shape}")
    return image, masks


def write_report(
    folder: Path,
    rows: Sequence[Mapping[str, Any]],
    *,
    title: str,
    notes: Sequence[str] = (),
    examples: Mapping[str, Mapping[str, np.ndarray]] | None = None,
) -> dict[str, Path]:
    """Write the whole report into ``folder``: ``summary.md``, ``plots/`` and ``examples/``.

    ``summary.md`` is :func:`summary_markdown` followed by sections linking the plots and examples; it and every PNG
    are written atomically, replacing earlier ones. Everything is validated before anything is written.

    Args:
        folder: Output folder, created if needed.
        rows: Result rows (see :func:`aggregate`).
        title: Heading of the summary.
        notes: Notes for the summary.
        examples: ``{datatype: {"image": 2D array, "truth": 2D mask or labels, method: 2D mask or labels, ...}}``;
            each becomes ``examples/{datatype}.png``, the image with ground truth and each method outlined.

    Returns:
        ``{"summary": summary.md, "plots": plots folder, "examples": examples folder}`` (folders always created).

    Raises:
        InvalidInputError: Invalid rows (names ``rows`` or ``task``); an example lacking ``image``/``truth``, not 2D,
            or with masks of another shape (names ``examples``).
    """
    folder = Path(folder)
    checked = {str(d): _example_masks(str(d), ex) for d, ex in (examples or {}).items()}  # fail before writing
    text = summary_markdown(rows, title=title, notes=notes)
    folder.mkdir(parents=True, exist_ok=True)
    plots = plot_sweeps(rows, folder / "plots")
    if plots:
        text += "\n## Figures\n\n" + "".join(f"![{p.stem}](plots/{p.name})\n" for p in plots)
    example_dir = folder / "examples"
    example_dir.mkdir(exist_ok=True)
    written = [save_overlay(example_dir / f"{_safe(d)}.png", im, masks, title=d) for d, (im, masks) in checked.items()]
    if written:
        text += "\n## Examples\n\n" + "".join(f"![{p.stem}](examples/{p.name})\n" for p in written)
    summary = folder / "summary.md"
    with atomic_output(summary, overwrite=True) as tmp:
        tmp.write_text(text, encoding="utf-8")
    logger.info("write_report: wrote %s (%d plots, %d examples)", summary, len(plots), len(checked))
    return {"summary": summary, "plots": folder / "plots", "examples": example_dir}
