"""The architecture seam: a third backbone is one adapter + one registry line (here MONAI BasicUNet, in this file)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch
from monai.networks.nets import BasicUNet
from torch import Tensor, nn

from fmscope.errors import FileFormatError, InvalidInputError
from fmscope.models import (
    Architecture,
    Backbone,
    BackboneConfig,
    create_model,
    get_architecture,
    list_architectures,
    load_model,
    register_architecture,
    register_model,
    save_model,
)
from fmscope.models import architectures as architectures_module
from fmscope.models import registry as registry_module


@dataclass(frozen=True)
class BasicUNetConfig(BackboneConfig):
    """The common fields plus BasicUNet's own: 6 feature counts (5 encoder levels, then the last decoder's)."""

    features: tuple[int, ...] = (4, 4, 8, 8, 16, 4)


def _features(config: BackboneConfig) -> tuple[int, ...]:
    assert isinstance(config, BasicUNetConfig)  # BackboneConfig checks this before any adapter method runs
    return config.features


class BasicUNetArchitecture(Architecture):
    allowed_dims = (2, 3)
    default_seg_loss = "dicece"
    config_class = BasicUNetConfig
    fields = ("features", "act", "dropout")

    def check(self, config: BackboneConfig) -> None:
        features = _features(config)
        if len(features) != 6 or any(f < 1 for f in features):
            raise InvalidInputError(f"features: expected 6 positive feature counts, got {features}")

    def divisor(self, config: BackboneConfig) -> int:
        return 16  # four 2x max-poolings

    def feature_dims(self, config: BackboneConfig) -> tuple[int, ...]:
        return _features(config)[:5]

    def build(self, config: BackboneConfig) -> nn.Module:
        return BasicUNet(
            spatial_dims=config.spatial_dims,
            in_channels=config.in_channels,
            out_channels=config.out_channels,
            features=_features(config),
            norm=config.norm,
            dropout=config.dropout,
        )

    def encoder_prefixes(self, net: nn.Module) -> tuple[str, ...]:
        return ("conv_0.", "down_1.", "down_2.", "down_3.", "down_4.")

    def encode(self, net: nn.Module, x: Tensor) -> tuple[Tensor, ...]:
        b: Any = net
        feats = [b.conv_0(x)]
        for down in (b.down_1, b.down_2, b.down_3, b.down_4):
            feats.append(down(feats[-1]))
        return tuple(feats)

    def decode(self, net: nn.Module, features: tuple[Tensor, ...]) -> Tensor:
        b: Any = net
        x0, x1, x2, x3, x4 = features
        u = b.upcat_4(x4, x3)
        u = b.upcat_3(u, x2)
        u = b.upcat_2(u, x1)
        return b.final_conv(b.upcat_1(u, x0))


@pytest.fixture()
def basicunet(monkeypatch: pytest.MonkeyPatch) -> str:
    """Register the architecture and a tiny model of it for one test; both registries are restored afterwards."""
    get_architecture("unet")  # the built-in architectures are loaded before the registry is copied
    monkeypatch.setattr(architectures_module, "_ARCHITECTURES", dict(architectures_module._ARCHITECTURES))
    monkeypatch.setattr(registry_module, "_REGISTRY", dict(registry_module._REGISTRY))
    register_architecture("basicunet", BasicUNetArchitecture())  # the one registry line
    register_model("basicunet-tiny", BasicUNetConfig("basicunet", out_channels=4, patch_size=(32, 32, 32)))
    return "basicunet-tiny"


def test_builtin_architectures_and_default_losses() -> None:
    assert {"unet", "swinunetr"} <= set(list_architectures())
    assert get_architecture("unet").default_seg_loss == "dicefocal"
    assert get_architecture("swinunetr").default_seg_loss == "dicece"
    assert get_architecture("unet").allowed_dims == (2, 3) and get_architecture("swinunetr").allowed_dims == (3,)


def test_unknown_architecture_lists_registered() -> None:
    with pytest.raises(InvalidInputError, match=r"architecture: expected one of \['swinunetr', 'unet'.*got 'vit'"):
        get_architecture("vit")
    with pytest.raises(InvalidInputError, match=r"architecture: expected one of .*got 'vit'"):
        BackboneConfig("vit")


def test_register_architecture_refuses_duplicates_and_non_adapters() -> None:
    with pytest.raises(InvalidInputError, match="architecture 'unet' is already registered"):
        register_architecture("unet", get_architecture("unet"))
    with pytest.raises(InvalidInputError, match="adapter: expected an Architecture, got str"):
        register_architecture("other", "unet")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("overrides", "shape"), [({}, (2, 1, 32, 32, 32)), ({"spatial_dims": 2, "patch_size": (32, 32)}, (1, 1, 48, 32))]
)
def test_third_architecture_builds_and_walks_like_monai(
    basicunet: str, overrides: dict[str, Any], shape: tuple[int, ...]
) -> None:
    torch.manual_seed(0)
    model = create_model(basicunet, **overrides).eval()
    assert isinstance(model, Backbone) and model.adapter.default_seg_loss == "dicece"
    assert model.feature_dims == (4, 4, 8, 8, 16) and model.config.divisor == 16
    x = torch.randn(*shape)
    with torch.no_grad():
        out = model(x)
        reference = model.net(x)
    torch.testing.assert_close(out.dense, reference, rtol=0, atol=0)  # the walk == BasicUNet's forward
    assert tuple(f.shape[1] for f in out.encoder_features) == model.feature_dims
    assert tuple(out.bottleneck.shape[2:]) == tuple(s // 16 for s in shape[2:])
    assert model.encoder_state_dict() and all(k.startswith("net.") for k in model.state_dict())
    with pytest.raises(InvalidInputError, match="not a multiple of the network's downsampling factor 16"):
        model(torch.zeros(1, 1, *(24,) * (len(shape) - 2)))


def test_third_architecture_config_checks_and_save_load(basicunet: str, tmp_path: Path) -> None:
    with pytest.raises(InvalidInputError, match="features: expected 6 positive feature counts"):
        create_model(basicunet, features=(4, 8))
    with pytest.raises(InvalidInputError, match="'basicunet' is configured by BasicUNetConfig, got a BackboneConfig"):
        BackboneConfig("basicunet", patch_size=(32, 32, 32))
    torch.manual_seed(0)
    model = create_model(basicunet, features=(2, 2, 4, 4, 8, 2))
    folder = save_model(model, tmp_path / "m")
    doc = json.loads((folder / "config.json").read_text())
    assert doc["architecture"]["architecture"] == "basicunet" and doc["architecture"]["features"] == [2, 2, 4, 4, 8, 2]
    assert doc["input"]["divisor"] == 16
    loaded = load_model(folder)
    assert isinstance(loaded.config, BasicUNetConfig) and loaded.config == model.config and loaded.report.ok
    x = torch.randn(1, 1, 32, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(loaded.model(x).dense, model.eval()(x).dense, rtol=0, atol=0)


def test_unregistered_architecture_in_config_json_is_a_format_error(basicunet: str, tmp_path: Path) -> None:
    folder = save_model(create_model(basicunet), tmp_path / "m")
    architectures_module._ARCHITECTURES.pop("basicunet")
    with pytest.raises(FileFormatError, match=r"invalid architecture in config.json: architecture: expected one of"):
        load_model(folder)
