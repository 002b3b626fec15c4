"""Self-describing model folders: save/load round trip, strict key reports, profiles, atomicity, bad folders."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from fmscope.errors import FileFormatError, InvalidInputError, OutputExistsError
from fmscope.intensity import IntensityProfile
from fmscope.models import (
    create_model,
    load_model,
    load_state_dict_report,
    map_prefixes,
    read_model_config,
    save_model,
)
from fmscope.models import serialization as serialization_module
from fmscope.models.serialization import split_shared


@pytest.fixture()
def profile() -> IntensityProfile:
    return IntensityProfile(source_dtype="uint16", low_percentile=1.0, high_percentile=99.8, low=100.0, high=4000.0)


@pytest.fixture()
def saved(tmp_path: Path, profile: IntensityProfile) -> Path:
    torch.manual_seed(0)
    model = create_model("unet-tiny", norm="batch")
    model.train()
    model(torch.randn(2, 1, 32, 32, 32))  # move BatchNorm running statistics away from their defaults
    return save_model(model, tmp_path / "model", profile=profile, extra={"step": 1000, "data": "phantoms"})


def test_round_trip_identical(tmp_path: Path, profile: IntensityProfile) -> None:
    torch.manual_seed(0)
    model = create_model("unet-tiny", norm="batch")
    model(torch.randn(2, 1, 32, 32, 32))
    folder = save_model(model.eval(), tmp_path / "model", profile=profile, extra={"step": 7})
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "intensity_profile.json", "model.safetensors"]
    loaded = load_model(folder)
    assert loaded.config == model.config and loaded.model.config == model.config
    assert loaded.report.ok and not loaded.model.training
    original, restored = model.state_dict(), loaded.model.state_dict()
    assert list(original) == list(restored)
    for key, value in original.items():
        torch.testing.assert_close(restored[key], value, rtol=0, atol=0)
    x = torch.randn(1, 1, 32, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(loaded.model(x).dense, model(x).dense, rtol=0, atol=0)
    assert loaded.profile == profile
    meta = loaded.metadata
    assert meta.extra == {"step": 7} and meta.format_version == 1 and meta.torch_version == torch.__version__
    assert (meta.input.in_channels, meta.input.patch_size, meta.input.axes, meta.input.divisor) == (
        1,
        (32,) * 3,
        "CZYX",
        4,
    )


def test_config_json_is_self_describing(saved: Path) -> None:
    doc = json.loads((saved / "config.json").read_text())
    assert doc["format"] == "fmscope.model" and doc["format_version"] == 1
    assert doc["architecture"]["architecture"] == "unet" and doc["architecture"]["channels"] == [4, 8, 16]
    assert doc["input"] == {
        "in_channels": 1,
        "spatial_dims": 3,
        "patch_size": [32, 32, 32],
        "axes": "CZYX",
        "divisor": 4,
    }
    assert doc["intensity_profile"]["file"] == "intensity_profile.json"
    assert doc["intensity_profile"]["profile"]["high"] == 4000.0
    assert doc["provenance"]["extra"] == {"step": 1000, "data": "phantoms"}
    assert {"fmscope_version", "torch_version", "monai_version", "created"} <= set(doc["provenance"])
    assert doc["weights"]["parameters"] == 8856  # unet-tiny with BatchNorm affine parameters
    config, _ = read_model_config(saved)
    assert config.norm == "batch"


def test_profile_embedded_fallback_and_none(saved: Path, tmp_path: Path, profile: IntensityProfile) -> None:
    (saved / "intensity_profile.json").unlink()
    assert load_model(saved).profile == profile  # the embedded copy
    folder = save_model(create_model("unet-tiny"), tmp_path / "plain")
    assert not (folder / "intensity_profile.json").exists()
    assert load_model(folder).profile is None


def test_2d_round_trip(tmp_path: Path) -> None:
    model = create_model("unet-tiny", spatial_dims=2, patch_size=(32, 32)).eval()
    loaded = load_model(save_model(model, tmp_path / "m2d"))
    x = torch.randn(1, 1, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(loaded.model(x).dense, model(x).dense, rtol=0, atol=0)
    assert loaded.metadata.input.axes == "CYX"


def _tamper(folder: Path) -> None:
    """One missing key, one unexpected key, one shape mismatch."""
    state = load_file(str(folder / "model.safetensors"))
    del state["net.model.0.conv.bias"]
    state["net.extra_head.weight"] = torch.zeros(3)
    state["net.model.2.conv.weight"] = torch.zeros(2, 2)
    save_file(state, str(folder / "model.safetensors"))


def test_strict_load_reports_keys(saved: Path) -> None:
    _tamper(saved)
    with pytest.raises(FileFormatError) as info:
        load_model(saved)
    message = str(info.value)
    assert str(saved) in message and "strict=False" in message
    assert "missing 1: net.model.0.conv.bias" in message
    assert "unexpected 1: net.extra_head.weight" in message
    assert "shape mismatch 1: net.model.2.conv.weight (model (8, 8, 3, 3, 3) vs file (2, 2))" in message


def test_non_strict_partial_load(saved: Path, caplog: pytest.LogCaptureFixture) -> None:
    _tamper(saved)
    with caplog.at_level(logging.WARNING, logger="fmscope.models.serialization"):
        loaded = load_model(saved, strict=False)
    report = loaded.report
    assert (len(report.missing), len(report.unexpected), len(report.mismatched_shapes)) == (1, 1, 1)
    assert len(report.loaded) == len(loaded.model.state_dict()) - 2
    key, model_shape, file_shape = report.mismatched_shapes[0]
    assert (key, model_shape, file_shape) == ("net.model.2.conv.weight", (8, 8, 3, 3, 3), (2, 2))
    assert "partial load" in caplog.text and "missing 1" in caplog.text


def test_encoder_transfer_with_prefix_map() -> None:
    torch.manual_seed(0)
    pretrained = create_model("unet-tiny")
    target = create_model("unet-tiny", out_channels=3)  # different decoder head: only the encoder should transfer
    wrapped = {f"student.{k}": v for k, v in pretrained.encoder_state_dict().items()}
    report = load_state_dict_report(target, wrapped, prefix_map={"student.": ""})
    assert set(report.loaded) == set(pretrained.encoder_state_dict())
    assert not report.unexpected and not report.mismatched_shapes
    assert report.missing and all(not target.is_encoder_key(k) for k in report.missing)
    for key, value in pretrained.encoder_state_dict().items():
        torch.testing.assert_close(target.state_dict()[key], value, rtol=0, atol=0)
    assert "loaded" in report.summary() and "missing" in report.summary()


def test_map_prefixes_longest_wins_and_collision() -> None:
    t = torch.zeros(1)
    assert set(map_prefixes({"a.b.x": t, "a.y": t, "z": t}, {"a.": "A.", "a.b.": "B.", "": "root."})) == {
        "B.x",
        "A.y",
        "root.z",
    }
    with pytest.raises(InvalidInputError, match="two keys map to 'x'"):
        map_prefixes({"a.x": t, "b.x": t}, {"a.": "", "b.": ""})


def test_overwrite_refused_then_allowed(saved: Path) -> None:
    model = create_model("unet-tiny")
    with pytest.raises(OutputExistsError, match="overwrite=True"):
        save_model(model, saved)
    save_model(model, saved, overwrite=True)
    assert load_model(saved).profile is None


def test_failing_save_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(*args: object, **kwargs: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(serialization_module, "save_file", boom)
    with pytest.raises(OSError, match="disk full"):
        save_model(create_model("unet-tiny"), tmp_path / "model")
    assert list(tmp_path.iterdir()) == []


def test_bad_save_arguments(tmp_path: Path) -> None:
    with pytest.raises(InvalidInputError, match="extra: expected a JSON-serialisable dict"):
        save_model(create_model("unet-tiny"), tmp_path / "m", extra={"x": object()})
    with pytest.raises(InvalidInputError, match="model: expected an fmscope Backbone"):
        save_model(torch.nn.Linear(2, 2), tmp_path / "m")  # type: ignore[arg-type]
    assert list(tmp_path.iterdir()) == []


def test_bad_folders(tmp_path: Path, saved: Path) -> None:
    with pytest.raises(FileFormatError, match="no such folder"):
        load_model(tmp_path / "absent")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileFormatError, match=r"empty'.*expected a config\.json"):
        load_model(tmp_path / "empty")
    doc = json.loads((saved / "config.json").read_text())
    doc["architecture"]["architecture"] = "resnet"
    (saved / "config.json").write_text(json.dumps(doc))
    with pytest.raises(FileFormatError, match=r"model'.*invalid architecture.*got 'resnet'"):
        load_model(saved)
    doc["architecture"]["architecture"] = "unet"
    doc["format_version"] = 99
    (saved / "config.json").write_text(json.dumps(doc))
    with pytest.raises(FileFormatError, match="format_version <= 1, got 99"):
        load_model(saved)
    (saved / "config.json").write_text("{not json")
    with pytest.raises(FileFormatError, match="not valid JSON"):
        load_model(saved)


def test_corrupt_weights(saved: Path) -> None:
    data = (saved / "model.safetensors").read_bytes()
    (saved / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(FileFormatError, match=r"model'.*cannot read 'model\.safetensors'"):
        load_model(saved)
    (saved / "model.safetensors").unlink()
    with pytest.raises(FileFormatError, match=r"expected weights 'model\.safetensors'"):
        load_model(saved)


def test_shared_tensors_written_once() -> None:
    base = torch.randn(4, 4)
    tensors, aliases = split_shared({"a": base, "b": base, "c": base[1:], "d": torch.ones(2)})
    assert aliases == {"b": "a"}
    assert set(tensors) == {"a", "c", "d"}
    assert tensors["a"].untyped_storage().data_ptr() != tensors["c"].untyped_storage().data_ptr()


def test_tied_weights_round_trip(tmp_path: Path) -> None:
    model = create_model("unet-tiny").eval()
    # Tie two same-shaped parameters the way weight tying does: one Parameter under two names.
    prelus = [m for m in model.modules() if isinstance(m, torch.nn.PReLU)]
    prelus[1].weight = prelus[0].weight
    with torch.no_grad():
        prelus[0].weight.fill_(0.3)
    folder = save_model(model, tmp_path / "tied")
    doc = json.loads((folder / "config.json").read_text())
    assert len(doc["weights"]["tied"]) == 1
    loaded = load_model(folder)
    assert loaded.report.ok
    for key, value in model.state_dict().items():
        torch.testing.assert_close(loaded.model.state_dict()[key], value, rtol=0, atol=0)
