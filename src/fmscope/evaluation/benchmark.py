"""The benchmark runner: every method x datatype x training size x fold, resumable, with a report at the end.

Report folder layout::

    REPORT/config.yaml        the resolved config (budget and overrides applied)
    REPORT/run.json           package versions, seeds, data root, start time
    REPORT/splits.json        the held-out test units and the folds of every datatype (reused when present)
    REPORT/units/NAME/        the units of each datatype (see :mod:`fmscope.evaluation.units`)
    REPORT/pretrained/NAME/   models pretrained for ``init: pretrain:NAME`` methods (resumed when interrupted)
    REPORT/results/NAME/METHOD/nSIZE_fFOLD.json   one finished job each: a rerun skips it unless the settings it
                              depends on changed (its ``signature``)
    REPORT/results.csv        one row per method x datatype x train size x fold
    REPORT/summary.md, plots/, examples/           see :mod:`fmscope.evaluation.report`
"""

from __future__ import annotations

import csv
import functools
import hashlib
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from fmscope.config import config_path, resolve_config, save_config, to_dict
from fmscope.errors import FmscopeError, InvalidInputError
from fmscope.evaluation.bench_config import BenchmarkConfig, DatatypeConfig, MethodSpec
from fmscope.evaluation.leakage import check_corpus, held_out_digests
from fmscope.evaluation.methods import METHODS, Job, load_units, run_method, score, unavailable
from fmscope.evaluation.protocol import Split, fold_sets, load_or_plan
from fmscope.evaluation.report import write_report
from fmscope.evaluation.units import Unit, class_names, prepare_units
from fmscope.tasks.registry import get_task, task_names
from fmscope.utils.atomic import atomic_output
from fmscope.utils.progress import ProgressCallback, make_progress
from fmscope.utils.provenance import package_versions

logger = logging.getLogger(__name__)

BASE_COLUMNS = (
    "method",
    "datatype",
    "task",
    "train_size",
    "fold",
    "n_train",
    "n_val",
    "n_test",
    "status",
    "note",
    "seconds",
    "val_score",  # a fine-tuning's best validation score (its task's main metric, on the fold's validation units)
    "best_epoch",
)


def columns() -> tuple[str, ...]:
    """The columns of ``results.csv``: the job's identity and status, then every registered task's metrics."""
    metrics = (m for name in task_names() for m in get_task(name).metrics)
    return (*BASE_COLUMNS, *dict.fromkeys(metrics))


@dataclass(frozen=True)
class BenchmarkResult:
    """The rows of ``results.csv`` and the report files."""

    rows: list[dict[str, Any]]
    files: dict[str, Path]


def _pretrained(
    config: BenchmarkConfig, root: Path, out: Path, held_out: Callable[[], dict[str, str]]
) -> dict[str, str]:
    """Model folders of ``init`` values: existing folders (or shipped names) as given, ``pretrain:NAME`` trained (or
    resumed) here; a missing folder maps to ``''`` (its method becomes a skipped row). A pretraining corpus that holds
    a test unit (``held_out()``: digests of the test sets) is refused before anything trains."""
    from fmscope.data import load_corpus
    from fmscope.data.digest import corpus_record
    from fmscope.models.shipped import resolve_model_dir
    from fmscope.pretrain.config import PretrainConfig
    from fmscope.pretrain.export import read_corpus
    from fmscope.pretrain.train import pretrain

    inits: dict[str, str] = {}
    for method in config.methods:
        init = method.init
        if not METHODS[method.kind].fine_tunes or init in inits or init == "scratch":
            continue
        if not init.startswith("pretrain:"):
            folder = resolve_model_dir(init, must_exist=False)
            if folder is not None:
                check_corpus(read_corpus(folder), held_out(), f"methods[{method.name}].init '{init}'")
            inits[init] = str(folder) if folder is not None else ""
            continue
        name = init.split(":", 1)[1]
        spec = config.pretrain[name]
        folder = out / "pretrained" / name
        signature = _signature(to_dict(spec), str(root))
        path = config_path(spec.config, option=f"pretrain.{name}.config")
        pre = resolve_config(PretrainConfig, path, list(spec.overrides), {"data.path": str(root / spec.data)})
        same = (folder / "spec.json").is_file() and json.loads((folder / "spec.json").read_text()) == signature
        done = same and (folder / "model").is_dir()
        record = read_corpus(folder / "model") if done else None
        if record is None:  # not trained yet (or before corpora were recorded): hash the corpus before training
            corpus = load_corpus(pre.data.path, allow_missing_captions=pre.data.allow_missing_captions)
            record = corpus_record(corpus)
        check_corpus(record, held_out(), f"pretrain.{name}")
        if not done:
            resume = same and (folder / "checkpoints").is_dir()  # interrupted with the same settings: go on
            logger.info("pretraining %s (%s) into '%s'%s", name, spec.config, folder, " (resumed)" if resume else "")
            pretrain(pre, folder, resume=resume, overwrite=not resume, progress=True)
            _write_json(folder / "spec.json", signature)
        inits[init] = str(folder / "model")
    return inits


