"""TAID: the loss against numpy, and t over fixed loss sequences against hand-written recurrences."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from whisperkd.distill.taid import TAID
from whisperkd.errors import UserError


def softmax(x) -> np.ndarray:
    e = np.exp(np.asarray(x, dtype=np.float64) - np.max(x))
    return e / e.sum()


def sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


TEACHER = torch.tensor([[[3.0, 0.0, -1.0, 0.5], [9.0, 9.0, 9.0, 9.0]]])
STUDENT = torch.tensor([[[0.0, 1.0, 0.0, -2.0], [-9.0, 0.0, 9.0, 0.0]]])
LABELS = torch.tensor([[2, -100]])


def test_loss_is_forward_kl_to_the_interpolated_target():
    taid = TAID(total_steps=10)
    p_t = softmax(0.6 * np.array([0.0, 1.0, 0.0, -2.0]) + 0.4 * np.array([3.0, 0.0, -1.0, 0.5]))
    q = softmax([0.0, 1.0, 0.0, -2.0])
    expected = float((p_t * np.log(p_t / q)).sum())
    assert taid.loss(TEACHER, STUDENT, LABELS).item() == pytest.approx(expected, rel=1e-5)


def test_loss_follows_t_after_it_moves():
    taid = TAID(total_steps=10)
    taid.load_state_dict({"t": 0.75, "momentum": 0.0, "prev_loss": None})
    p_t = softmax(0.25 * np.array([0.0, 1.0, 0.0, -2.0]) + 0.75 * np.array([3.0, 0.0, -1.0, 0.5]))
    q = softmax([0.0, 1.0, 0.0, -2.0])
    expected = float((p_t * np.log(p_t / q)).sum())
    assert taid.loss(TEACHER, STUDENT, LABELS).item() == pytest.approx(expected, rel=1e-5)


def test_reverse_divergence():
    taid = TAID(total_steps=10, divergence="reverse")
    p_t = softmax(0.6 * np.array([0.0, 1.0, 0.0, -2.0]) + 0.4 * np.array([3.0, 0.0, -1.0, 0.5]))
    q = softmax([0.0, 1.0, 0.0, -2.0])
    expected = float((q * np.log(q / p_t)).sum())
    assert taid.loss(TEACHER, STUDENT, LABELS).item() == pytest.approx(expected, rel=1e-5)


def test_target_is_stop_gradient_so_the_gradient_is_q_minus_p_t():
    student = STUDENT.clone().requires_grad_(True)
    TAID(total_steps=10).loss(TEACHER, student, LABELS).backward()
    p_t = softmax(0.6 * np.array([0.0, 1.0, 0.0, -2.0]) + 0.4 * np.array([3.0, 0.0, -1.0, 0.5]))
    q = softmax([0.0, 1.0, 0.0, -2.0])
    np.testing.assert_allclose(student.grad[0, 0].numpy(), q - p_t, atol=1e-6)
    assert torch.all(student.grad[0, 1] == 0)  # padding


def test_adaptive_t_over_a_fixed_loss_sequence():
    taid = TAID(total_steps=100, t_start=0.4, t_end=1.0, alpha=0.1, beta=0.9)
    # step 0: only records the loss.
    assert taid.update(0, 4.0) == 0.4
    # step 1: relative change (4 - 3) / 4 = 0.25; momentum 0.1 * 0.25; linear floor 0.406 is lower.
    m1 = 0.1 * 0.25
    t1 = 0.4 + 0.1 * sigmoid(m1) * (1 - 0.4)
    assert taid.update(1, 3.0) == pytest.approx(t1, abs=1e-12)
    assert t1 == pytest.approx(0.430375, abs=1e-5)
    # step 2: the loss rose: relative change (3 - 3.5) / 3 = -1/6.
    m2 = 0.9 * m1 + 0.1 * (-1 / 6)
    t2 = t1 + 0.1 * sigmoid(m2) * (1 - t1)
    assert taid.update(2, torch.tensor(3.5)) == pytest.approx(t2, abs=1e-12)
    # step 3: relative change (3.5 - 2) / 3.5.
    m3 = 0.9 * m2 + 0.1 * (1.5 / 3.5)
    t3 = t2 + 0.1 * sigmoid(m3) * (1 - t2)
    assert taid.update(3, 2.0) == pytest.approx(t3, abs=1e-12)
    assert taid.t == pytest.approx(t3, abs=1e-12)
    assert taid.momentum == pytest.approx(m3, abs=1e-12)


def test_linear_floor_wins_when_alpha_is_small():
    taid = TAID(total_steps=4, alpha=5e-4)
    got = [taid.update(step, loss) for step, loss in enumerate([5.0, 4.0, 3.0, 2.0, 1.0])]
    assert got == pytest.approx([0.4, 0.55, 0.7, 0.85, 1.0], abs=1e-12)


def test_t_is_capped_at_t_end():
    taid = TAID(total_steps=1000, t_start=0.4, t_end=0.5, alpha=1.0)
    taid.update(0, 4.0)
    assert taid.update(1, 2.0) == 0.5  # 0.4 + sigmoid(.) * 0.6 would pass 0.5


def test_linear_mode_ignores_the_loss():
    taid = TAID(total_steps=10, mode="linear", alpha=1.0)
    got = [taid.update(step, loss) for step, loss in enumerate([9.0, 1.0, 0.5, 0.1])]
    assert got == pytest.approx([0.4, 0.46, 0.52, 0.58], abs=1e-12)


def test_non_finite_loss_does_not_poison_the_momentum():
    taid = TAID(total_steps=100, alpha=0.1, beta=0.9)
    taid.update(0, 4.0)
    assert taid.update(1, float("nan")) == pytest.approx(0.406, abs=1e-12)  # only the linear floor moves t
    assert taid.momentum == 0.0 and taid.prev_loss == 4.0
    assert taid.update(2, 3.0) == pytest.approx(0.406 + 0.1 * sigmoid(0.1 * 0.25) * 0.594, abs=1e-12)


def test_state_dict_round_trip_resumes_identically():
    losses = [4.0, 3.2, 3.3, 2.9, 2.5, 2.6, 2.0]
    straight = TAID(total_steps=50, alpha=0.05)
    for step, loss in enumerate(losses):
        straight.update(step, loss)

    first = TAID(total_steps=50, alpha=0.05)
    for step, loss in enumerate(losses[:4]):
        first.update(step, loss)
    state = json.loads(json.dumps(first.state_dict()))  # checkpoints may go through JSON
    resumed = TAID(total_steps=50, alpha=0.05)
    resumed.load_state_dict(state)
    for step, loss in enumerate(losses[4:], start=4):
        resumed.update(step, loss)
    assert resumed.state_dict() == straight.state_dict()
    assert resumed.t > 0.4


def test_bad_settings_and_states_are_user_errors():
    with pytest.raises(UserError, match="t_end"):
        TAID(total_steps=10, t_start=0.5, t_end=0.4)
    with pytest.raises(UserError, match="total_steps"):
        TAID(total_steps=0)
    with pytest.raises(UserError, match="mode"):
        TAID(total_steps=10, mode="cosine")
    with pytest.raises(UserError, match="momentum"):
        TAID(total_steps=10).load_state_dict({"t": 0.5})
