"""The benchmark end to end on small synthetic data: every method kind, the report, resuming, bad configs, and the
shipped configs planned on the real datasets."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tifffile
import yaml
from PIL import Image

from conftest import disks
from fmscope.cli.bench_commands import benchmark_config_path, shipped_benchmarks
from fmscope.cli.main import main
from fmscope.errors import InvalidInputError
from fmscope.evaluation import benchmark as bench
from fmscope.evaluation.bench_config import load_benchmark_config
from fmscope.evaluation.protocol import fold_sets, load_or_plan
from fmscope.evaluation.units import prepare_units

TINY = {"model": "unet-tiny", "epochs": 1, "steps_per_epoch": 1, "freeze_epochs": 0, "patience": 1}


def _disks(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A (40, 48) image of three bright disks (radius 5, jittered, never touching) and their uint16 labels."""
    image, labels, _ = disks(rng, (40, 48), ((10, 10), (10, 36), (30, 22)), 5, jitter=2, background=10.0,
                             foreground=30.0, noise=2.0)  # fmt: skip
    return image, labels.astype(np.uint16)


def _data(root: Path) -> None:
    rng = np.random.default_rng(0)
    for sub in ("seg/images", "seg/labels", "cls"):
        (root / sub).mkdir(parents=True)
    for i in range(8):
        image, label = _disks(rng)
        tifffile.imwrite(root / "seg/images" / f"img{i}.tif", image)
        tifffile.imwrite(root / "seg/labels" / f"img{i}.tif", label)
    for i in range(12):  # two classes of 3D patches: a bright cube or a dark one in noise
        volume = rng.normal(10.0, 2.0, (16, 16, 16)).astype(np.float32)
        volume[4:12, 4:12, 4:12] += 20.0 if i % 2 else -8.0
        tifffile.imwrite(root / "cls" / f"{'bright' if i % 2 else 'dark'}_patch_{i}.tif", volume)


def _config(path: Path, root: Path, **extra: Any) -> Path:
    config = {
        "title": "synthetic",
        "data_root": str(root),
        "datatypes": [
            {"name": "disks", "task": "segment", "folders": ["seg"], "instances": "labels"},
            {
                "name": "disks-deblur",
                "task": "deblur",
                "folders": ["seg"],
                "degradation": {"sigma": [1.5], "noise_std": 0.5},
            },
            {
                "name": "cubes",
                "task": "classify",
                "folders": ["cls"],
                "test_size": 4,
                "train_sizes": [3, 4],
                "finetune": {"patch_size": [16, 16, 16]},
            },
        ],  # fmt: skip
        "protocol": {"folds": 2, "train_sizes": [2, 4], "test_size": 2, "seed": 0},
        "methods": [
            {"name": "otsu", "kind": "otsu"},
            {"name": "rf", "kind": "rf", "options": {"n_estimators": 5, "sigmas": [1.0, 2.0]}},
            {"name": "pca-lr", "kind": "pca-lr"},
            {"name": "resnet18", "kind": "resnet18", "options": {"epochs": 1, "batch_size": 2}},
            {"name": "blurred-input", "kind": "identity"},
            {"name": "richardson-lucy", "kind": "richardson-lucy", "options": {"iterations": 3}},
            {"name": "scratch", "kind": "finetune"},
            {"name": "pretrained", "kind": "finetune", "init": str(path.parent / "no-such-model")},
        ],
        "finetune": {**TINY, "patch_size": [32, 32]},
        "budgets": {"quick": {"protocol": {"train_sizes": [2]}}},
        **extra,
    }
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Any]:
    """One whole benchmark run on the synthetic data (the tests using it are marked slow)."""
    base = tmp_path_factory.mktemp("bench")
    _data(base / "data")
    config_path = _config(base / "bench.yaml", base / "data")
    config, root = load_benchmark_config(config_path)
    result = bench.run_benchmark(config, root, base / "report", progress=False)
    return base, config_path, result