def _job_path(out: Path, datatype: str, method: str, size: int, fold: int) -> Path:
    return out / "results" / datatype / method / f"n{size:03d}_f{fold}.json"


def _signature(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _job_signature(config: BenchmarkConfig, dt: DatatypeConfig, method: MethodSpec) -> str:
    """What a finished job's result depends on (besides its size, fold and the splits file): a finished job whose
    signature differs from the current config's is recomputed on resume."""
    protocol = {k: v for k, v in to_dict(config.protocol).items() if k != "train_sizes"}
    pretrain = config.pretrain.get(method.init.split(":", 1)[-1]) if method.init.startswith("pretrain:") else None
    finetune = config.finetune if METHODS[method.kind].fine_tunes else {}
    return _signature(to_dict(dt), to_dict(method), finetune, protocol, to_dict(pretrain) if pretrain else None)


def _finished(path: Path, signature: str) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    row: dict[str, Any] = json.loads(path.read_text())
    return row if row.get("signature") == signature else None


def _write_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_output(path, overwrite=True) as tmp:
        tmp.write_text(json.dumps(data, indent=1))


def _write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    with atomic_output(path, overwrite=True) as tmp, tmp.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns(), extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)


def _example(test: list[Any]) -> tuple[int, tuple[int, ...] | tuple[()]]:
    """The segmentation test sample with the most structure, and (3D) its Z slice with the most structure."""
    i = int(np.argmax([np.count_nonzero(s.label) for s in test]))
    label = test[i].label
    if label.ndim == 3:
        return i, (int(np.argmax(np.count_nonzero(label.reshape(label.shape[0], -1), axis=1))),)
    return i, ()


def _plan(config: BenchmarkConfig, splits: dict[str, Split], inits: dict[str, str]) -> list[tuple[Any, ...]]:
    jobs: list[tuple[Any, ...]] = []
    for dt in config.datatypes:
        for method in (m for m in config.methods if m.applies_to(dt.task)):
            if not METHODS[method.kind].trained or unavailable(method, inits):
                jobs.append((dt, method, 0, 0))
                continue
            jobs.extend(
                (dt, method, size, fold)
                for size in dt.train_sizes or config.protocol.train_sizes
                for fold in range(len(splits[dt.name].folds))
            )
    return jobs


def run_benchmark(
    config: BenchmarkConfig,
    data_root: str | Path,
    out: str | Path,
    *,
    progress: ProgressCallback | bool | None = True,
    log: Callable[[str], None] | None = None,
) -> BenchmarkResult:
    """Run (or resume) the benchmark into ``out`` and write its report; see the module doc for the layout."""
    root, out = Path(data_root), Path(out)
    if not root.is_dir():
        raise InvalidInputError(f"data_root: '{root}' is not a folder (set data_root=... or FMSCOPE_DATA)")
    out.mkdir(parents=True, exist_ok=True)
    say = log or logger.info
    save_config(config, out / "config.yaml")
    _write_json(
        out / "run.json",
        {
            "started": datetime.now(UTC).isoformat(timespec="seconds"),
            "data_root": str(root),
            "seed": config.protocol.seed,
            "fold_seeds": [config.protocol.seed * 100 + f for f in range(config.protocol.folds)],
            "versions": package_versions(),
        },
    )
    units = {dt.name: prepare_units(dt, root, out / "units" / dt.name) for dt in config.datatypes}
    splits = load_or_plan(out / "splits.json", units, config.datatypes, config.protocol)
    for dt in config.datatypes:  # every size fits every fold: fail now, not after hours of training
        class_of = {u.id: u.class_name for u in units[dt.name]}
        for size in dt.train_sizes or config.protocol.train_sizes:
            for fold in range(len(splits[dt.name].folds)):
                fold_sets(splits[dt.name], fold, size, config.protocol, class_of, dt.name)
    held_out = functools.cache(lambda: held_out_digests(config.datatypes, root, units, splits))
    inits = _pretrained(config, root, out, held_out)
    jobs = _plan(config, splits, inits)
    by_id = {name: {u.id: u for u in us} for name, us in units.items()}
    cache: dict[str, Any] = {}
    rows: list[dict[str, Any]] = []
    timed: dict[str, list[float]] = {}  # method -> seconds of the jobs computed in this run
    finished = [
        _finished(_job_path(out, dt.name, method.name, size, fold), _job_signature(config, dt, method))
        for dt, method, size, fold in jobs
    ]
    with make_progress(progress, len(jobs), "benchmark") as advance:
        for index, ((dt, method, size, fold), done) in enumerate(zip(jobs, finished, strict=True)):
            path = _job_path(out, dt.name, method.name, size, fold)
            signature = _job_signature(config, dt, method)
            if done is not None:
                rows.append(done)
                advance(1)
                continue
            t0 = time.perf_counter()
            try:
                row = _run_job(
                    config, dt, method, size, fold, splits[dt.name], units[dt.name], by_id[dt.name], inits, out, cache
                )
            except FmscopeError as exc:  # a method that cannot run on this draw: recorded, the others go on
                row = {
                    "method": method.name,
                    "datatype": dt.name,
                    "task": dt.task,
                    "train_size": size,
                    "fold": fold,
                    "status": "failed",
                    "note": f"{type(exc).__name__}: {exc}",
                }
                logger.warning("%s %s n=%d fold=%d failed: %s", dt.name, method.name, size, fold, exc)
            row["seconds"] = round(time.perf_counter() - t0, 2)
            row["signature"] = signature
            _write_json(path, row)
            rows.append(row)
            timed.setdefault(method.name, []).append(row["seconds"])
            later = zip(jobs[index + 1 :], finished[index + 1 :], strict=True)
            left = [m.name for (_, m, _, _), d in later if d is None]
            metric = get_task(dt.task).main_metric
            shown = f"{metric}={row[metric]:.3f}" if metric in row else row["status"]
            say(
                f"[{index + 1}/{len(jobs)}] {dt.name} {method.name} n={size} fold={fold}: "
                f"{shown} ({row['seconds']:.0f} s); "
                f"{time_left(timed, left)}"
            )
            advance(1)
    _write_csv(out / "results.csv", rows)
    notes = [n for s in splits.values() for n in s.notes]
    files = write_report(out, rows, title=config.title, notes=notes, examples=_examples(out, config) or None)
    return BenchmarkResult(rows, {"results": out / "results.csv", **files})


