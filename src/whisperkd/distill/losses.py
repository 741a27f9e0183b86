"""Distillation losses: plain functions on tensors, each returning a scalar computed in float32.

Shapes: logits are ``(B, L, V)``; ``logits[b, i]`` predicts ``labels[b, i]`` (the HF Whisper
convention: the model shifts labels right to build its decoder inputs). Hidden states are ``(B, L, D)``.
A token counts when its label is not -100 (or its mask entry is True). Averages are over counted
tokens; a batch with none gives 0, not NaN. Exact formulas: docs/losses.md.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from whisperkd.errors import UserError

IGNORE_INDEX = -100
GEODESIC_CLAMP = 1.0 - 1e-6
ALIGNMENT_KINDS = ("geodesic", "cosine", "mse")
TOPK_TAILS = ("bucket", "renormalize")


def token_mask(labels_or_mask: torch.Tensor) -> torch.Tensor:
    """Bool mask of counted tokens: a bool tensor is taken as is, an integer one as labels (-100 = skip)."""
    if labels_or_mask.dtype == torch.bool:
        return labels_or_mask
    if not labels_or_mask.dtype.is_floating_point and not labels_or_mask.dtype.is_complex:
        return labels_or_mask != IGNORE_INDEX
    raise UserError(
        f"mask: got dtype {labels_or_mask.dtype}; pass a bool mask or integer labels with -100 for padding"
    )


def masked_token_mean(per_token: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of ``per_token`` (B, L) over True entries of ``mask``; 0 when there are none."""
    if per_token.shape != mask.shape:
        raise UserError(f"mask: shape {tuple(mask.shape)} does not match the tokens {tuple(per_token.shape)}")
    weights = mask.to(per_token.dtype)
    return (per_token * weights).sum() / weights.sum().clamp_min(1.0)


def _check_temperature(temperature: float) -> None:
    if not temperature > 0:
        raise UserError(f"temperature: got {temperature}; use a positive number such as 1.0 or 2.0")


def check_logits(teacher_logits: torch.Tensor, student_logits: torch.Tensor) -> None:
    """Refuse teacher and student logits of different vocabularies or shapes."""
    if teacher_logits.shape[-1] != student_logits.shape[-1]:
        raise UserError(
            f"vocabulary: teacher has {teacher_logits.shape[-1]} logits, student {student_logits.shape[-1]}; "
            "KL needs a shared tokenizer (use sequence-level KD with cross-entropy only)"
        )
    if teacher_logits.shape != student_logits.shape:
        raise UserError(
            f"logits: teacher {tuple(teacher_logits.shape)} and student {tuple(student_logits.shape)} differ; "
            "run both on the same decoder inputs"
        )


