"""Typed config: defaults <- YAML <- key=value overrides, validated with errors naming the key."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import pytest

from fmscope.config import config_path, from_dict, parse_overrides, resolve_config, save_config, to_dict
from fmscope.errors import InvalidInputError


@dataclass(frozen=True)
class Optim:
    lr: float = 1e-4
    betas: tuple[float, float] = (0.9, 0.999)


@dataclass(frozen=True)
class Cfg:
    name: str = "unet-cpu"
    steps: int = 10
    mode: Literal["image", "image+text"] = "image+text"
    patch: tuple[int, ...] = (64, 64, 64)
    out: Path | None = None
    optim: Optim = field(default_factory=Optim)


def test_defaults_yaml_and_overrides(tmp_path: Path) -> None:
    yml = tmp_path / "c.yaml"
    yml.write_text("steps: 300\noptim:\n  lr: 3.0e-4\n")
    cfg = resolve_config(Cfg, yml, ["optim.betas=[0.8, 0.9]", "mode=image", "patch=[32, 32, 32]", "out=/tmp/x"])
    assert cfg == Cfg(steps=300, mode="image", patch=(32, 32, 32), out=Path("/tmp/x"), optim=Optim(3e-4, (0.8, 0.9)))
    assert resolve_config(Cfg) == Cfg()


def test_save_and_reload_round_trip(tmp_path: Path) -> None:
    cfg = Cfg(steps=3, optim=Optim(lr=0.5))
    path = save_config(cfg, tmp_path / "resolved.yaml")
    assert resolve_config(Cfg, path) == cfg
    assert to_dict(cfg)["optim"] == {"lr": 0.5, "betas": [0.9, 0.999]}


def test_exponent_without_dot_is_a_float() -> None:
    assert resolve_config(Cfg, None, ["optim.lr=1e-3"]).optim.lr == 1e-3
    with pytest.raises(InvalidInputError, match="optim.lr: expected a number"):
        resolve_config(Cfg, None, ["optim.lr=fast"])


def test_override_parsing() -> None:
    assert parse_overrides(["a.b=1", "a.c=true", "d=x y"]) == {"a": {"b": 1, "c": True}, "d": "x y"}


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"stepz": 1}, "unknown config key"),
        ({"optim": {"lrr": 1}}, "in 'optim'"),
        ({"steps": "many"}, "steps: expected an integer"),
        ({"steps": True}, "steps: expected an integer"),
        ({"mode": "text"}, "mode: expected one of"),
        ({"optim": {"betas": [1]}}, "optim.betas: expected 2 values"),
        ({"optim": 3}, "optim: expected a mapping"),
    ],
)
def test_bad_values_name_the_key(data: dict[str, object], message: str) -> None:
    with pytest.raises(InvalidInputError, match=message):
        from_dict(Cfg, data)


@pytest.mark.parametrize("pairs", [["novalue"], ["=3"], ["a=1", "a.b=2"]])
def test_bad_overrides(pairs: list[str]) -> None:
    with pytest.raises(InvalidInputError, match="override"):
        parse_overrides(pairs)


def test_missing_or_bad_yaml(tmp_path: Path) -> None:
    with pytest.raises(InvalidInputError, match="does not exist"):
        resolve_config(Cfg, tmp_path / "none.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("- a\n- b\n")
    with pytest.raises(InvalidInputError, match="mapping"):
        resolve_config(Cfg, bad)


BENCH = {"folder": "configs/benchmark", "option": "--config"}


def _cwd_with_lookalikes(tmp_path: Path) -> None:
    """A working directory holding a folder and a suffix-less file named like shipped configs, a YAML of its own, a
    folder and a file named like nothing shipped."""
    (tmp_path / "isbi").mkdir()  # the README's fine-tuning example creates this folder
    (tmp_path / "dsb").write_text("title: not the shipped one\n")
    (tmp_path / "mine.yaml").write_text("title: mine\n")
    (tmp_path / "mybench").write_text("title: mine\n")
    (tmp_path / "scratch").mkdir()


def test_a_shipped_name_wins_over_a_local_folder_or_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _cwd_with_lookalikes(tmp_path)
    monkeypatch.chdir(tmp_path)
    for name in ("isbi", "dsb"):
        path = config_path(name, **BENCH)
        assert path.name == f"{name}.yaml" and path.parent.name == "benchmark" and path.is_file()
    assert config_path("unet-cpu").name == "unet-cpu.yaml"  # the default folder (pretraining configs)
    assert config_path("unet-cpu", ("unet-cpu",)).parent.name == "configs"


@pytest.mark.parametrize(
    ("argument", "expected"),
    [
        ("mine.yaml", "mine.yaml"),  # a YAML suffix: a file
        ("./isbi/../mine.yaml", "mine.yaml"),  # a path separator / leading '.': a file
        ("mybench", "mybench"),  # a bare name that is not shipped but is a file: that file
    ],
)
def test_arguments_that_are_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, argument: str, expected: str
) -> None:
    _cwd_with_lookalikes(tmp_path)
    monkeypatch.chdir(tmp_path)
    assert config_path(argument, **BENCH).resolve() == (tmp_path / expected).resolve()


def test_a_leading_tilde_is_the_home_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / "isbi").write_text("title: home\n")
    assert config_path("~/isbi", **BENCH) == tmp_path / "isbi"


@pytest.mark.parametrize(
    ("argument", "messages"),
    [
        ("nope", ["--config: 'nope' is not a shipped config (known: [", "'isbi'", "'nope' is not a YAML file"]),
        ("scratch", ["'scratch' is not a shipped config", "'scratch' is a folder, not a YAML file"]),
        ("./isbi", ["--config: 'isbi' is a folder, not a YAML file"]),
        ("isbi.yaml", ["--config: YAML file 'isbi.yaml' does not exist"]),
        ("sub/c.yml", ["YAML file 'sub/c.yml' does not exist"]),
    ],
)
def test_config_path_errors_say_what_was_tried(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, argument: str, messages: list[str]
) -> None:
    _cwd_with_lookalikes(tmp_path)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(InvalidInputError) as caught:
        config_path(argument, **BENCH)
    for message in messages:
        assert message in str(caught.value)