def time_left(timed: dict[str, list[float]], pending: list[str]) -> str:
    """The time left, from each method's own mean job time (a fast baseline says nothing of a fine-tuning); methods
    not timed yet make it a lower bound, and say so."""
    if not pending:
        return "done"
    known = sum(float(np.mean(timed[m])) for m in pending if m in timed)
    untimed = sorted({m for m in pending if m not in timed})
    if not untimed:
        return f"about {known / 60:.1f} min left"
    return f"at least {known / 60:.1f} min left ({len(untimed)} method(s) not timed yet: {', '.join(untimed[:3])})"


def _run_job(
    config: BenchmarkConfig,
    dt: DatatypeConfig,
    method: MethodSpec,
    size: int,
    fold: int,
    split: Split,
    units: list[Unit],
    by_id: dict[str, Unit],
    inits: dict[str, str],
    out: Path,
    cache: dict[str, Any],
) -> dict[str, Any]:
    classes = class_names(units, dt)
    test_units = [by_id[i] for i in split.test]
    row: dict[str, Any] = {
        "method": method.name,
        "datatype": dt.name,
        "task": dt.task,
        "train_size": size,
        "fold": fold,
        "n_test": len(test_units),
        "status": "ok",
        "note": "",
    }
    reason = unavailable(method, inits)
    if reason:
        return {**row, "status": "skipped", "note": reason, "n_train": 0, "n_val": 0}
    if dt.name not in cache:
        cache[dt.name] = load_units(test_units, dt, classes, seed=10_000)
    test = cache[dt.name]
    if size:
        class_of = {u.id: u.class_name for u in units}
        train_ids, val_ids = fold_sets(split, fold, size, config.protocol, class_of, dt.name)
    else:
        train_ids, val_ids = [], []
    train, val = [by_id[i] for i in train_ids], [by_id[i] for i in val_ids]
    distinct_val = [u for u in val if u.id not in train_ids]
    kind = METHODS[method.kind]
    samples = load_units(train + distinct_val, dt, classes) if kind.needs_samples else []
    seed = config.protocol.seed * 100 + fold
    workdir = out / "work" / dt.name / method.name / f"n{size:03d}_f{fold}"
    job = Job(
        dt,
        method,
        classes,
        train,
        val,
        seed,
        workdir,
        dict(config.finetune),
        inits.get(method.init, "scratch"),
        config.keep_models,
    )
    predictions = run_method(job, samples, test)
    scores = score(dt, classes, test_units, test, predictions, own_instances=kind.own_instances)
    row.update(n_train=len(train), n_val=len(distinct_val), **job.report, **scores)
    largest = size == max(dt.train_sizes or config.protocol.train_sizes) or size == 0
    if config.examples and get_task(dt.task).label_output and fold == 0 and largest:
        i, z = _example(test)
        path = _job_path(out, dt.name, method.name, size, fold).with_name("example.npz")
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(
            path, image=test[i].image[z], truth=test[i].label[z], prediction=np.asarray(predictions[i])[z]
        )
    return row


def _examples(out: Path, config: BenchmarkConfig) -> dict[str, dict[str, np.ndarray]]:
    """Overlay panels per datatype from the saved ``example.npz`` of each method (fold 0, largest size)."""
    examples: dict[str, dict[str, np.ndarray]] = {}
    for dt in config.datatypes:
        for method in config.methods:
            path = out / "results" / dt.name / method.name / "example.npz"
            if path.is_file():
                with np.load(path) as saved:
                    entry = examples.setdefault(dt.name, {"image": saved["image"], "truth": saved["truth"]})
                    entry[method.name] = saved["prediction"]
    return examples
