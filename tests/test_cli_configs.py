"""Configs on the command line: shipped names are not shadowed by local folders, ``fmscope benchmark --template`` and
``fmscope finetune --show-config``."""

from __future__ import annotations

import dataclasses
import re
import typing
from pathlib import Path
from typing import Any

import pytest
import yaml

from conftest import run
from fmscope.cli.bench_commands import benchmark_config_path
from fmscope.cli.pretrain_commands import shipped_config_path
from fmscope.cli.task_commands import finetune_config_path
from fmscope.config import resolve_config, to_dict
from fmscope.evaluation.bench_config import BenchmarkConfig, ProtocolConfig, load_benchmark_config
from fmscope.tasks.config import FinetuneConfig


def test_local_folders_do_not_shadow_shipped_configs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for name in ("isbi", "finetune-unet-cpu", "unet-cpu"):  # e.g. the folder the README's fine-tuning example makes
        (tmp_path / name).mkdir()
    monkeypatch.chdir(tmp_path)
    assert benchmark_config_path("isbi").parent.name == "benchmark"
    assert finetune_config_path("finetune-unet-cpu").name == "finetune-unet-cpu.yaml"
    assert shipped_config_path("unet-cpu").name == "unet-cpu.yaml"
    code, out, err = run(capsys, "finetune", "seg", "--config", "finetune-unet-cpu", "--show-config")
    assert code == 0, err
    assert yaml.safe_load(out) == to_dict(resolve_config(FinetuneConfig, finetune_config_path("finetune-unet-cpu")))
    code, _, err = run(capsys, "benchmark", "isbi-nope", "-o", tmp_path / "r")
    assert code == 1 and "'isbi-nope' is not a shipped config (known: [" in err and "is not a YAML file" in err


def _schema_fields(cls: type, prefix: str = "") -> set[str]:
    """Dotted names of every field of a config dataclass, list and mapping entries included (``datatypes.name``)."""
    names = set()
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        names.add(prefix + f.name)
        inner = [a for a in (hints[f.name], *typing.get_args(hints[f.name])) if dataclasses.is_dataclass(a)]
        for sub in inner:
            names |= _schema_fields(typing.cast(type, sub), f"{prefix}{f.name}.")
    return names


def _keys(data: Any, prefix: str = "") -> set[str]:
    """Dotted keys of a parsed YAML document (list items merged; the named entries of ``pretrain`` too)."""
    if isinstance(data, list):
        return set().union(*(_keys(item, prefix) for item in data))
    keys: set[str] = set()
    for key, value in data.items() if isinstance(data, dict) else ():
        keys.add(prefix + str(key))
        entries = value.values() if prefix + str(key) == "pretrain" else [value]
        keys |= set().union(*(_keys(v, f"{prefix}{key}.") for v in entries))
    return keys


def test_benchmark_template_covers_the_schema_and_loads(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "benchmark", "--template")
    assert code == 0, err
    template = tmp_path / "my.yaml"
    template.write_text(out)  # as `fmscope benchmark --template > my.yaml`
    data = yaml.safe_load(out)
    assert _schema_fields(BenchmarkConfig) <= _keys(data)
    assert "budgets" in data and "datatypes.pair_by" in _keys(data) and "pretrain.overrides" in _keys(data)
    config, _ = load_benchmark_config(template)  # loads as it is: only the placeholder data paths are to fill in
    assert config.protocol == ProtocolConfig() and config.datatypes[0].images == "my_data/images"  # the defaults
    lines = out.splitlines()
    described = {
        m.group(1)
        for i, ln in enumerate(lines)
        if (m := re.match(r"\s*(\w+):", ln)) and lines[i - 1].lstrip().startswith("#")
    }
    assert {name.rsplit(".", 1)[-1] for name in _schema_fields(BenchmarkConfig)} <= described  # each key described


@pytest.mark.parametrize(
    ("argv", "fragment"),
    [
        (["benchmark"], "CONFIG and -o/--out: required (unless --template)"),
        (["benchmark", "isbi"], "-o/--out: required"),
        (["benchmark", "-o", "r"], "CONFIG: required"),
        (["benchmark", "--template", "isbi"], "--template: prints the template alone; drop CONFIG"),
        (["finetune", "seg"], "--out: required (unless --show-config)"),
        (["finetune", "seg", "--train", "t", "--val", "v"], "--out: required"),
        (["finetune", "seg", "--out", "o"], "--train, --val: both are required"),
    ],
)
def test_missing_arguments_are_named(argv: list[str], fragment: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, *argv)
    assert code == 1 and fragment in err, err
    assert len(err.strip().splitlines()) == 1


def test_finetune_show_config_resolves_defaults_yaml_and_overrides(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run(capsys, "finetune", "seg", "--show-config")
    assert code == 0, err
    assert yaml.safe_load(out) == to_dict(resolve_config(FinetuneConfig, finetune_config_path("finetune-unet-cpu")))
    mine = tmp_path / "mine.yaml"
    mine.write_text("lr: 0.001\nepochs: 7\n")
    code, out, err = run(
        capsys, "finetune", "cls", "--config", mine, "--show-config", "epochs=3", "patch_size=[16, 16]"
    )
    assert code == 0, err
    shown = yaml.safe_load(out)
    assert shown["task"] == "classify" and shown["lr"] == 0.001 and shown["epochs"] == 3
    assert shown["patch_size"] == [16, 16] and set(shown) == {f.name for f in dataclasses.fields(FinetuneConfig)}
    code, _, err = run(capsys, "finetune", "seg", "--show-config", "epochz=3")
    assert code == 1 and "unknown config key" in err
