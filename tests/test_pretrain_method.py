"""The multimodal method: every term switchable, every trainable part receives gradient, the teacher none."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from fmscope.data import make_block_mask
from fmscope.errors import InvalidInputError
from fmscope.pretrain.losses import alignment_loss
from fmscope.pretrain.method import LossWeights, MethodConfig, MultimodalPretrainer, caption_ids

pytest.importorskip("transformers")

CAPTIONS = ["nuclei stained with dapi", "a photo of a cat", "em volume of mitochondria"]


def batch(n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    images = torch.rand(n, 1, 32, 32, 32, generator=g)
    masks = torch.stack([make_block_mask((32, 32, 32), 8, 0.3, g) for _ in range(n)]).unsqueeze(1)
    return images, masks


def method(bert: Path | None, max_tokens: int = 8192, **weights: float) -> MultimodalPretrainer:
    config = MethodConfig(
        max_tokens=max_tokens,
        model="unet-tiny",
        weights=LossWeights(**weights),
        n_prototypes=16,
        head_hidden=8,
        embed_dim=16,
        queue_size=8,
        text_source=str(bert) if bert else "minilm",
    )
    torch.manual_seed(0)
    return MultimodalPretrainer(config)


def test_image_only_builds_no_text_tower_and_trains_the_student() -> None:
    m = method(None, align=0.0, clip=0.0)
    assert m.text_encoder is None
    images, masks = batch(2)
    terms = m(images, masks)
    assert terms.distill > 0 and terms.recon > 0 and terms.align == 0 and terms.clip == 0
    terms.total.backward()
    assert all(p.grad is not None for p in m.student.parameters() if p.requires_grad)
    assert all(p.grad is None for p in m.teacher.parameters())
    assert all(p.grad is None for p in m.teacher_head.parameters())


def test_all_four_terms_and_gradients_reach_both_sides(bert: Path) -> None:
    m = method(bert)
    m.text_encoder.set_stage("top")  # type: ignore[union-attr]
    images, masks = batch(3)
    terms = m(images, masks, CAPTIONS)
    assert min(terms.distill, terms.recon, terms.align, terms.clip) > 0
    assert terms.clip_scale == pytest.approx(10.0)
    terms.total.backward()
    optimised = m.parameters_to_optimise()
    ids = {id(p) for p in optimised}
    for name, p in m.named_parameters():
        if name.startswith(("teacher", "teacher_head")):
            assert id(p) not in ids and p.grad is None, name
    with_grad = [p for p in optimised if p.requires_grad]
    assert all(p.grad is not None for p in with_grad)
    assert m.logit_scale.log_scale.grad is not None
    text_trainable = list(m.text_encoder.parameters_to_optimise())  # type: ignore[union-attr]
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in text_trainable)


def test_batch_of_one_contrasts_against_the_queue(bert: Path) -> None:
    m = method(bert)
    first = m(*batch(1, seed=1), CAPTIONS[:1])
    assert first.clip == 0.0  # nothing to contrast yet: empty queues, one pair
    second = m(*batch(1, seed=2), CAPTIONS[1:2])
    assert second.clip > 0.0  # the previous step's pair is a negative now
    same_caption = m(*batch(1, seed=3), CAPTIONS[1:2])
    assert same_caption.clip > 0.0  # the queue still holds the other caption; the shared one is masked out


def test_optimiser_and_teacher_steps(bert: Path) -> None:
    m = method(bert)
    opt = torch.optim.AdamW(m.parameters_to_optimise(), lr=1e-2)
    teacher_before = {k: v.clone() for k, v in m.teacher.state_dict().items()}
    student_before = {k: v.clone() for k, v in m.student.state_dict().items()}
    terms = m(*batch(2), CAPTIONS[:2])
    terms.total.backward()
    opt.step()
    m.update_teacher(0.5)
    changed = [k for k, v in m.teacher.state_dict().items() if not torch.equal(v, teacher_before[k])]
    assert changed and any("running" in k or "weight" in k for k in changed)
    assert any(not torch.equal(v, student_before[k]) for k, v in m.student.state_dict().items())


def test_caption_ids_are_stable_and_missing_captions_error(bert: Path) -> None:
    assert torch.equal(caption_ids(["a", "b", "a"]), caption_ids(["a", "b", "a"]))
    assert caption_ids(["a"])[0] != caption_ids(["b"])[0]
    m = method(bert)
    with pytest.raises(InvalidInputError, match="captions"):
        m(*batch(2), None)
    with pytest.raises(InvalidInputError, match=r"captions\[1\]"):
        caption_ids(["x", None])  # the method itself trains an uncaptioned sample on the image terms only


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: LossWeights(0, 0, 0, 0), "at least one"),
        (lambda: LossWeights(distill=-1), "weights.distill"),
        (lambda: MethodConfig(queue_size=-1), "queue_size"),
        (lambda: MethodConfig(max_tokens=-1), "max_tokens"),
    ],
)
def test_bad_config(call, message: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(InvalidInputError, match=message):
        call()


def test_bad_masks() -> None:
    m = method(None, align=0.0, clip=0.0)
    images, masks = batch(1)
    with pytest.raises(InvalidInputError, match="masks"):
        m(images, masks.float())


def test_optimiser_groups_cover_the_trainable_set_with_the_right_decay_and_rates(bert: Path) -> None:
    m = method(bert)
    groups = m.optimiser_groups(lr=1e-3, weight_decay=0.05)
    grouped = [p for g in groups for p in g["params"]]  # type: ignore[attr-defined]
    assert len(grouped) == len({id(p) for p in grouped})  # no parameter twice
    assert {id(p) for p in grouped} == {id(p) for p in m.parameters_to_optimise()}
    by_param = {id(p): g for g in groups for p in g["params"]}  # type: ignore[attr-defined]
    scale = by_param[id(m.logit_scale.log_scale)]
    assert scale["weight_decay"] == 0.0 and scale["lr"] == 1e-3  # decaying log_scale would pull the scale to 1
    text_backbone = [g for g in groups if str(g["name"]).startswith("text_backbone")]
    assert text_backbone and all(g["lr"] == pytest.approx(1e-4) for g in text_backbone)  # text_lr_factor 0.1
    assert m.image_projection.bias is None


def test_embedding_similarity_is_reported(bert: Path) -> None:
    m = method(bert)
    m(*batch(2, seed=1), CAPTIONS[:2])
    terms = m(*batch(2, seed=2), CAPTIONS[1:3])
    assert -1.0 <= terms.embed_similarity <= 1.0 and terms.embed_similarity != 0.0


def test_running_standardize_removes_the_common_component() -> None:
    from fmscope.pretrain.method import RunningStandardize

    g = torch.Generator().manual_seed(0)
    common = torch.full((1, 6), 50.0)
    layer = RunningStandardize(6, momentum=0.5)
    layer.train()
    for _ in range(20):
        layer(common + torch.randn(2, 6, generator=g))
    layer(common + torch.randn(1, 6, generator=g))  # batch size 1 works in training
    layer.eval()
    x = common + torch.randn(10, 6, generator=g)
    y = torch.nn.functional.normalize(layer(x), dim=1)
    raw = torch.nn.functional.normalize(x, dim=1)
    off = ~torch.eye(10, dtype=torch.bool)
    assert (raw @ raw.T)[off].mean() > 0.99  # the common component makes raw vectors nearly parallel
    assert (y @ y.T)[off].abs().mean() < 0.5
    before = layer.running_mean.clone()
    layer(x)
    assert torch.equal(layer.running_mean, before)  # eval does not update
    assert {"running_mean", "running_var", "initialised"} <= set(layer.state_dict())


def test_image_text_terms_see_the_whole_patch(bert: Path) -> None:
    """CLIP and alignment use the unmasked patch (encoder only): a different mask changes neither term."""
    m = method(bert, distill=0.0, recon=0.0).eval()  # eval: no queue or running-statistics updates between calls
    images, masks = batch(2)
    captions = CAPTIONS[:2]
    first = m(images, masks, captions)
    other = m(images, ~masks, captions)
    assert first.clip == pytest.approx(other.clip, abs=1e-6)
    assert first.align == pytest.approx(other.align, abs=1e-6)
    expected = m.image_embedding(images)
    text = m.text_encoder(captions)  # type: ignore[misc]
    assert first.align == pytest.approx(float(alignment_loss(expected, text).detach()), abs=1e-6)


def test_heads_see_at_most_max_tokens_and_zero_means_every_masked_voxel() -> None:
    images, masks = batch(2)
    seen = []
    for max_tokens in (64, 0):
        m = method(None, max_tokens=max_tokens, align=0.0, clip=0.0)
        hook = m.student_head.register_forward_hook(lambda mod, args, out: seen.append(args[0].shape[0]))
        terms = m(images, masks)
        hook.remove()
        assert terms.distill > 0 and terms.recon > 0
    assert seen == [64, int(masks.sum())]


def test_uncaptioned_volumes_train_the_image_terms_only(bert: Path) -> None:
    images, masks = batch(3)
    m = method(bert)
    m.text_encoder.set_stage("top")  # type: ignore[union-attr]
    mixed = m(images, masks, [CAPTIONS[0], None, CAPTIONS[1]])
    assert min(mixed.distill, mixed.recon, mixed.align, mixed.clip) > 0
    assert len(m.text_queue.contents()[1]) == 2  # only the two captioned pairs entered the queue
    # the text terms equal those of the captioned images alone (eval mode: no batch statistics in the encoder)
    pair = []
    for imgs, msks, caps in ((images, masks, [CAPTIONS[0], None, CAPTIONS[1]]), (images[[0, 2]], masks[[0, 2]], None)):
        fresh = method(bert).eval()
        pair.append(fresh(imgs, msks, caps or [CAPTIONS[0], CAPTIONS[1]]))
    assert pair[0].align == pytest.approx(pair[1].align, rel=1e-5) and pair[0].clip == pytest.approx(pair[1].clip)
    none = method(bert)
    terms = none(images, masks, [None, None, None])
    assert terms.align == 0 and terms.clip == 0 and terms.distill > 0
    terms.total.backward()
    assert none.image_projection.weight.grad is None  # nothing to align: the text side is untouched
    with pytest.raises(InvalidInputError, match="one per image"):
        none(images, masks, [CAPTIONS[0]])
