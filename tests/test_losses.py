"""Each loss against numbers worked out by hand (math / numpy), never against itself."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from whisperkd.distill.losses import (
    alignment_loss,
    cross_entropy,
    kl_divergence,
    kl_divergence_topk,
    linear_warmup_weight,
    token_mask,
)
from whisperkd.errors import UserError


def np_log_softmax(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    m = x.max(-1, keepdims=True)
    return x - m - np.log(np.exp(x - m).sum(-1, keepdims=True))


def np_kl(p_logits, q_logits, temperature=1.0) -> float:
    log_p = np_log_softmax(np.asarray(p_logits) / temperature)
    log_q = np_log_softmax(np.asarray(q_logits) / temperature)
    return float((np.exp(log_p) * (log_p - log_q)).sum())


# ---- cross-entropy ---------------------------------------------------------------------------


def test_cross_entropy_is_mean_nll_over_labelled_tokens():
    logits = torch.tensor([[[1.0, 2.0, 3.0, 4.0], [9.0, -9.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]]])
    labels = torch.tensor([[2, -100, 0]])
    nll_0 = -(3.0 - math.log(math.exp(1) + math.exp(2) + math.exp(3) + math.exp(4)))
    nll_2 = math.log(4.0)  # uniform over 4
    assert cross_entropy(logits, labels).item() == pytest.approx((nll_0 + nll_2) / 2, abs=1e-6)


def test_cross_entropy_with_no_labelled_token_is_zero_not_nan():
    logits = torch.randn(1, 2, 5, requires_grad=True)
    loss = cross_entropy(logits, torch.full((1, 2), -100))
    assert loss.item() == 0.0
    loss.backward()
    assert torch.all(logits.grad == 0)


# ---- KL ----------------------------------------------------------------------------------------


def test_kl_uses_temperature_squared_and_skips_padding():
    teacher = torch.tensor([[[2.0, 0.0, -1.0], [50.0, -50.0, 0.0]]])
    student = torch.tensor([[[0.0, 1.0, 0.5], [-50.0, 50.0, 0.0]]])
    labels = torch.tensor([[1, -100]])
    # Only position 0 counts. At T = 2 the hand value is KL(softmax(t/2) || softmax(s/2)) * 4.
    p = np.exp([1.0, 0.0, -0.5]) / np.exp([1.0, 0.0, -0.5]).sum()
    q = np.exp([0.0, 0.5, 0.25]) / np.exp([0.0, 0.5, 0.25]).sum()
    expected = 4.0 * float((p * np.log(p / q)).sum())
    assert kl_divergence(teacher, student, labels, temperature=2.0).item() == pytest.approx(expected, rel=1e-5)
    mask = torch.tensor([[True, False]])
    assert kl_divergence(teacher, student, mask, temperature=2.0).item() == pytest.approx(expected, rel=1e-5)
    # T = 1 gives a different number: the temperature really is applied.
    expected_t1 = np_kl([2.0, 0.0, -1.0], [0.0, 1.0, 0.5])
    assert kl_divergence(teacher, student, labels, temperature=1.0).item() == pytest.approx(expected_t1, rel=1e-5)
    assert expected_t1 != pytest.approx(expected, rel=1e-2)


def test_kl_averages_over_tokens_of_the_whole_batch():
    torch.manual_seed(0)
    teacher, student = torch.randn(2, 3, 7), torch.randn(2, 3, 7)
    labels = torch.tensor([[1, 2, -100], [3, -100, -100]])
    counted = [(0, 0), (0, 1), (1, 0)]
    expected = sum(np_kl(teacher[b, i].numpy(), student[b, i].numpy()) for b, i in counted) / 3
    assert kl_divergence(teacher, student, labels, 1.0).item() == pytest.approx(expected, rel=1e-5)


def test_kl_is_zero_for_identical_logits_and_gradient_only_reaches_student():
    logits = torch.randn(1, 4, 9)
    teacher = logits.clone().requires_grad_(True)
    student = logits.clone().requires_grad_(True)
    loss = kl_divergence(teacher, student, torch.ones(1, 4, dtype=torch.long), 3.0)
    assert loss.item() == pytest.approx(0.0, abs=1e-6)
    loss.backward()
    assert teacher.grad is None and student.grad is not None


def test_kl_refuses_different_vocabularies_and_bad_temperature():
    with pytest.raises(UserError, match="vocabulary"):
        kl_divergence(torch.zeros(1, 2, 5), torch.zeros(1, 2, 6), torch.ones(1, 2, dtype=torch.bool))
    with pytest.raises(UserError, match="temperature"):
        kl_divergence(torch.zeros(1, 2, 5), torch.zeros(1, 2, 5), torch.ones(1, 2, dtype=torch.bool), 0.0)
    with pytest.raises(UserError, match="mask"):
        token_mask(torch.ones(2, 2))


# ---- top-k KL ----------------------------------------------------------------------------------


def test_topk_bucket_by_hand_at_temperature_two():
    # Teacher distribution at T=2 is p = [0.5, 0.3, 0.15, 0.05]; the cache keeps the top 2 (ids 0, 1).
    topk_logprobs = torch.log(torch.tensor([[[0.5, 0.3]]]))
    topk_indices = torch.tensor([[[0, 1]]])
    student = torch.tensor([[[2.0, 0.0, -2.0, 4.0]]])
    q = np.exp(np.array([1.0, 0.0, -1.0, 2.0]))  # softmax(student / 2)
    q = q / q.sum()
    head = 0.5 * math.log(0.5 / q[0]) + 0.3 * math.log(0.3 / q[1])
    tail = 0.2 * math.log(0.2 / (q[2] + q[3]))
    expected = 4.0 * (head + tail)
    mask = torch.ones(1, 1, dtype=torch.bool)
    got = kl_divergence_topk(topk_logprobs, topk_indices, student, mask, temperature=2.0)
    assert got.item() == pytest.approx(expected, rel=1e-5)

    p_hat = np.array([0.5, 0.3]) / 0.8
    q_hat = q[:2] / q[:2].sum()
    expected_renorm = 4.0 * float((p_hat * np.log(p_hat / q_hat)).sum())
    got = kl_divergence_topk(topk_logprobs, topk_indices, student, mask, 2.0, tail="renormalize")
    assert got.item() == pytest.approx(expected_renorm, rel=1e-5)


def test_topk_with_k_equal_to_vocab_is_the_full_kl():
    torch.manual_seed(1)
    teacher, student = torch.randn(2, 3, 11) * 3, torch.randn(2, 3, 11) * 3
    labels = torch.tensor([[5, 6, -100], [1, -100, -100]])
    temperature = 1.5
    logprobs = torch.log_softmax(teacher / temperature, dim=-1)
    values, indices = logprobs.topk(11, dim=-1)
    full = kl_divergence(teacher, student, labels, temperature)
    for tail in ("bucket", "renormalize"):
        approx = kl_divergence_topk(values, indices, student, labels, temperature, tail=tail)
        assert approx.item() == pytest.approx(full.item(), rel=1e-5)


def test_topk_bucket_is_close_and_never_above_full_kl_for_a_peaked_teacher():
    torch.manual_seed(2)
    vocab = 200
    teacher = torch.randn(1, 6, vocab)
    teacher[..., 7] += 12.0  # the teacher is sure of token 7
    student = torch.randn(1, 6, vocab)
    mask = torch.ones(1, 6, dtype=torch.bool)
    values, indices = torch.log_softmax(teacher, dim=-1).topk(5, dim=-1)
    full = kl_divergence(teacher, student, mask, 1.0).item()
    bucket = kl_divergence_topk(values, indices, student, mask, 1.0).item()
    assert bucket <= full + 1e-6  # merging outcomes can only lower a KL
    assert bucket == pytest.approx(full, rel=2e-2)


def test_topk_gradient_is_finite_when_k_equals_vocab():
    teacher = torch.randn(1, 2, 6)
    student = torch.randn(1, 2, 6, requires_grad=True)
    values, indices = torch.log_softmax(teacher, -1).topk(6, -1)
    kl_divergence_topk(values, indices, student, torch.ones(1, 2, dtype=torch.bool)).backward()
    assert torch.isfinite(student.grad).all()


def test_topk_refuses_mismatched_cache():
    with pytest.raises(UserError, match="tail"):
        kl_divergence_topk(torch.zeros(1, 1, 2), torch.zeros(1, 1, 2, dtype=torch.long), torch.zeros(1, 1, 4),
                           torch.ones(1, 1, dtype=torch.bool), tail="drop")
    with pytest.raises(UserError, match="positions"):
        kl_divergence_topk(torch.zeros(1, 3, 2), torch.zeros(1, 3, 2, dtype=torch.long), torch.zeros(1, 1, 4),
                           torch.ones(1, 1, dtype=torch.bool))


# ---- warm-up -----------------------------------------------------------------------------------


def test_linear_warmup_weight():
    assert linear_warmup_weight(0, 2.0, 4) == 0.0
    assert linear_warmup_weight(1, 2.0, 4) == 0.5
    assert linear_warmup_weight(3, 2.0, 4) == 1.5
    assert linear_warmup_weight(4, 2.0, 4) == 2.0
    assert linear_warmup_weight(100, 2.0, 4) == 2.0
    assert linear_warmup_weight(0, 2.0, 0) == 2.0
    with pytest.raises(UserError, match="warmup_steps"):
        linear_warmup_weight(0, 1.0, -1)


# ---- hidden-state alignment --------------------------------------------------------------------


def test_geodesic_angles_by_hand_and_padding_skipped():
    student = torch.tensor([[[1.0, 0.0], [3.0, 0.0], [1.0, 0.0]]])
    teacher = torch.tensor([[[0.0, 2.0], [1.0, 1.0], [-1.0, 0.0]]])
    mask = torch.tensor([[True, True, False]])
    expected = (math.pi / 2 + math.pi / 4) / 2
    assert alignment_loss(student, teacher, mask, "geodesic").item() == pytest.approx(expected, rel=1e-6)
    expected_cos = ((1 - 0.0) + (1 - 1 / math.sqrt(2))) / 2
    assert alignment_loss(student, teacher, mask, "cosine").item() == pytest.approx(expected_cos, rel=1e-6)
    # mse: position 0 -> (1 + 4) / 2, position 1 -> (4 + 1) / 2, averaged over features and positions.
    assert alignment_loss(student, teacher, mask, "mse").item() == pytest.approx(2.5, rel=1e-6)


def test_geodesic_at_the_clamp_identical_and_opposite_vectors_with_finite_gradient():
    clamp32 = float(np.float32(1.0 - 1e-6))  # the clamp as float32 holds it
    student = torch.tensor([[[0.3, -1.2, 2.0], [0.3, -1.2, 2.0]]], requires_grad=True)
    teacher = torch.tensor([[[0.6, -2.4, 4.0], [-0.3, 1.2, -2.0]]])
    identical = alignment_loss(student, teacher, torch.tensor([[True, False]]), "geodesic")
    opposite = alignment_loss(student, teacher, torch.tensor([[False, True]]), "geodesic")
    assert identical.item() == pytest.approx(math.acos(clamp32), rel=1e-4)
    assert opposite.item() == pytest.approx(math.acos(-clamp32), rel=1e-6)
    assert 1.4e-3 < identical.item() < 1.5e-3  # acos(1 - 1e-6) = 1.414e-3
    (identical + opposite).backward()
    assert torch.isfinite(student.grad).all()


def test_geodesic_gradient_finite_for_a_zero_vector():
    student = torch.zeros(1, 1, 4, requires_grad=True)
    alignment_loss(student, torch.ones(1, 1, 4), None, "geodesic").backward()
    assert torch.isfinite(student.grad).all()


def test_alignment_refuses_unknown_kind_and_width_mismatch():
    with pytest.raises(UserError, match="kind"):
        alignment_loss(torch.zeros(1, 1, 2), torch.zeros(1, 1, 2), None, "l1")
    with pytest.raises(UserError, match="project"):
        alignment_loss(torch.zeros(1, 1, 2), torch.zeros(1, 1, 3), None, "mse")