def cross_entropy(student_logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean negative log-likelihood of ``labels`` over tokens whose label is not -100."""
    logits = student_logits.float().reshape(-1, student_logits.shape[-1])
    targets = labels.reshape(-1).long()
    total = F.cross_entropy(logits, targets, ignore_index=IGNORE_INDEX, reduction="sum")
    return total / (targets != IGNORE_INDEX).sum().clamp_min(1)


def kl_divergence(
    teacher_logits: torch.Tensor,
    student_logits: torch.Tensor,
    labels_or_mask: torch.Tensor,
    temperature: float = 1.0,
) -> torch.Tensor:
    """KL(softmax(t/T) || softmax(s/T)) * T^2, summed over the vocabulary, averaged over counted tokens."""
    _check_temperature(temperature)
    check_logits(teacher_logits, student_logits)
    log_p = F.log_softmax(teacher_logits.detach().float() / temperature, dim=-1)
    log_q = F.log_softmax(student_logits.float() / temperature, dim=-1)
    p = log_p.exp()
    per_token = torch.where(p > 0, p * (log_p - log_q), torch.zeros_like(p)).sum(-1)
    return masked_token_mean(per_token, token_mask(labels_or_mask)) * temperature**2


def kl_divergence_topk(
    teacher_topk_logprobs: torch.Tensor,
    teacher_topk_indices: torch.Tensor,
    student_logits: torch.Tensor,
    labels_or_mask: torch.Tensor,
    temperature: float = 1.0,
    tail: str = "bucket",
) -> torch.Tensor:
    """KL from a cached top-k teacher: log-probs at temperature T over k token ids per position.

    ``tail="bucket"``: sum_topk p (log p - log q) + p_tail (log p_tail - log q_tail), where the tail is
    everything outside the teacher's top k (p_tail = 1 - sum_topk p). It equals the full KL when
    k = vocab and is never above it. ``tail="renormalize"``: KL between both distributions restricted
    to the top k and renormalised. Both are multiplied by T^2 and averaged over counted tokens.
    """
    _check_temperature(temperature)
    if tail not in TOPK_TAILS:
        raise UserError(f"tail: got {tail!r}; use one of {', '.join(TOPK_TAILS)}")
    if teacher_topk_logprobs.shape != teacher_topk_indices.shape:
        raise UserError(
            f"teacher cache: log-probs {tuple(teacher_topk_logprobs.shape)} and indices "
            f"{tuple(teacher_topk_indices.shape)} differ; rebuild the teacher cache"
        )
    if teacher_topk_indices.shape[:-1] != student_logits.shape[:-1]:
        raise UserError(
            f"teacher cache: positions {tuple(teacher_topk_indices.shape[:-1])} do not match the student's "
            f"{tuple(student_logits.shape[:-1])}; rebuild the cache for these labels"
        )
    vocab, k = student_logits.shape[-1], teacher_topk_indices.shape[-1]
    if k > vocab:
        raise UserError(f"teacher cache: top-k {k} exceeds the student vocabulary {vocab}; check the tokenizer")
    scaled = student_logits.float() / temperature
    log_z = torch.logsumexp(scaled, dim=-1, keepdim=True)
    index = teacher_topk_indices.long()
    log_q = scaled.gather(-1, index) - log_z
    log_p = teacher_topk_logprobs.detach().float()
    if tail == "renormalize":
        log_p = log_p - torch.logsumexp(log_p, dim=-1, keepdim=True)
        log_q = log_q - torch.logsumexp(log_q, dim=-1, keepdim=True)
    p = log_p.exp()
    per_token = (p * (log_p - log_q)).sum(-1)
    if tail == "bucket" and k < vocab:
        p_tail = (1.0 - p.sum(-1)).clamp(0.0, 1.0)
        log_q_tail = torch.logsumexp(scaled.scatter(-1, index, float("-inf")), dim=-1) - log_z.squeeze(-1)
        log_p_tail = p_tail.clamp_min(torch.finfo(torch.float32).tiny).log()
        per_token = per_token + torch.where(p_tail > 0, p_tail * (log_p_tail - log_q_tail), 0.0)
    return masked_token_mean(per_token, token_mask(labels_or_mask)) * temperature**2


def linear_warmup_weight(step: int, weight: float, warmup_steps: int) -> float:
    """Loss weight rising linearly from 0 at step 0 to ``weight`` at ``warmup_steps`` and after."""
    if warmup_steps < 0:
        raise UserError(f"warmup_steps: got {warmup_steps}; use 0 (no warm-up) or a positive step count")
    if warmup_steps == 0 or step >= warmup_steps:
        return float(weight)
    return float(weight) * max(step, 0) / warmup_steps


def alignment_loss(
    student_h: torch.Tensor,
    teacher_h: torch.Tensor,
    labels_or_mask: torch.Tensor | None,
    kind: str = "geodesic",
) -> torch.Tensor:
    """Hidden-state distance averaged over counted positions (all positions when the mask is None).

    geodesic: angle acos(cos) between the unit vectors, cos clamped to +-(1 - 1e-6);
    cosine: 1 - cos; mse: squared error averaged over positions and features.
    """
    if kind not in ALIGNMENT_KINDS:
        raise UserError(f"alignment kind: got {kind!r}; use one of {', '.join(ALIGNMENT_KINDS)}")
    if student_h.shape != teacher_h.shape:
        raise UserError(
            f"hidden states: student {tuple(student_h.shape)} vs teacher {tuple(teacher_h.shape)}; "
            "project the student states to the teacher width first"
        )
    s, t = student_h.float(), teacher_h.detach().float()
    if kind == "mse":
        per_token = (s - t).pow(2).mean(-1)
    else:
        cos = (F.normalize(s, dim=-1, eps=1e-8) * F.normalize(t, dim=-1, eps=1e-8)).sum(-1)
        if kind == "cosine":
            per_token = 1.0 - cos
        else:
            per_token = torch.acos(cos.clamp(-GEODESIC_CLAMP, GEODESIC_CLAMP))
    if labels_or_mask is None:
        return per_token.mean()
    return masked_token_mean(per_token, token_mask(labels_or_mask))
