"""Backbone registry and the uniform interface over MONAI UNet / SwinUNETR (tiny configs only at run time)."""

from __future__ import annotations

import pytest
import torch

from fmscope.errors import InvalidInputError
from fmscope.models import BackboneConfig, create_model, get_config, list_models, register_model
from fmscope.models import registry as registry_module

REGISTERED = ["swinunetr", "swinunetr-24", "swinunetr-tiny", "unet", "unet-cpu", "unet-tiny"]

# (name, parameters, encoder parameters, feature_dims): regression numbers for MONAI 1.6.1 (build only, no forward).
PARAM_COUNTS = [
    ("unet-tiny", 8_792, 4_459, (4, 8, 16)),
    ("unet-cpu", 1_991_720, 1_175_973, (16, 32, 64, 128, 256)),
    ("unet", 7_964_744, 4_702_021, (32, 64, 128, 256, 512)),
    ("swinunetr-tiny", 3_830_109, 2_605_089, (12, 12, 24, 48, 96, 192)),
    ("swinunetr-24", 15_703_554, 10_803_498, (24, 24, 48, 96, 192, 384)),
    ("swinunetr", 62_188_962, 42_588_786, (48, 48, 96, 192, 384, 768)),
]


def test_list_models() -> None:
    assert list_models() == REGISTERED


def test_unknown_name_lists_registered() -> None:
    with pytest.raises(InvalidInputError, match=r"unet-tiny.*got 'unet-huge'"):
        create_model("unet-huge")


def test_overrides_and_unknown_override() -> None:
    model = create_model("unet-tiny", out_channels=3, norm="batch", in_channels=2)
    assert (model.config.out_channels, model.config.norm, model.config.in_channels) == (3, "batch", 2)
    assert get_config("unet-tiny").out_channels == 8  # registry untouched
    with pytest.raises(InvalidInputError, match=r"unknown config fields \['chanels'\]"):
        create_model("unet-tiny", chanels=(1, 2))


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"spatial_dims": 2}, r"patch_size: expected 2 positive sizes"),
        ({"strides": (2,)}, r"strides: expected 2 positive strides"),
        ({"norm": "group"}, r"norm: expected one of \['instance', 'batch'\], got 'group'"),
        ({"patch_size": (30, 32, 32)}, r"multiple of the network's downsampling factor 4"),
        ({"architecture": "vit"}, r"architecture: expected one of"),
        ({"out_channels": 0}, r"out_channels: expected a positive integer, got 0"),
    ],
)
def test_bad_config(overrides: dict[str, object], message: str) -> None:
    with pytest.raises(InvalidInputError, match=message):
        create_model("unet-tiny", **overrides)


def test_swin_config_rules() -> None:
    with pytest.raises(InvalidInputError, match=r"spatial_dims: expected one of \[3\] for swinunetr"):
        get_config("swinunetr-tiny", spatial_dims=2, patch_size=(32, 32))
    with pytest.raises(InvalidInputError, match=r"multiple of the network's downsampling factor 32"):
        get_config("swinunetr-tiny", patch_size=(48, 32, 32))
    with pytest.raises(InvalidInputError, match=r"feature_size: expected a multiple of 12"):
        get_config("swinunetr-tiny", feature_size=16)


