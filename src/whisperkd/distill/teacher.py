"""What the trainer gets from the teacher, through one interface.

The loop calls ``teacher(batch) -> TeacherBatch`` and never looks at where the numbers come from.
:class:`OnlineTeacher` runs a frozen Whisper on the batch; an offline cache (top-k log-probs, hidden
states and frozen-encoder outputs stored per utterance id) implements the same call and plugs in
without touching the loop. What a teacher must provide is fixed up front in :class:`TeacherNeeds`.

Conventions (the same as :mod:`whisperkd.distill.losses`): ``logits[b, i]`` predicts ``batch["labels"][b, i]``
with the teacher run in teacher forcing on ``batch["decoder_input_ids"]``; tensors are on the student's
device and detached.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import torch
from transformers.modeling_outputs import BaseModelOutput

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


class OnlineTeacher:
    """A frozen Whisper run on every batch (no gradients).

    With ``needs.encoder`` the encoder runs once per batch and its output feeds both the teacher's decoder
    and (through :attr:`TeacherBatch.encoder_hidden_states`) the student. ``memo_size > 0`` keeps the
    outputs of that many utterances in memory by utterance id (encoder output, the logits and hidden states
    of its target positions), so each utterance's teacher runs once in a run: a small in-memory cache for
    corpora that fit (tests, demos). A resumed run starts with an empty memo and recomputes those outputs,
    which can differ from the remembered ones in the last bits (different batch padding).
    """

    def __init__(self, model, needs: TeacherNeeds, out_device: torch.device | str | None = None,
                 out_dtype: torch.dtype | None = None, memo_size: int = 0) -> None:
        self.model = model.eval()
        self.needs = needs
        self.device = next(model.parameters()).device
        self.dtype = _input_dtype(model)
        self.out_device = torch.device(out_device) if out_device is not None else self.device
        self.out_dtype = out_dtype
        self.memo_size = int(memo_size)
        self._memo: OrderedDict[str, dict] = OrderedDict()

    def _out(self, tensor: torch.Tensor, cast: bool = False) -> torch.Tensor:
        tensor = tensor.detach().to(self.out_device)
        return tensor.to(self.out_dtype) if cast and self.out_dtype is not None else tensor

    @torch.no_grad()
    def __call__(self, batch: dict) -> TeacherBatch:
        needs = self.needs
        if not (needs.logits or needs.hidden_layers or needs.encoder):
            return TeacherBatch()
        lengths = batch["decoder_attention_mask"].sum(1).tolist()
        ids = batch.get("ids") if self.memo_size else None
        if ids is not None and all(self._memo.get(i, {}).get("length") == n for i, n in zip(ids, lengths)):
            return self._from_memo(ids, batch["decoder_input_ids"].shape[1])
        out = self._run(batch)
        if ids is not None:
            self._remember(ids, lengths, out)
        return out

    def _run(self, batch: dict) -> TeacherBatch:
        needs, out = self.needs, TeacherBatch()
        encoded = None
        if needs.encoder:
            encoded = self.model.model.encoder(batch["input_features"].to(self.device, self.dtype)).last_hidden_state
            out.encoder_hidden_states = self._out(encoded, cast=True)
        if not (needs.logits or needs.hidden_layers):
            return out
        inputs = {"encoder_outputs": BaseModelOutput(last_hidden_state=encoded)} if encoded is not None else {
            "input_features": batch["input_features"].to(self.device, self.dtype)}
        result = self.model(
            **inputs,
            decoder_input_ids=batch["decoder_input_ids"].to(self.device),
            decoder_attention_mask=batch["decoder_attention_mask"].to(self.device),
            output_hidden_states=bool(needs.hidden_layers),
            use_cache=False,
        )
        if needs.logits:
            out.logits = self._out(result.logits)
        for layer in needs.hidden_layers:
            out.hidden_states[layer] = self._out(result.decoder_hidden_states[layer + 1])
        return out

    def _remember(self, ids, lengths, out: TeacherBatch) -> None:
        for row, (key, n) in enumerate(zip(ids, lengths)):
            self._memo[key] = {
                "length": n,
                "encoder": None if out.encoder_hidden_states is None else out.encoder_hidden_states[row].clone(),
                "logits": None if out.logits is None else out.logits[row, :n].clone(),
                "hidden": {layer: h[row, :n].clone() for layer, h in out.hidden_states.items()},
            }
            self._memo.move_to_end(key)
        while len(self._memo) > self.memo_size:
            self._memo.popitem(last=False)

    def _from_memo(self, ids, length: int) -> TeacherBatch:
        """Rebuild a batch from remembered rows; positions past each row's length are zeros (they do not count)."""
        rows = [self._memo[key] for key in ids]

        def pad(tensors):
            out = tensors[0].new_zeros((len(tensors), length, *tensors[0].shape[1:]))
            for i, t in enumerate(tensors):
                out[i, : len(t)] = t
            return out

        return TeacherBatch(
            logits=pad([r["logits"] for r in rows]) if rows[0]["logits"] is not None else None,
            hidden_states={layer: pad([r["hidden"][layer] for r in rows]) for layer in rows[0]["hidden"]},
            encoder_hidden_states=(torch.stack([r["encoder"] for r in rows])
                                   if rows[0]["encoder"] is not None else None),
        )


def _input_dtype(model) -> torch.dtype:
    """The dtype the encoder's first convolution expects (float16/bfloat16/float32; int8 models keep float convs)."""
    conv = getattr(getattr(getattr(model, "model", None), "encoder", None), "conv1", None)
    if conv is not None and conv.weight.dtype.is_floating_point:
        return conv.weight.dtype
    return next(p.dtype for p in model.parameters() if p.dtype.is_floating_point)
