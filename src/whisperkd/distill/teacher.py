"""The teacher's side of a run: :class:`OnlineTeacher` runs a frozen Whisper on each batch, and
:func:`make_teacher` chooses between it and the offline cache (``cache.enabled``) for a run.

Both answer ``teacher(batch) -> TeacherBatch`` (the interface in :mod:`whisperkd.distill.teacher_batch`), so
the loop never looks at where the numbers come from.
"""

from __future__ import annotations

import dataclasses
from collections import OrderedDict
from collections.abc import Mapping, Sequence

import torch
from transformers.modeling_outputs import BaseModelOutput

from whisperkd.config import Config
from whisperkd.data.utterance import Utterance
# Modules, not names: cache.reader imports this module (TeacherBatch), so either may be imported first.
from whisperkd.distill.cache import CachedTeacher, cache_dir_of, ensure_cache
from whisperkd.distill.cache.windowed import WindowedEncoder, WindowedTeacher
from whisperkd.distill.teacher_batch import TeacherBatch, TeacherNeeds, TeacherOutputs


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


def make_teacher(cfg: Config, built, out_device: torch.device | str,
                 splits: Mapping[str, Sequence[Utterance]], progress: bool = True) -> TeacherOutputs:
    """The run's teacher outputs. With ``cache.enabled``: the teacher cache is built, finished or checked for
    ``splits`` (``{"train": ..., "dev": ...}``, :func:`whisperkd.distill.cache.run_splits`; ``cache.on_stale``
    decides about a stale one) and a :class:`~whisperkd.distill.cache.CachedTeacher` reads it. Otherwise the
    online teacher. ``built``: the run's models (:class:`whisperkd.distill.build.Built`). A student trained for a
    window (``student.encoder_window``) gets its windowed encoder outputs
    (:class:`~whisperkd.distill.cache.windowed.WindowedTeacher`)."""
    if not cfg.cache.enabled:
        return built.online_teacher(cfg, out_device)
    ensure_cache(cfg, built, splits, progress=progress)
    needs = built.teacher_needs(cfg)
    window = cfg.student.window()  # a student trained for a window reads its encoder outputs from their store
    windowed = window is not None
    cached = CachedTeacher(cache_dir_of(cfg), None, dataclasses.replace(needs, encoder=False) if windowed else needs,
                           temperature=cfg.loss.temperature, out_device=out_device, out_dtype=torch.float32,
                           logits=cfg.cache.logits)
    if not windowed:
        return cached
    return WindowedTeacher(cached, WindowedEncoder(cache_dir_of(cfg), window, list(splits)), needs, out_device)