@pytest.mark.slow
def test_every_method_datatype_size_and_fold_has_a_row(report: tuple[Path, Path, Any]) -> None:
    base, _, result = report
    with (base / "report" / "results.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == len(result.rows)
    keys = {(r["datatype"], r["method"], r["train_size"], r["fold"]) for r in rows}
    expected = {"disks": ("rf", "scratch"), "disks-deblur": ("scratch",), "cubes": ("pca-lr", "resnet18", "scratch")}
    for dt, methods in expected.items():
        sizes = ("3", "4") if dt == "cubes" else ("2", "4")
        assert {(dt, m, n, f) for m in methods for n in sizes for f in ("0", "1")} <= keys
    assert ("disks", "otsu", "0", "0") in keys and ("disks-deblur", "richardson-lucy", "0", "0") in keys
    assert not {k for k in keys if k[1] in ("otsu", "rf") and k[0] != "disks"}  # methods only run on their task
    skipped = [r for r in rows if r["status"] == "skipped"]
    assert {r["method"] for r in skipped} == {"pretrained"} and "not found" in skipped[0]["note"]
    ok = [r for r in rows if r["status"] == "ok"]
    for r in ok:
        assert int(r["n_test"]) >= 2 and float(r["seconds"]) >= 0
        for k in ("dice", "iou", "accuracy", "instance_f1", "ssim", "macro_f1"):
            if r[k]:
                assert 0.0 <= float(r[k]) <= 1.0
    tuned = [r for r in ok if r["method"] == "scratch"]  # fine-tunings record their validation score for choices
    assert tuned and all(0.0 <= float(r["val_score"]) <= 1.0 and int(r["best_epoch"]) >= 0 for r in tuned)
    assert not any(r["val_score"] for r in ok if r["method"] in ("otsu", "rf", "pca-lr"))
    otsu = next(r for r in ok if r["method"] == "otsu")
    assert float(otsu["dice"]) > 0.8 and float(otsu["instance_f1"]) > 0.5  # bright disks: Otsu finds them
    rf = [float(r["dice"]) for r in ok if r["method"] == "rf"]
    assert min(rf) > 0.7
    blurred = next(float(r["ssim"]) for r in ok if r["method"] == "blurred-input")
    assert 0.0 < blurred < 1.0


@pytest.mark.slow
def test_report_files_and_records(report: tuple[Path, Path, Any]) -> None:
    base, _, result = report
    out = base / "report"
    summary = (out / "summary.md").read_text()
    assert "| method | disks |" in summary and "richardson-lucy" in summary and "not found" in summary
    assert sorted(p.name for p in (out / "plots").glob("*.png")) == [
        "classify_cubes_accuracy.png",
        "deblur_disks-deblur_ssim.png",
        "segment_disks_dice.png",
    ]
    assert (out / "examples" / "disks.png").stat().st_size > 1000
    run = json.loads((out / "run.json").read_text())
    assert run["versions"]["torch"] and run["fold_seeds"] == [0, 1]
    assert yaml.safe_load((out / "config.yaml").read_text())["protocol"]["folds"] == 2
    splits = json.loads((out / "splits.json").read_text())
    assert set(splits) == {"disks", "disks-deblur", "cubes"} and len(splits["cubes"]["test"]) >= 4
    assert result.files["summary"] == out / "summary.md"


@pytest.mark.slow
def test_a_rerun_resumes_without_recomputing(report: tuple[Path, Path, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    base, config_path, first = report
    calls: list[str] = []
    real = bench.run_method

    def counting(job: Any, train: Any, test: Any) -> Any:
        calls.append(job.method.name)
        return real(job, train, test)

    monkeypatch.setattr(bench, "run_method", counting)
    config, root = load_benchmark_config(config_path)
    again = bench.run_benchmark(config, root, base / "report", progress=False)
    assert calls == [] and again.rows == first.rows  # every job was finished: nothing is recomputed
    (base / "report" / "results" / "disks" / "rf" / "n004_f1.json").unlink()  # as if killed during that job
    again = bench.run_benchmark(config, root, base / "report", progress=False)
    assert calls == ["rf"] and len(again.rows) == len(first.rows)
    calls.clear()  # changed fine-tuning settings: only the fine-tuned jobs are stale
    config, root = load_benchmark_config(config_path, None, ["finetune.steps_per_epoch=2"])
    bench.run_benchmark(config, root, base / "report", progress=False)
    assert set(calls) == {"scratch"} and len(calls) == 12


@pytest.mark.slow
def test_cli_runs_a_budget(report: tuple[Path, Path, Any], capsys: pytest.CaptureFixture[str]) -> None:
    base, config_path, _ = report
    out = base / "cli-report"
    keep = ["methods=[{name: otsu, kind: otsu}, {name: blurred-input, kind: identity}]"]
    assert main(["benchmark", str(config_path), "-o", str(out), "--budget", "quick", *keep]) == 0
    printed = capsys.readouterr().out
    assert "## segment" in printed and "summary:" in printed
    assert yaml.safe_load((out / "config.yaml").read_text())["budget"] == "quick"
    assert main(["benchmark", str(config_path), "-o", str(out), "--budget", "nope"]) == 1
    assert "--budget" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"methods": [{"name": "x", "kind": "magic"}]}, "kind"),
        ({"methods": []}, "methods"),
        ({"datatypes": [{"name": "a", "task": "segment"}]}, "exactly one of"),
        ({"datatypes": [{"name": "a", "task": "segment", "folders": ["seg"], "crop": [[5, 2]]}]}, "crop"),
        ({"methods": [{"name": "o", "kind": "otsu", "init": "x"}]}, "init"),
        ({"methods": [{"name": "p", "kind": "finetune", "init": "pretrain:none"}]}, "pretrain"),
        ({"protocol": {"train_sizes": [0]}}, "protocol.train_sizes"),
        # settings dicts are checked against the typed configs they feed, at load (not hours into a run)
        (
            {"finetune": {"epoch": 3}},
            r"methods\[.*\] on datatypes\[.*unknown config key\(s\): \['epoch'\]; known: .*'epochs'",
        ),
        ({"methods": [{"name": "r", "kind": "rf", "options": {"n_tree": 5}}]}, r"methods\[r\].options.*\['n_tree'\]"),
        ({"methods": [{"name": "p", "kind": "pca-lr", "options": {"components": 5}}]}, r"allowed: \['n_components'\]"),
        ({"datatypes": [{"name": "a", "task": "segment", "folders": ["seg"], "otsu": {"min_sise": 3}}]}, "min_sise"),
        ({"datatypes": [{"name": "a", "task": "denoise", "folders": ["seg"]}]}, "registered tasks"),
    ],
)
def test_bad_configs_name_the_problem(tmp_path: Path, change: dict[str, Any], match: str) -> None:
    with pytest.raises(InvalidInputError, match=match):
        load_benchmark_config(_config(tmp_path / "c.yaml", tmp_path, **change))


