"""Greedy English transcription of audio arrays with any HF Whisper model, in batches."""

from __future__ import annotations

import torch

from whisperkd.models.window import encoder_window, window_seconds

SAMPLE_RATE = 16_000


def generate_kwargs(model) -> dict:
    """Greedy English decoding settings; multilingual models get language and task (no language detection)."""
    kwargs = {"num_beams": 1, "do_sample": False}
    if getattr(model.generation_config, "is_multilingual", False):
        kwargs.update(language="en", task="transcribe")
    return kwargs


def max_new_tokens_for(seconds: float, limit: int = 440) -> int:
    """A token cap from the audio length (about 6 tokens per second of speech, at least 24): stops repetition loops."""
    return int(min(limit, max(24, round(6 * seconds) + 16)))


@torch.no_grad()
def transcribe_arrays(model, processor, audios: list, batch_size: int = 8, window: str | int | None = None) -> list[str]:
    """Transcribe 16 kHz mono float arrays (each at most 30 s); returns one string per array.

    ``window``: None (Whisper's 30-s encoder window), seconds, or "auto" (per batch, the shortest multiple of
    5 s that holds its longest audio); see :mod:`whisperkd.models.window`."""
    texts: list[str] = []
    device = next(model.parameters()).device
    dtype = next(model.parameters()).dtype
    for start in range(0, len(audios), batch_size):
        chunk = audios[start : start + batch_size]
        feats = processor.feature_extractor(chunk, sampling_rate=SAMPLE_RATE, return_tensors="pt").input_features
        longest = max(len(a) for a in chunk) / SAMPLE_RATE
        with encoder_window(model, window_seconds(window, longest)) as frames:
            ids = model.generate(feats[..., :frames].to(device, dtype), max_new_tokens=max_new_tokens_for(longest),
                                 **generate_kwargs(model))
        texts.extend(t.strip() for t in processor.tokenizer.batch_decode(ids, skip_special_tokens=True))
    return texts


@torch.no_grad()
def greedy_from_encoder(model, encoder_hidden_states: torch.Tensor, prompt: list[int], max_new_tokens: int
                        ) -> list[list[int]]:
    """Greedy decoding from precomputed encoder states (a frozen encoder computed once), with the model's
    suppress lists as in ``generate``; returns the new token ids of each row, end-of-text excluded.

    HF ``generate(encoder_outputs=...)`` fails for batches in transformers 5 (it tries to shrink
    ``input_features`` that it does not have), hence this small loop with a KV cache.
    """
    gen = model.generation_config
    eot = gen.eos_token_id if isinstance(gen.eos_token_id, int) else gen.eos_token_id[0]
    device = encoder_hidden_states.device
    batch = encoder_hidden_states.shape[0]
    ids = torch.tensor([prompt] * batch, device=device)
    suppress = torch.tensor(list(gen.suppress_tokens or []), dtype=torch.long, device=device)
    begin = torch.tensor(list(gen.begin_suppress_tokens or []), dtype=torch.long, device=device)
    encoder_outputs = (encoder_hidden_states,)
    done = torch.zeros(batch, dtype=torch.bool, device=device)
    past, step_input, out = None, ids, []
    for step in range(max_new_tokens):
        result = model(encoder_outputs=encoder_outputs, decoder_input_ids=step_input, cache=past,
                       use_cache=True)
        past = result.cache
        logits = result.logits[:, -1].float()
        if suppress.numel():
            logits[:, suppress] = -float("inf")
        if step == 0 and begin.numel():
            logits[:, begin] = -float("inf")
        token = logits.argmax(-1)
        token = torch.where(done, torch.full_like(token, eot), token)
        out.append(token)
        done |= token == eot
        if bool(done.all()):
            break
        step_input = token[:, None]
    tokens = torch.stack(out, 1).tolist() if out else [[] for _ in range(batch)]
    return [row[: row.index(eot)] if eot in row else row for row in tokens]
