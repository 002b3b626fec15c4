"""Pretraining losses and the EMA teacher: each reference defect (spec section 2) is shown absent."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from fmscope.errors import InvalidInputError
from fmscope.pretrain import (
    EmbeddingQueue,
    LogitScale,
    TeacherCenter,
    alignment_loss,
    clip_chance_level,
    clip_loss,
    cosine_momentum,
    distillation_loss,
    make_teacher,
    masked_tokens,
    sample_masked,
    token_distillation_loss,
    tokens_at,
    update_teacher,
)


def unit(*shape: int, seed: int = 0) -> torch.Tensor:
    return F.normalize(torch.randn(*shape, generator=torch.Generator().manual_seed(seed)), dim=-1)


# --- defect 1: CLIP must have negatives at any batch size -------------------------------------------------------


def test_clip_batch_of_one_with_queue_is_nonzero_and_trains_image_text_and_temperature() -> None:
    scale = LogitScale(10.0)
    image = unit(1, 16, seed=1).requires_grad_()
    text = unit(1, 16, seed=2).requires_grad_()
    text_queue, image_queue = EmbeddingQueue(8, 16), EmbeddingQueue(8, 16)
    text_queue.push(unit(5, 16, seed=3), torch.arange(10, 15))
    image_queue.push(unit(5, 16, seed=4), torch.arange(10, 15))
    loss = clip_loss(image, text, scale(), torch.tensor([0]), text_queue=text_queue, image_queue=image_queue)
    assert loss.item() > 0.0
    loss.backward()
    assert image.grad is not None and image.grad.abs().sum() > 0
    assert text.grad is not None and text.grad.abs().sum() > 0
    assert scale.log_scale.grad is not None and scale.log_scale.grad.abs() > 0


def test_clip_batch_of_one_without_negatives_is_zero() -> None:
    """What the reference computed at micro-batch 1: the 1x1 logits teach nothing (we avoid it with the queue)."""
    loss = clip_loss(unit(1, 8), unit(1, 8, seed=1), LogitScale()(), torch.tensor([0]))
    assert loss.item() == 0.0


def test_pairs_sharing_a_caption_are_not_negatives() -> None:
    image = unit(3, 8)
    text = unit(3, 8, seed=5)
    ids = torch.tensor([7, 7, 9])
    scale = LogitScale()()
    loss = clip_loss(image, text, scale, ids)
    # reference: rows 0 and 1 only contrast against row 2 (their same-caption partner is masked out)
    logits = scale * image @ text.T
    expected_i2t = []
    expected_t2i = []
    for i in range(3):
        keep = [j for j in range(3) if j == i or ids[j] != ids[i]]
        row = logits[i, keep]
        expected_i2t.append(-(row[keep.index(i)] - torch.logsumexp(row, 0)))
        col = logits[keep, i]
        expected_t2i.append(-(col[keep.index(i)] - torch.logsumexp(col, 0)))
    expected = 0.5 * (torch.stack(expected_i2t).mean() + torch.stack(expected_t2i).mean())
    assert torch.allclose(loss, expected, atol=1e-6)


def test_clip_chance_level_counts_valid_candidates() -> None:
    ids = torch.tensor([1, 1, 2])
    # rows with caption 1: itself + the caption-2 key = 2 candidates; the caption-2 row: itself + two keys = 3
    expected = (2 * math.log(2) + math.log(3)) / 3
    assert clip_chance_level(ids) == pytest.approx(expected)
    queue = EmbeddingQueue(4, 2)
    queue.push(torch.zeros(2, 2), torch.tensor([3, 1]))
    with_queue = clip_chance_level(ids, text_queue=queue)  # text side gains candidates, image side does not
    assert with_queue > expected
    # an uninformed model (all similarities equal) scores exactly the chance level
    loss = clip_loss(torch.zeros(3, 2) + 0.5, torch.zeros(3, 2) + 0.5, torch.tensor(1.0), ids)
    assert loss.item() == pytest.approx(expected, rel=1e-5)


def test_queue_entries_with_the_same_caption_are_masked() -> None:
    image, text = unit(1, 8), unit(1, 8, seed=1)
    queue = EmbeddingQueue(4, 8)
    queue.push(unit(2, 8, seed=2), torch.tensor([3, 3]))  # same caption as the pair
    loss = clip_loss(image, text, LogitScale()(), torch.tensor([3]), text_queue=queue)
    assert loss.item() == 0.0  # nothing left to contrast


def test_logit_scale_clamps_and_keeps_gradient_inside_range() -> None:
    scale = LogitScale(10.0, 1e-3, 100.0)
    assert math.isclose(scale().item(), 10.0, rel_tol=1e-6)
    with torch.no_grad():
        scale.log_scale.fill_(10.0)
    assert math.isclose(scale().item(), 100.0, rel_tol=1e-6)


# --- defect 6: bounded memory ----------------------------------------------------------------------------------


def test_queue_is_a_bounded_ring_buffer() -> None:
    queue = EmbeddingQueue(5, 4)
    storage = queue.embeddings.data_ptr()
    for step in range(7):
        queue.push(torch.full((2, 4), float(step)), torch.tensor([step, step]))
    emb, ids = queue.contents()
    assert emb.shape == (5, 4) and sorted(ids.tolist()) == [4, 5, 5, 6, 6]
    assert queue.embeddings.data_ptr() == storage and queue.embeddings.shape == (5, 4)  # written in place, no growth


# --- masked losses ignore unmasked voxels ----------------------------------------------------------------------


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 10_000))
def test_distillation_ignores_unmasked_voxels(seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    mask = torch.rand(2, 1, 4, 4, 4, generator=g) < 0.4
    student = torch.randn(2, 6, 4, 4, 4, generator=g)
    teacher = torch.randn(2, 6, 4, 4, 4, generator=g)
    changed = student + torch.randn(2, 6, 4, 4, 4, generator=g) * (~mask)
    assert torch.allclose(
        distillation_loss(changed, teacher, mask), distillation_loss(student, teacher, mask), atol=1e-6
    )


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 10_000), st.integers(0, 80), st.floats(0.0, 1.0))
def test_sample_masked_draws_distinct_masked_voxels(seed: int, max_tokens: int, ratio: float) -> None:
    g = torch.Generator().manual_seed(seed)
    mask = torch.rand(2, 1, 3, 4, 5, generator=g) < ratio
    features = torch.randn(2, 3, 3, 4, 5, generator=g)
    index = sample_masked(mask, max_tokens, generator=g)
    n_masked = int(mask.sum())
    assert index.numel() == (n_masked if max_tokens == 0 else min(max_tokens, n_masked))
    assert bool(mask.reshape(-1)[index].all())
    assert index.unique().numel() == index.numel() and bool((index.diff() > 0).all())
    if index.numel() == n_masked:  # every masked voxel: the same tokens as the dense gather, in the same order
        assert torch.equal(tokens_at(features, index), masked_tokens(features, mask))


def test_sampled_distillation_is_an_unbiased_estimate_of_the_full_one() -> None:
    g = torch.Generator().manual_seed(0)
    mask = torch.rand(2, 1, 8, 8, 8, generator=g) < 0.3
    student, teacher = torch.randn(2, 6, 8, 8, 8, generator=g), torch.randn(2, 6, 8, 8, 8, generator=g)
    full = float(distillation_loss(student, teacher, mask))
    draws = []
    for _ in range(400):
        index = sample_masked(mask, 16, generator=g)
        draws.append(float(token_distillation_loss(tokens_at(student, index), tokens_at(teacher, index))))
    mean, sem = float(torch.tensor(draws).mean()), float(torch.tensor(draws).std()) / 20
    assert abs(mean - full) < 4 * sem
    assert float(torch.tensor(draws).std()) > 0  # the draws differ: it is a sample, not the full set each time


def test_distillation_is_zero_when_student_equals_teacher_and_positive_otherwise() -> None:
    x = torch.randn(2, 8, 4, 4, 4)
    mask = torch.ones(2, 1, 4, 4, 4, dtype=torch.bool)
    assert distillation_loss(x, x.clone(), mask).abs().item() < 1e-6
    y = torch.randn(2, 8, 4, 4, 4, requires_grad=True)
    teacher = torch.randn(2, 8, 4, 4, 4, requires_grad=True)
    loss = distillation_loss(y, teacher, mask)
    assert loss.item() > 0
    loss.backward()
    assert y.grad is not None and teacher.grad is None  # the teacher side gets no gradient


def test_teacher_center_tracks_the_mean() -> None:
    center = TeacherCenter(4, momentum=0.0, normalize=False)
    feats = torch.arange(4.0).view(1, 4, 1, 1, 1).expand(2, 4, 3, 3, 3)
    center.update(feats)
    assert torch.allclose(center.center, torch.arange(4.0))
    center.update(torch.zeros(0, 4))  # no masked voxel in the batch: the centre stays, no NaN
    assert torch.allclose(center.center, torch.arange(4.0))


# --- defect 2 (loss side): alignment trains both sides ---------------------------------------------------------


def test_alignment_gradients_reach_the_text_side() -> None:
    image = torch.randn(3, 8, requires_grad=True)
    text = torch.randn(3, 8, requires_grad=True)
    alignment_loss(image, text).backward()
    assert image.grad is not None and text.grad is not None and text.grad.abs().sum() > 0
    assert alignment_loss(image.detach(), image.detach()).abs().item() < 1e-6


# --- defects 3 and 4: EMA over buffers, per optimiser step, cosine schedule ------------------------------------


def tiny_bn_net() -> nn.Module:
    return nn.Sequential(nn.Conv3d(1, 2, 3, padding=1), nn.BatchNorm3d(2), nn.ReLU(), nn.Conv3d(2, 1, 1))


def test_ema_covers_batchnorm_statistics() -> None:
    student = tiny_bn_net()
    teacher = make_teacher(student)
    student.train()
    student(torch.randn(4, 1, 6, 6, 6) * 3 + 2)  # moves the student's running stats
    before = teacher[1].running_mean.clone()
    update_teacher(student, teacher, momentum=0.5)
    assert not torch.equal(teacher[1].running_mean, before)
    assert torch.allclose(teacher[1].running_mean, 0.5 * before + 0.5 * student[1].running_mean)
    assert teacher[1].num_batches_tracked == student[1].num_batches_tracked


@pytest.mark.parametrize("momentum", [0.0, 0.3, 1.0])
def test_ema_formula_and_momentum_one_keeps_teacher(momentum: float) -> None:
    student, teacher = tiny_bn_net(), tiny_bn_net()
    old = {k: v.clone() for k, v in teacher.state_dict().items()}
    update_teacher(student, teacher, momentum)
    for name, value in teacher.state_dict().items():
        if value.is_floating_point():
            expected = momentum * old[name] + (1 - momentum) * student.state_dict()[name]
            assert torch.allclose(value, expected, atol=1e-6), name
    if momentum == 1.0:
        for name, value in teacher.named_parameters():
            assert torch.equal(value, old[name])


def test_teacher_has_no_gradient() -> None:
    teacher = make_teacher(tiny_bn_net())
    assert all(not p.requires_grad for p in teacher.parameters())
    out = teacher(torch.randn(1, 1, 4, 4, 4)).sum()
    assert not out.requires_grad


def test_cosine_momentum_schedule() -> None:
    assert cosine_momentum(0, 100, 0.996) == pytest.approx(0.996)
    assert cosine_momentum(50, 100, 0.996) == pytest.approx(0.998)
    assert cosine_momentum(100, 100, 0.996) == pytest.approx(1.0)
    values = [cosine_momentum(s, 100, 0.99) for s in range(101)]
    assert all(a <= b for a, b in zip(values, values[1:], strict=False))


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: cosine_momentum(1, 0), "total_steps"),
        (lambda: update_teacher(tiny_bn_net(), nn.Linear(1, 1), 0.5), "teacher"),
        (lambda: update_teacher(tiny_bn_net(), tiny_bn_net(), 1.5), "momentum"),
        (lambda: clip_loss(unit(2, 4), unit(3, 4), torch.tensor(1.0), torch.tensor([0, 1])), "embeddings"),
        (lambda: clip_loss(unit(2, 4), unit(2, 4), torch.tensor(1.0), torch.tensor([0])), "caption_ids"),
        (lambda: sample_masked(torch.ones(1, 1, 2, 2, 2), 4), "bool"),
        (lambda: sample_masked(torch.ones(1, 1, 2, 2, 2, dtype=torch.bool), -1), "max_tokens"),
        (lambda: LogitScale(1000.0), "init_scale"),
        (
            lambda: distillation_loss(
                torch.zeros(1, 2, 2), torch.zeros(1, 3, 2), torch.ones(1, 1, 2, dtype=torch.bool)
            ),
            "teacher",
        ),
    ],
)
def test_bad_inputs(call, message: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(InvalidInputError, match=message):
        call()
