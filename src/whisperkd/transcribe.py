"""Greedy English transcription of audio arrays with any HF Whisper model, in batches."""

from __future__ import annotations

import torch

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
def transcribe_arrays(model, processor, audios: list, batch_size: int = 8) -> list[str]:
    """Transcribe 16 kHz mono float arrays (each at most 30 s); returns one string per array."""
    texts: list[str] = []
    device = next(model.parameters()).device
    dtype = next(model.parameters()).dtype
    for start in range(0, len(audios), batch_size):
        chunk = audios[start : start + batch_size]
        feats = processor.feature_extractor(chunk, sampling_rate=SAMPLE_RATE, return_tensors="pt").input_features
        longest = max(len(a) for a in chunk) / SAMPLE_RATE
        ids = model.generate(feats.to(device, dtype), max_new_tokens=max_new_tokens_for(longest), **generate_kwargs(model))
        texts.extend(t.strip() for t in processor.tokenizer.batch_decode(ids, skip_special_tokens=True))
    return texts