def test_register_and_dict_round_trip(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(registry_module, "_REGISTRY", dict(registry_module._REGISTRY))
    config = get_config("unet-tiny", channels=[4, 8], strides=[2])
    assert config.channels == (4, 8) and config.strides == (2,)
    assert BackboneConfig.from_dict(config.to_dict()) == config
    register_model("my-unet", config)
    assert "my-unet" in list_models()
    with pytest.raises(InvalidInputError, match="already registered"):
        register_model("my-unet", config)
    with pytest.raises(InvalidInputError, match=r"unknown keys \['bogus'\]"):
        BackboneConfig.from_dict({**config.to_dict(), "bogus": 1})


@pytest.mark.parametrize(("name", "params", "encoder_params", "feature_dims"), PARAM_COUNTS)
def test_parameter_counts(name: str, params: int, encoder_params: int, feature_dims: tuple[int, ...]) -> None:
    model = create_model(name)
    assert model.num_parameters() == params
    assert model.num_parameters(encoder_only=True) == encoder_params
    assert model.feature_dims == feature_dims
    assert model.bottleneck_dim == feature_dims[-1]
    assert model.dense_dim == model.config.out_channels


# (name, overrides, input shape, encoder feature shapes without batch, dense shape)
SHAPES = [
    ("unet-tiny", {}, (2, 1, 32, 32, 32), [(4, 16, 16, 16), (8, 8, 8, 8), (16, 8, 8, 8)], (2, 8, 32, 32, 32)),
    ("unet-tiny", {}, (1, 1, 16, 32, 24), [(4, 8, 16, 12), (8, 4, 8, 6), (16, 4, 8, 6)], (1, 8, 16, 32, 24)),
    (
        "unet-tiny",
        {"spatial_dims": 2, "patch_size": (32, 32), "in_channels": 3, "out_channels": 5},
        (2, 3, 32, 48),
        [(4, 16, 24), (8, 8, 12), (16, 8, 12)],
        (2, 5, 32, 48),
    ),
    (
        "unet-tiny",
        {"num_res_units": 1, "norm": "batch"},
        (2, 1, 32, 32, 32),
        [(4, 16, 16, 16), (8, 8, 8, 8), (16, 8, 8, 8)],
        (2, 8, 32, 32, 32),
    ),
    (
        "swinunetr-tiny",
        {},
        (1, 1, 64, 32, 32),
        [(12, 64, 32, 32), (12, 32, 16, 16), (24, 16, 8, 8), (48, 8, 4, 4), (96, 4, 2, 2), (192, 2, 1, 1)],
        (1, 12, 64, 32, 32),
    ),
]


@pytest.mark.parametrize(("name", "overrides", "shape", "features", "dense"), SHAPES)
def test_output_shapes_match_monai(
    name: str,
    overrides: dict[str, object],
    shape: tuple[int, ...],
    features: list[tuple[int, ...]],
    dense: tuple[int, ...],
) -> None:
    torch.manual_seed(0)
    model = create_model(name, **overrides).eval()
    x = torch.randn(*shape)
    with torch.no_grad():
        out = model(x)
        reference = model.net(x)  # the unwrapped MONAI network
        encoded = model.encode(x)
        pooled = model.pooled(x)
    assert [tuple(f.shape[1:]) for f in out.encoder_features] == features
    assert all(f.shape[0] == shape[0] for f in out.encoder_features)
    assert tuple(f.shape[1] for f in out.encoder_features) == model.feature_dims
    assert out.bottleneck is out.encoder_features[-1]
    assert tuple(out.dense.shape) == dense
    torch.testing.assert_close(out.dense, reference, rtol=0, atol=0)  # our walk == MONAI's forward
    for a, b in zip(encoded, out.encoder_features, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert tuple(pooled.shape) == (shape[0], model.pooled_dim) == (shape[0], sum(model.feature_dims))
    torch.testing.assert_close(pooled[:, -model.bottleneck_dim :], out.bottleneck.flatten(2).mean(2))
    torch.testing.assert_close(pooled[:, : model.feature_dims[0]], out.encoder_features[0].flatten(2).mean(2))


def test_gradients_flow_through_walk() -> None:
    model = create_model("unet-tiny")
    out = model(torch.randn(2, 1, 32, 32, 32))
    (out.dense.mean() + model.pooled(torch.randn(2, 1, 32, 32, 32)).mean()).backward()
    assert all(p.grad is not None for p in model.parameters())


@pytest.mark.parametrize("name", ["unet-tiny", "unet-cpu", "swinunetr-tiny"])
def test_encoder_prefixes(name: str) -> None:
    model = create_model(name)
    names = [n for n, _ in model.named_parameters()]
    encoder = [n for n in names if model.is_encoder_key(n)]
    decoder = [n for n in names if not model.is_encoder_key(n)]
    assert model.encoder_prefixes and encoder and decoder
    for prefix in model.encoder_prefixes:
        assert prefix.endswith(".") and any(n.startswith(prefix) for n in names)
    assert set(model.encoder_state_dict()) == {k for k in model.state_dict() if model.is_encoder_key(k)}
    assert not set(encoder) & set(decoder)
    assert all(k.startswith("net.") for k in model.state_dict())  # MONAI names, nothing registered twice


def test_unet_encoder_prefixes_exact() -> None:
    model = create_model("unet-tiny")
    assert model.encoder_prefixes == ("net.model.0.", "net.model.1.submodule.0.", "net.model.1.submodule.1.submodule.")


def test_deepcopy_keeps_walk_consistent() -> None:
    import copy

    model = create_model("unet-tiny").eval()
    teacher = copy.deepcopy(model)
    with torch.no_grad():
        for p in teacher.parameters():
            p.add_(1.0)
    x = torch.randn(1, 1, 32, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(teacher(x).dense, teacher.net(x), rtol=0, atol=0)
        assert not torch.equal(teacher(x).dense, model(x).dense)


BAD_INPUTS = [
    ("unet-tiny", (1, 2, 32, 32, 32), r"x: expected 1 channel\(s\), i\.e\. \(B, 1, Z, Y, X\) .*got shape \(1, 2, 32"),
    ("unet-tiny", (1, 32, 32, 32), r"x: expected a 5D tensor \(B, 1, Z, Y, X\)"),
    ("unet-tiny", (1, 1, 30, 32, 32), r"spatial size \(30, 32, 32\) is not a multiple of .* factor 4"),
    ("swinunetr-tiny", (1, 1, 48, 32, 32), r"spatial size \(48, 32, 32\) is not a multiple of .* factor 32"),
]


@pytest.mark.parametrize(("name", "shape", "message"), BAD_INPUTS)
def test_bad_inputs(name: str, shape: tuple[int, ...], message: str) -> None:
    model = create_model(name)
    with pytest.raises(InvalidInputError, match=message):
        model(torch.zeros(*shape))
    with pytest.raises(InvalidInputError, match=message):
        model.pooled(torch.zeros(*shape))