def test_bad_runs_name_the_problem(tmp_path: Path) -> None:
    _data(tmp_path / "data")
    config, _ = load_benchmark_config(_config(tmp_path / "c.yaml", tmp_path / "data"))
    with pytest.raises(InvalidInputError, match="data_root"):
        bench.run_benchmark(config, tmp_path / "missing", tmp_path / "r", progress=False)
    config, root = load_benchmark_config(_config(tmp_path / "c.yaml", tmp_path / "data"), None,
                                         ["protocol.train_sizes=[50]"])  # fmt: skip
    with pytest.raises(InvalidInputError, match="protocol.train_sizes"):
        bench.run_benchmark(config, root, tmp_path / "r", progress=False)
    with pytest.raises(InvalidInputError, match="config"):
        benchmark_config_path("no-such-benchmark")


def _slices(root: Path, counts: dict[str, int]) -> None:
    """An EM stack exported as PNG slices into several folders: ``FOLDER/images/slice_0000.png`` + ``labels/``."""
    rng = np.random.default_rng(1)
    for folder, n in counts.items():
        for sub in ("images", "labels"):
            (root / folder / sub).mkdir(parents=True)
        for i in range(n):
            image, label = _disks(rng)
            Image.fromarray(np.clip(image * 5, 0, 255).astype(np.uint8)).save(
                root / folder / f"images/slice_{i:04d}.png"
            )
            Image.fromarray((label > 0).astype(np.uint8) * 255).save(root / folder / f"labels/slice_{i:04d}.png")


def test_same_file_names_in_two_folders_are_distinct_units(tmp_path: Path) -> None:
    _slices(tmp_path / "em", {"train": 3, "test": 2})
    datatype = {"name": "membranes", "task": "segment", "folders": ["train", "test"], "instances": "none"}
    config, root = load_benchmark_config(
        _config(tmp_path / "c.yaml", tmp_path / "em", datatypes=[datatype], methods=[{"name": "otsu", "kind": "otsu"}])
    )
    units = prepare_units(config.datatypes[0], root, tmp_path / "units")
    ids = [f"train/images/slice_{i:04d}" for i in range(3)] + [f"test/images/slice_{i:04d}" for i in range(2)]
    assert [u.id for u in units] == ids  # every unit of the datatype named by its path, not just the clashing ones
    assert [u.source for u in units] == ids  # each file its own source volume: no two files merged into one
    assert all(Path(u.image).is_file() and Path(u.label or "").is_file() for u in units)
    assert prepare_units(config.datatypes[0], root, tmp_path / "units") == units  # units.json reused
    split = load_or_plan(tmp_path / "splits.json", {"membranes": units}, config.datatypes, config.protocol)["membranes"]
    assert sorted([*split.test, *(i for part in split.folds for i in part)]) == sorted(ids)
    by_file = {**datatype, "source": "file", "test_sources": ["test/images/slice_0001"]}
    config, root = load_benchmark_config(
        _config(tmp_path / "c.yaml", tmp_path / "em", datatypes=[by_file], methods=[{"name": "otsu", "kind": "otsu"}])
    )
    units = prepare_units(config.datatypes[0], root, tmp_path / "units-by-file")
    split = load_or_plan(tmp_path / "s2.json", {"membranes": units}, config.datatypes, config.protocol)["membranes"]
    assert split.test == ("test/images/slice_0001",)  # test_sources name the path of a clashing file


