"""Typed config: defaults <- YAML <- key=value overrides, validated with errors naming the key."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import pytest

from fmscope.config import from_dict, parse_overrides, resolve_config, save_config, to_dict
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
