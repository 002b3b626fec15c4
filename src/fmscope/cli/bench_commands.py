"""Benchmark command: ``fmscope benchmark CONFIG -o REPORT [--budget NAME] [key=value ...]``, or
``fmscope benchmark --template > my.yaml`` for a commented config with every key."""

from __future__ import annotations

import argparse
import sys
from importlib import resources
from pathlib import Path
from typing import Any

from fmscope.config import config_path
from fmscope.errors import InvalidInputError


def shipped_benchmarks() -> dict[str, Path]:
    """Benchmark configs shipped with fmscope (``fmscope/configs/benchmark/NAME.yaml``), by name."""
    folder = resources.files("fmscope") / "configs" / "benchmark"
    return {Path(str(p)).stem: Path(str(p)) for p in folder.iterdir() if str(p).endswith(".yaml")}


def benchmark_config_path(name_or_path: str) -> Path:
    """A YAML file, or the path of a shipped benchmark config by name."""
    return config_path(name_or_path, folder="configs/benchmark", option="config")


def register(sub: Any) -> None:
    p = sub.add_parser(
        "benchmark",
        help="cross-validated comparison of pretrained, scratch and classical methods, with a report",
        description="Run every method of CONFIG on every datatype, training size and fold (held-out test set, seeded "
        "splits by source volume), and write results.csv, summary.md, plots and example overlays to REPORT. A rerun "
        "into the same REPORT resumes: finished folds are not recomputed. Shipped configs: "
        + ", ".join(sorted(shipped_benchmarks()))
        + ". Override any key as key=value, e.g. protocol.folds=2. Start a config of your own from --template.",
    )
    p.add_argument("config", nargs="?", default=None, help="benchmark YAML or a shipped config name")
    p.add_argument("-o", "--out", type=Path, default=None, help="report folder (created, or resumed)")
    p.add_argument(
        "--template", action="store_true", help="print a commented config with every key and its default, and exit"
    )
    p.add_argument("--budget", default=None, help="a budget of the config, e.g. cpu-small (laptop) or gpu (full size)")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides")
    p.set_defaults(func=cmd_benchmark)


def cmd_benchmark(args: argparse.Namespace) -> int:
    from fmscope.evaluation.bench_config import benchmark_template, load_benchmark_config

    given = {"CONFIG": args.config, "-o/--out": args.out, "--budget": args.budget, "key=value": args.overrides}
    if args.template:
        extra = [k for k, v in given.items() if v]
        if extra:
            raise InvalidInputError(f"--template: prints the template alone; drop {', '.join(extra)}")
        print(benchmark_template(), end="")
        return 0
    missing = [k for k in ("CONFIG", "-o/--out") if given[k] is None]
    if missing:
        raise InvalidInputError(f"{' and '.join(missing)}: required (unless --template)")
    from tqdm.auto import tqdm

    from fmscope.evaluation.benchmark import run_benchmark

    config, root = load_benchmark_config(benchmark_config_path(args.config), args.budget, args.overrides)
    result = run_benchmark(config, root, args.out, progress=True, log=lambda m: tqdm.write(m, file=sys.stderr))
    print(result.files["summary"].read_text())
    for name, path in result.files.items():
        print(f"{name}: {path}")
    return 0
