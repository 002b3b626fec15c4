"""SAM and SAM2 adapters with randomly initialised weights saved in the official checkpoint formats.

Each model is built, saved, loaded and each encoder run once per module (module-scoped fixtures): SAM resizes every
slice to 1024 pixels, so one vit_b embedding costs ~16 s on two CPU cores, one hiera_tiny embedding ~3 s. With random
weights the masks mean nothing; the tests check shapes, dtypes, axis order, prompt handling and the errors.
The tests that need a model are marked ``slow`` (``-m 'not slow'`` leaves them out; ``make test`` runs them).
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from fmscope.cli import model_commands
from fmscope.errors import FileFormatError, InvalidInputError
from fmscope.interactive import ObjectPrompt
from fmscope.interactive import checkpoints as ck
from fmscope.interactive.prompts import Stroke
from fmscope.interactive.protocol import PromptableModel, PromptMask
from fmscope.interactive.sam_backend import mask_to_logits, sam_box, sam_points

SAM_INSTALL = "pip install -c constraints.txt 'fmscope[sam]'  (or make test)"
SAM2_INSTALL = "SAM2_BUILD_CUDA=0 pip install --no-deps --no-build-isolation sam2==1.1.0  (or make test)"


def _require(module: str, hint: str) -> Any:
    from fmscope.utils.torchvision_compat import torchvision_compat_scope

    try:
        with torchvision_compat_scope():
            return importlib.import_module(module)
    except ImportError as exc:
        pytest.skip(f"{module} is not installed ({exc}): {hint}")


def _slice(shape: tuple[int, int] = (48, 64), seed: int = 0) -> np.ndarray:
    """A raw uint16 slice: noise plus a bright disk at (y, x) = (20, 40)."""
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    image = np.random.default_rng(seed).normal(1000.0, 50.0, shape)
    image[(yy - 20) ** 2 + (xx - 40) ** 2 <= 64] += 2000.0
    return image.astype(np.uint16)


# --------------------------------------------------------------------------------------------- SAM v1 fixtures


@pytest.fixture(scope="module")
def sam_ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    sa = _require("segment_anything", SAM_INSTALL)
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("sam") / "sam_vit_b_01ec64.pth"
    torch.save(sa.sam_model_registry["vit_b"](checkpoint=None).state_dict(), path)  # official format: a state dict
    return path


@pytest.fixture(scope="module")
def sam(sam_ckpt: Path) -> Any:
    from fmscope.interactive.sam_backend import SamPrompter

    return SamPrompter("vit_b", checkpoint=sam_ckpt, verify=False)  # random weights: not the official size


@pytest.fixture(scope="module")
def sam_emb(sam: Any) -> Any:
    return sam.embed(_slice())


@pytest.fixture(scope="module")
def sam2_ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    _require("sam2.build_sam", SAM2_INSTALL)
    from sam2.build_sam import build_sam2

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("sam2") / "sam2.1_hiera_tiny.pt"
    net = build_sam2("configs/sam2.1/sam2.1_hiera_t.yaml", ckpt_path=None, device="cpu")
    torch.save({"model": net.state_dict()}, path)  # official format
    return path


@pytest.fixture(scope="module")
def sam2(sam2_ckpt: Path) -> Any:
    from fmscope.interactive.sam2_backend import Sam2Prompter

    return Sam2Prompter("sam2.1_hiera_tiny", checkpoint=sam2_ckpt, verify=False)


@pytest.fixture(scope="module")
def sam2_emb(sam2: Any) -> Any:
    return sam2.embed(_slice())


# --------------------------------------------------------------------------------------------- conversions (no model)


def test_points_and_box_are_converted_to_sam_xy() -> None:
    coords, labels = sam_points(ObjectPrompt(1, positive=((10.0, 40.0),), negative=((5.0, 7.0),)))
    assert coords is not None and labels is not None
    assert coords.tolist() == [[40.0, 10.0], [7.0, 5.0]] and labels.tolist() == [1, 0]
    assert sam_points(ObjectPrompt(1, box=(0, 0, 4, 4))) == (None, None)
    line = Stroke(((1.0, 2.0), (3.0, 4.0), (5.0, 6.0), (7.0, 8.0), (9.0, 10.0)), positive=False)
    coords, labels = sam_points(ObjectPrompt(1, strokes=(line,)))  # a stroke: its ends and middle, (x, y)
    assert coords is not None and labels is not None
    assert coords.tolist() == [[2.0, 1.0], [6.0, 5.0], [10.0, 9.0]] and labels.tolist() == [0, 0, 0]
    # corners are pixel edges in fmscope; SAM's box runs from the first to the last covered pixel, x first
    assert sam_box((2.0, 3.0, 12.0, 20.0)).tolist() == [3.0, 2.0, 19.0, 11.0]


def test_mask_prompt_becomes_padded_low_res_logits() -> None:
    mask = np.zeros((48, 64), bool)
    mask[:24, :32] = True  # top-left quarter
    logits = mask_to_logits(mask, (192, 256))  # a 48x64 slice fills 192x256 of SAM's 256x256 logit grid
    assert logits.shape == (1, 256, 256) and logits.dtype == np.float32
    assert logits[0, 50, 60] > 0 > logits[0, 150, 200]
    assert (logits[0, 192:] < 0).all()  # the padding is background


# --------------------------------------------------------------------------------------------- SAM v1


@pytest.mark.slow
def test_sam_embedding_records_the_transform(sam: Any, sam_emb: Any) -> None:
    assert isinstance(sam, PromptableModel) and sam.name == "sam"
    assert tuple(sam_emb.features.shape) == (1, 256, 64, 64)
    assert sam_emb.original_size == (48, 64) and sam_emb.input_size == (768, 1024) and sam_emb.scale == 16.0
    assert sam_emb.profile["source_dtype"] == "uint16" and sam_emb.profile["low"] < sam_emb.profile["high"]


@pytest.mark.slow
@pytest.mark.parametrize(
    ("prompt", "candidates"),
    [
        (ObjectPrompt(1, positive=((20.0, 40.0),)), 3),  # one click: best of three
        (ObjectPrompt(1, box=(10.0, 28.0, 31.0, 53.0)), 1),
        (ObjectPrompt(1, positive=((20.0, 40.0),), negative=((5.0, 5.0),)), 1),
    ],
)
def test_sam_predict(sam: Any, sam_emb: Any, prompt: ObjectPrompt, candidates: int) -> None:
    result = sam.predict(sam_emb, prompt)
    assert isinstance(result, PromptMask)
    assert result.mask.shape == (48, 64) and result.mask.dtype == np.bool_
    assert 0.0 <= result.score <= 1.0
    assert result.info["candidates"] == candidates and result.info["low_res_logits"].shape == (256, 256)


@pytest.mark.slow
def test_sam_mask_prompt(sam: Any, sam_emb: Any) -> None:
    mask = np.zeros((48, 64), bool)
    mask[12:29, 32:49] = True
    result = sam.predict(sam_emb, ObjectPrompt(1, positive=((20.0, 40.0),)), mask=mask)
    assert result.mask.shape == (48, 64) and result.info["multimask"] is False
    with pytest.raises(InvalidInputError, match="boolean mask of shape"):
        sam.predict(sam_emb, ObjectPrompt(1, positive=((20.0, 40.0),)), mask=mask[:10])


@pytest.mark.slow
def test_sam_receives_points_in_xy_order(sam: Any, sam_emb: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: dict[str, torch.Tensor] = {}
    predictor = sam._predictor
    original = predictor.predict_torch

    def spy(point_coords: torch.Tensor, point_labels: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
        seen["coords"], seen["labels"] = point_coords, point_labels
        return original(point_coords, point_labels, *args, **kwargs)

    monkeypatch.setattr(predictor, "predict_torch", spy)
    sam.predict(sam_emb, ObjectPrompt(1, positive=((10.0, 40.0),)))
    # (y, x) = (10, 40) on a 48x64 slice scaled by 16: x = 640, y = 160 in SAM's 1024 frame
    assert seen["coords"].tolist() == [[[640.0, 160.0]]] and seen["labels"].tolist() == [[1]]


@pytest.mark.slow
def test_sam_automatic_gives_a_label_image(sam: Any, sam_emb: Any) -> None:
    labels = sam.automatic(sam_emb, points_per_side=2, pred_iou_thresh=0.0, stability_score_thresh=0.0)
    assert labels.shape == (48, 64) and labels.dtype == np.int32
    ids = np.unique(labels[labels > 0])
    assert ids.tolist() == list(range(1, len(ids) + 1))  # consecutive ids
    with pytest.raises(InvalidInputError, match="points_per_side"):
        sam.automatic(sam_emb, points_per_side=0)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("image", "prompt", "message"),
    [
        (np.zeros((3, 48, 64), np.uint16), None, r"is 3D; SAM segments 2D slices, use propagation"),
        (None, ObjectPrompt(1, text="mitochondrion"), "grounding model"),
        (None, ObjectPrompt(1, negative=((3.0, 3.0),)), "needs a positive point, a positive stroke, a box or a mask"),
    ],
)
def test_sam_refuses(sam: Any, sam_emb: Any, image: Any, prompt: Any, message: str) -> None:
    with pytest.raises(InvalidInputError, match=message):
        if image is not None:
            sam.embed(image)
        else:
            sam.predict(sam_emb, prompt)


# --------------------------------------------------------------------------------------------- checkpoints


def test_missing_checkpoint_names_file_folder_and_url(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from fmscope.interactive.sam_backend import SamPrompter

    monkeypatch.setenv("FMSCOPE_CACHE", str(tmp_path))
    assert ck.cache_dir() == tmp_path
    with pytest.raises(ck.CheckpointNotFoundError) as err:
        SamPrompter("vit_b")
    msg = str(err.value)
    assert "sam_vit_b_01ec64.pth" in msg and str(tmp_path) in msg and ck.KNOWN_CHECKPOINTS["vit_b"].url in msg
    assert isinstance(err.value, FileNotFoundError)
    with pytest.raises(ck.CheckpointNotFoundError, match="does not exist"):
        ck.resolve_checkpoint("vit_b", tmp_path / "nowhere.pth")
    with pytest.raises(InvalidInputError, match="unknown sam model 'vit_x'"):
        SamPrompter("vit_x")


@pytest.mark.slow
def test_truncated_checkpoint_is_refused(sam_ckpt: Path, tmp_path: Path) -> None:
    from fmscope.interactive.sam_backend import SamPrompter

    data = sam_ckpt.read_bytes()
    half = tmp_path / "sam_vit_b_01ec64.pth"
    half.write_bytes(data[: len(data) // 2])
    with pytest.raises(FileFormatError, match=r"expected 375042383 bytes .*truncated"):
        SamPrompter(checkpoint=half)  # the official name: its size is checked first
    with pytest.raises(FileFormatError, match=r"torch.load cannot read it.*truncated or corrupt") as err:
        SamPrompter(checkpoint=half, verify=False)
    assert str(half) in str(err.value)


@pytest.mark.slow
def test_checkpoint_of_another_model_is_refused(sam_ckpt: Path, sam2_ckpt: Path) -> None:
    from fmscope.interactive.sam2_backend import Sam2Prompter
    from fmscope.interactive.sam_backend import SamPrompter

    with pytest.raises(FileFormatError, match=r"holds SAM vit_b weights, not SAM vit_l.*model='vit_b'"):
        SamPrompter("vit_l", checkpoint=sam_ckpt, verify=False)
    with pytest.raises(FileFormatError, match=r"expected a SAM state dict.*SAM2\.1 hiera_tiny"):
        SamPrompter("vit_b", checkpoint=sam2_ckpt, verify=False)
    with pytest.raises(FileFormatError, match=r"holds SAM vit_b weights, not SAM2\.1 hiera_tiny"):
        Sam2Prompter(checkpoint=sam_ckpt, verify=False)
    with pytest.raises(FileFormatError, match=r"holds SAM2\.1 hiera_tiny weights, not SAM2\.1 hiera_large"):
        Sam2Prompter("sam2.1_hiera_large", checkpoint=sam2_ckpt, verify=False)


def test_missing_packages_say_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    from fmscope.errors import MissingDependencyError
    from fmscope.interactive import sam2_backend, sam_backend

    monkeypatch.setitem(sys.modules, "segment_anything", None)  # makes the import fail
    with pytest.raises(MissingDependencyError, match=r"fmscope\[sam\]"):
        sam_backend._import_segment_anything()
    monkeypatch.setitem(sys.modules, "sam2.build_sam", None)
    with pytest.raises(MissingDependencyError, match="--no-deps --no-build-isolation sam2==1.1.0"):
        sam2_backend._import_sam2()


def test_strict_load_lists_the_differences(tmp_path: Path) -> None:
    model = torch.nn.Sequential(torch.nn.Linear(3, 4))
    state = {"0.weight": torch.zeros(5, 3), "extra": torch.zeros(1)}
    with pytest.raises(FileFormatError, match=r"1 missing .*0\.bias.*1 unexpected .*extra.*1 shape mismatches"):
        ck.load_weights(model, state, tmp_path / "x.pt", "tiny")


def test_verify_checkpoint_size_and_sha256(tmp_path: Path) -> None:
    path = tmp_path / "w.pt"
    path.write_bytes(b"0123456789")
    good = ck.KnownCheckpoint("t", "sam", "vit_b", "w.pt", 10, ck.file_sha256(path), "https://example/w.pt")
    ck.verify_checkpoint(path, good, sha256=True)
    with pytest.raises(FileFormatError, match="SHA-256"):
        ck.verify_checkpoint(path, ck.KnownCheckpoint(**{**good.to_dict(), "sha256": "0" * 64}), sha256=True)
    with pytest.raises(FileFormatError, match="10 bytes, expected 11 bytes"):
        ck.verify_checkpoint(path, ck.KnownCheckpoint(**{**good.to_dict(), "size": 11}))
    ck.verify_checkpoint(path, ck.KnownCheckpoint(**{**good.to_dict(), "size": None, "sha256": None}), sha256=True)


def test_registry_is_complete() -> None:
    assert sorted(ck.KNOWN_CHECKPOINTS) == sorted(
        ["vit_b", "vit_l", "vit_h", "sam2.1_hiera_tiny", "sam2.1_hiera_small", "sam2.1_hiera_base_plus",
         "sam2.1_hiera_large"]
    )  # fmt: skip
    for c in ck.KNOWN_CHECKPOINTS.values():
        assert c.url.startswith("https://dl.fbaipublicfiles.com/") and c.url.endswith("/" + c.file_name)
        assert c.size is None or c.size > 100_000_000
        assert c.sha256 is None or (len(c.sha256) == 64 and int(c.sha256, 16) >= 0)


def test_models_command_lists_the_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any) -> None:
    monkeypatch.setenv("FMSCOPE_CACHE", str(tmp_path))
    (tmp_path / "sam2.1_hiera_tiny.pt").write_bytes(b"partial")
    parser = argparse.ArgumentParser()
    model_commands.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["models", "--json"])
    assert args.func(args) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["cache_dir"] == str(tmp_path)
    rows = {r["name"]: r for r in out["models"]}
    assert rows["sam2.1_hiera_tiny"]["present"] == "wrong size" and rows["vit_b"]["present"] == "no"
    assert rows["vit_h"]["size_mb"] == 2564.6 and rows["vit_b"]["sha256"].startswith("ec2df627")
    args = parser.parse_args(["models"])
    assert args.func(args) == 0
    table = capsys.readouterr().out
    assert "sam_vit_h_4b8939.pth" in table and str(tmp_path) in table and "wrong size" in table
    assert ck.KNOWN_CHECKPOINTS["sam2.1_hiera_large"].url in table


# --------------------------------------------------------------------------------------------- SAM2


@pytest.mark.slow
def test_sam2_embed_and_predict(sam2: Any, sam2_emb: Any) -> None:
    assert isinstance(sam2, PromptableModel) and sam2.name == "sam2"
    assert tuple(sam2_emb.image_embed.shape) == (1, 256, 64, 64) and len(sam2_emb.high_res_feats) == 2
    assert sam2_emb.original_size == (48, 64) and sam2_emb.input_size == (1024, 1024)
    mask = np.zeros((48, 64), bool)
    mask[12:29, 32:49] = True
    for prompt, prior, candidates in [
        (ObjectPrompt(1, positive=((20.0, 40.0),)), None, 3),
        (ObjectPrompt(1, box=(10.0, 28.0, 31.0, 53.0), negative=((5.0, 5.0),)), None, 1),
        (ObjectPrompt(1, positive=((20.0, 40.0),)), mask, 1),
    ]:
        result = sam2.predict(sam2_emb, prompt, mask=prior)
        assert result.mask.shape == (48, 64) and result.mask.dtype == np.bool_ and 0.0 <= result.score <= 1.0
        assert result.info["candidates"] == candidates
    with pytest.raises(InvalidInputError, match="grounding model"):
        sam2.predict(sam2_emb, ObjectPrompt(1, text="pore"))
    with pytest.raises(InvalidInputError, match="is 3D; SAM2 segments 2D slices"):
        sam2.embed(np.zeros((2, 8, 8)))


@pytest.mark.slow
def test_sam2_propagates_forward_and_backward(sam2: Any) -> None:
    volume = np.stack([_slice((40, 48), seed=z) for z in range(3)])
    prompts = [
        ObjectPrompt(3, positive=((20.0, 40.0),)),  # 2D: on the key slice
        ObjectPrompt(7, box=(1.0, 2.0, 2.0, 14.0, 20.0)),  # 3D (z, y0, x0, y1, x1): on slice 1 too
    ]
    calls: list[int] = []
    labels = sam2.propagate_video(volume, 1, prompts, progress=lambda done, total, msg="": calls.append(done))
    assert labels.shape == (3, 40, 48) and labels.dtype == np.int32
    assert set(np.unique(labels).tolist()) <= {0, 3, 7}
    assert calls == [1, 2, 3, 4]  # forward 1, 2 then backward 1, 0


@pytest.mark.slow
@pytest.mark.parametrize(
    ("volume", "key", "prompts", "message"),
    [
        (np.zeros((8, 8)), 0, [ObjectPrompt(1, positive=((1.0, 1.0),))], r"\(Z, Y, X\) stack"),
        (
            np.zeros((2, 8, 8)),
            2,
            [ObjectPrompt(1, positive=((1.0, 1.0),))],
            r"key_slice: expected an integer in \[0, 1\]",
        ),
        (np.zeros((2, 8, 8)), 0, [ObjectPrompt(1, positive=((1.0, 1.0),))] * 2, "distinct"),
        (np.zeros((2, 8, 8)), 0, [ObjectPrompt(1, text="cell")], "grounding model"),
        (np.zeros((2, 8, 8)), 0, [ObjectPrompt(1, positive=((5.0, 1.0, 1.0),))], "outside the stack"),
    ],
)
def test_sam2_propagation_refuses(sam2: Any, volume: Any, key: int, prompts: Any, message: str) -> None:
    with pytest.raises(InvalidInputError, match=message):
        sam2.propagate_video(volume, key, prompts)