@pytest.mark.slow
def test_shipped_configs_plan_on_the_real_data(shared_data: Path, tmp_path: Path) -> None:
    assert set(shipped_benchmarks()) == {"dsb", "isbi", "lsm", "lsm-deblur", "tio2", "vessels"}
    for name in sorted(shipped_benchmarks()):
        for budget in ("cpu-small", "gpu"):
            load_benchmark_config(benchmark_config_path(name), budget)
        config, _ = load_benchmark_config(benchmark_config_path(name), "cpu-small", [f"data_root={shared_data}"])
        units = {dt.name: prepare_units(dt, shared_data, tmp_path / name / dt.name) for dt in config.datatypes}
        assert not [u.id for us in units.values() for u in us if "/" in u.id]  # shipped unit names stay file names
        splits = load_or_plan(tmp_path / name / "splits.json", units, config.datatypes, config.protocol)
        for dt in config.datatypes:
            class_of = {u.id: u.class_name for u in units[dt.name]}
            for size in dt.train_sizes or config.protocol.train_sizes:
                for fold in range(config.protocol.folds):
                    train, val = fold_sets(splits[dt.name], fold, size, config.protocol, class_of, dt.name)
                    assert len(set(train) | set(val)) == size


def test_a_pretraining_corpus_holding_a_test_unit_is_refused(tmp_path: Path) -> None:
    from fmscope.data import load_manifest
    from fmscope.io import write_image
    from fmscope.models import create_model, save_model
    from fmscope.pretrain.export import write_corpus

    _data(tmp_path / "data")
    corpus = tmp_path / "data" / "corpus"
    corpus.mkdir()
    for f in sorted((tmp_path / "data" / "cls").iterdir()):  # the same voxels under another name and format
        write_image(corpus / f"copy_{f.stem}.nii.gz", tifffile.imread(f))
    leaky = {"config": "image-only", "data": "corpus", "overrides": ["data.allow_missing_captions=true"]}
    methods = [{"name": "leaky", "kind": "finetune", "init": "pretrain:leaky"}]
    config, root = load_benchmark_config(
        _config(tmp_path / "c.yaml", tmp_path / "data", methods=methods, pretrain={"leaky": leaky})
    )
    with pytest.raises(InvalidInputError, match=r"pretrain\.leaky: the pretraining corpus contains \d+ of this"):
        bench.run_benchmark(config, root, tmp_path / "r", progress=False)
    assert not (tmp_path / "r" / "pretrained").exists()  # refused before anything trained
    # a model folder whose corpus.json lists a test unit: refused too; its own clean corpus passes
    model = save_model(create_model("unet-tiny"), tmp_path / "model")
    write_corpus(model, load_manifest(corpus, allow_missing_captions=True))
    methods = [{"name": "pre", "kind": "finetune", "init": str(model)}]
    config, root = load_benchmark_config(_config(tmp_path / "c.yaml", tmp_path / "data", methods=methods))
    with pytest.raises(InvalidInputError, match=r"methods\[pre\]\.init .*copy_"):
        bench.run_benchmark(config, root, tmp_path / "r2", progress=False)
    (corpus / "clean").mkdir()
    write_image(corpus / "clean" / "other.tif", np.zeros((16, 16, 16), np.float32))
    write_corpus(model, load_manifest(corpus / "clean", allow_missing_captions=True))
    config, root = load_benchmark_config(
        _config(tmp_path / "c.yaml", tmp_path / "data", methods=methods, protocol={"folds": 2, "train_sizes": [2],
                "test_size": 2, "seed": 0}, datatypes=[{"name": "disks", "task": "segment", "folders": ["seg"]}])
    )  # fmt: skip
    result = bench.run_benchmark(config, root, tmp_path / "r3", progress=False)
    assert {r["status"] for r in result.rows} == {"ok"}
