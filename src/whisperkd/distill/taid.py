"""TAID: Temporally Adaptive Interpolated Distillation (Shing et al., ICLR 2025).

The student learns from an intermediate target p_t = softmax((1 - t) * stopgrad(s) + t * teacher),
and t moves from ``t_start`` to ``t_end`` during training: at least as fast as the linear schedule,
faster while the loss keeps falling. The update follows the official SakanaAI/TAID code
(``src/distil_losses/taid.py``); docs/losses.md gives the algorithm and the two small deviations.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from whisperkd.distill.losses import check_logits, masked_token_mean, token_mask
from whisperkd.errors import UserError

MODES = ("adaptive", "linear")
DIVERGENCES = ("forward", "reverse")
RELATIVE_EPS = 1e-15


class TAID:
    """Interpolation parameter t, its momentum, and the loss against the interpolated target."""

    def __init__(
        self,
        *,
        total_steps: int,
        t_start: float = 0.4,
        t_end: float = 1.0,
        alpha: float = 5e-4,
        beta: float = 0.99,
        mode: str = "adaptive",
        divergence: str = "forward",
    ) -> None:
        if total_steps < 1:
            raise UserError(f"taid.total_steps: got {total_steps}; use the number of optimizer steps (>= 1)")
        if not 0.0 <= t_start < 1.0:
            raise UserError(f"taid.t_start: got {t_start}; use a value in [0, 1)")
        if not t_start < t_end <= 1.0:
            raise UserError(f"taid.t_end: got {t_end}; use a value in (t_start, 1]")
        if not 0.0 <= alpha <= 1.0:
            raise UserError(f"taid.alpha: got {alpha}; use a value in [0, 1] (official default 5e-4)")
        if not 0.0 <= beta < 1.0:
            raise UserError(f"taid.beta: got {beta}; use a value in [0, 1) (official default 0.99)")
        if mode not in MODES:
            raise UserError(f"taid.mode: got {mode!r}; use one of {', '.join(MODES)}")
        if divergence not in DIVERGENCES:
            raise UserError(f"taid.divergence: got {divergence!r}; use one of {', '.join(DIVERGENCES)}")
        self.total_steps = int(total_steps)
        self.t_start, self.t_end = float(t_start), float(t_end)
        self.alpha, self.beta = float(alpha), float(beta)
        self.mode, self.divergence = mode, divergence
        self.t = self.t_start
        self.momentum = 0.0
        self.prev_loss: float | None = None

    def linear_t(self, step: int) -> float:
        """The linear schedule t_start + (t_end - t_start) * step / total_steps, capped at t_end."""
        progress = step / self.total_steps
        return min(self.t_end, self.t_start + (self.t_end - self.t_start) * progress)

    def target_logprobs(self, teacher_logits: torch.Tensor, student_logits: torch.Tensor) -> torch.Tensor:
        """log p_t: log_softmax of (1 - t) * student (no gradient) + t * teacher, in float32."""
        mixed = (1.0 - self.t) * student_logits.detach().float() + self.t * teacher_logits.detach().float()
        return F.log_softmax(mixed, dim=-1)

    def loss(
        self, teacher_logits: torch.Tensor, student_logits: torch.Tensor, labels_or_mask: torch.Tensor
    ) -> torch.Tensor:
        """KL(p_t || student) (``divergence="forward"``) or KL(student || p_t), averaged over counted tokens."""
        check_logits(teacher_logits, student_logits)
        log_p = self.target_logprobs(teacher_logits, student_logits)
        log_q = F.log_softmax(student_logits.float(), dim=-1)
        if self.divergence == "forward":
            per_token = (log_p.exp() * (log_p - log_q)).sum(-1)
        else:
            per_token = (log_q.exp() * (log_q - log_p)).sum(-1)
        return masked_token_mean(per_token, token_mask(labels_or_mask))

    def update(self, step: int, loss_value: float | torch.Tensor) -> float:
        """Move t after the loss of optimizer step ``step`` (0-based); returns the new t.

        The first call only records the loss. A non-finite loss leaves the momentum alone.
        """
        loss = float(loss_value.detach().item() if isinstance(loss_value, torch.Tensor) else loss_value)
        floor = self.linear_t(step)
        if self.prev_loss is None:
            if math.isfinite(loss):
                self.prev_loss = loss
            return self.t
        if not math.isfinite(loss):
            self.t = min(self.t_end, max(self.t, floor))
            return self.t
        relative_change = (self.prev_loss - loss) / (self.prev_loss + RELATIVE_EPS)
        self.momentum = self.beta * self.momentum + (1.0 - self.beta) * relative_change
        if self.mode == "linear":
            self.t = floor
        else:
            delta = self.alpha * _sigmoid(self.momentum) * (1.0 - self.t)
            self.t = min(self.t_end, max(floor, self.t + delta))
        self.prev_loss = loss
        return self.t

    def state_dict(self) -> dict:
        """Everything needed to resume: t, momentum, previous loss, and the settings (for the record)."""
        return {
            "t": self.t,
            "momentum": self.momentum,
            "prev_loss": self.prev_loss,
            "total_steps": self.total_steps,
            "t_start": self.t_start,
            "t_end": self.t_end,
            "alpha": self.alpha,
            "beta": self.beta,
            "mode": self.mode,
            "divergence": self.divergence,
        }

    def load_state_dict(self, state: dict) -> None:
        """Restore t, momentum and previous loss; the settings stay those given to the constructor."""
        missing = [key for key in ("t", "momentum", "prev_loss") if key not in state]
        if missing:
            raise UserError(f"TAID state: missing {', '.join(missing)}; the checkpoint was not written by TAID")
        self.t = float(state["t"])
        self.momentum = float(state["momentum"])
        self.prev_loss = None if state["prev_loss"] is None else float(state["prev_loss"])


def _sigmoid(x: float) -> float:
    if x >= 0:
        return 1.0 / (1.0 + math.exp(-x))
    z = math.exp(x)
    return z / (1.0 + z)
