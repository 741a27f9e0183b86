"""What the trainer gets from the teacher, through one interface: ``teacher(batch) -> TeacherBatch``.

The online teacher (:class:`whisperkd.distill.teacher.OnlineTeacher`) and the offline cache
(:class:`whisperkd.distill.cache.CachedTeacher`) both implement it. What a teacher must provide is fixed up
front in :class:`TeacherNeeds`.

Conventions (the same as :mod:`whisperkd.distill.losses`): ``logits[b, i]`` predicts ``batch["labels"][b, i]``
with the teacher run in teacher forcing on ``batch["decoder_input_ids"]``; tensors are on the student's
device and detached.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import torch

from whisperkd.errors import UserError


@dataclass(frozen=True)
class TeacherNeeds:
    """What the trainer will read from each :class:`TeacherBatch`.

    ``logits``: the teacher's distribution per target position, either full ``logits`` or
    ``topk_logprobs``/``topk_indices`` (a cache; TAID needs full logits). ``hidden_layers``: teacher decoder
    layer indices whose outputs alignment needs. ``encoder``: the frozen encoder output, which the student
    reuses instead of running its own copy of that encoder (set when the student keeps the teacher's
    whole encoder frozen); ``full_logits``: top-k is not enough (TAID).
    """

    logits: bool = True
    full_logits: bool = False
    hidden_layers: tuple[int, ...] = ()
    encoder: bool = False


@dataclass
class TeacherBatch:
    """Teacher outputs for one batch; a field the trainer did not ask for may be None.

    logits                (B, L, V) raw teacher logits (temperature 1), or None when top-k is given
    topk_logprobs         (B, L, k) float32 log-probabilities at temperature ``topk_temperature``
    topk_indices          (B, L, k) int64 token ids of those log-probabilities
    topk_temperature      the temperature the top-k log-probs were computed at (must equal loss.temperature)
    hidden_states         {teacher decoder layer i: (B, L, D)} the output of layer i (HF ``hidden_states[i + 1]``;
                          the last layer's has the final layer norm applied, as in HF)
    encoder_hidden_states (B, 1500, D) the frozen encoder output for the student to reuse
    """

    logits: torch.Tensor | None = None
    topk_logprobs: torch.Tensor | None = None
    topk_indices: torch.Tensor | None = None
    topk_temperature: float | None = None
    hidden_states: dict[int, torch.Tensor] = field(default_factory=dict)
    encoder_hidden_states: torch.Tensor | None = None

    def check(self, needs: TeacherNeeds) -> TeacherBatch:
        """Refuse a batch that lacks something ``needs`` asks for (one line naming the field)."""
        if needs.logits and self.logits is None:
            if needs.full_logits:
                raise UserError("teacher: full logits are needed (TAID) but the teacher gives top-k only; "
                                "use loss.kind=kl with a top-k cache or an online teacher")
            if self.topk_logprobs is None or self.topk_indices is None:
                raise UserError("teacher: gives neither logits nor top-k log-probs; rebuild the teacher cache")
        missing = [i for i in needs.hidden_layers if i not in self.hidden_states]
        if missing:
            raise UserError(f"teacher: hidden states of decoder layers {missing} are missing; "
                            "rebuild the cache with those layers or set loss.align_weight=0")
        if needs.encoder and self.encoder_hidden_states is None:
            raise UserError("teacher: no frozen-encoder output for the student to reuse; rebuild the cache with "
                            "encoder outputs or let the student run its own encoder")
        return self


@runtime_checkable
class TeacherOutputs(Protocol):
    """Anything that turns a batch (see :mod:`whisperkd.data.collate`) into a :class:`TeacherBatch`.

    A batch has ``input_features`` (B, n_mels, 3000), ``decoder_input_ids``, ``labels`` (-100 padding),
    ``decoder_attention_mask`` and ``ids`` (utterance ids: what a cache looks entries up by).
    """

    needs: TeacherNeeds

    def __call__(self, batch: dict) -> TeacherBatch: ...
