"""Dev evaluation during distillation: dev loss (each part) and greedy dev WER.

WER is :func:`whisperkd.text.wer` after Whisper's English normaliser, over the whole subset (the same
function ``whisperkd evaluate`` and pseudo-labelling use). A dev set mixed from parts (ids ``part/...``, as the
demo's synthetic + real dev set) also gets each part's WER (``wer_<part>``); the best checkpoint is chosen by the
WER over the whole subset.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import nullcontext

import torch

from whisperkd.data.collate import decoder_prompt_ids
from whisperkd.models.decode import generate_kwargs, greedy_from_encoder
from whisperkd.text import wer as word_error_rate

MAX_NEW_TOKENS = 440


@torch.no_grad()
def greedy_transcripts(whisper, processor, batch: dict, encoder_hidden_states: torch.Tensor | None) -> list[str]:
    """Greedy English transcripts of a batch; reuses the frozen encoder output when given.

    The number of new tokens is capped at 1.5 x the longest reference + 10 (stops repetition loops).
    """
    device = next(whisper.parameters()).device
    longest = int((batch["labels"] != -100).sum(1).max())
    cap = min(MAX_NEW_TOKENS, int(1.5 * longest) + 10)
    if encoder_hidden_states is not None:
        prompt = batch["decoder_input_ids"][0, : len(decoder_prompt_ids(processor.tokenizer))].tolist()
        ids = greedy_from_encoder(whisper, encoder_hidden_states.to(device), prompt, cap)
    else:
        features = batch["input_features"].to(device, next(whisper.parameters()).dtype)
        ids = whisper.generate(input_features=features, max_new_tokens=cap, **generate_kwargs(whisper))
    return [t.strip() for t in processor.tokenizer.batch_decode(ids, skip_special_tokens=True)]


@torch.no_grad()
def evaluate(model, teacher, batches: list[dict], processor, loss_fn: Callable, wer: bool = True,
             autocast: Callable = nullcontext, examples: int = 2) -> dict:
    """Dev loss parts (token-weighted means, as in training but at full KD weight) and greedy WER.

    ``model`` is the unwrapped DistillStudent, ``teacher`` a TeacherOutputs, ``loss_fn(model, batch,
    teacher_batch) -> {part: tensor}``. Leaves ``model`` in eval mode (the caller switches back).
    """
    model.eval()
    totals: dict[str, float] = {}
    tokens = 0
    refs, hyps, ids = [], [], []
    for batch in batches:
        teacher_batch = teacher(batch)
        with autocast():
            parts = loss_fn(model, batch, teacher_batch)
        n = int((batch["labels"] != -100).sum())
        for key, value in parts.items():
            totals[key] = totals.get(key, 0.0) + float(value) * n
        tokens += n
        if wer:
            with autocast():
                hyps += greedy_transcripts(model.whisper, processor, batch, teacher_batch.encoder_hidden_states)
            refs += list(batch["texts"])
            ids += list(batch["ids"])
    result = {f"dev_{key}": value / max(tokens, 1) for key, value in totals.items()}
    result["utterances"] = sum(len(b["ids"]) for b in batches)
    if wer:
        result["wer"] = word_error_rate(refs, hyps, normalized=False) if refs else float("nan")
        result.update(part_wers(ids, refs, hyps))
        result["examples"] = [{"ref": r, "hyp": h} for r, h in zip(refs[:examples], hyps[:examples])]
    return result


def part_wers(ids: list[str], refs: list[str], hyps: list[str]) -> dict[str, float]:
    """``{"wer_<part>": WER}`` for each part of a dev set whose ids are ``part/...``; empty unless every id has a
    part and there are at least two parts."""
    parts: dict[str, tuple[list[str], list[str]]] = {}
    for uid, ref, hyp in zip(ids, refs, hyps):
        if "/" not in uid:
            return {}
        part = parts.setdefault(uid.split("/", 1)[0], ([], []))
        part[0].append(ref)
        part[1].append(hyp)
    if len(parts) < 2:
        return {}
    return {f"wer_{name}": word_error_rate(r, h, normalized=False) for name, (r, h) in sorted(parts.items())}
