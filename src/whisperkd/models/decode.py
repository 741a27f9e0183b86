"""Greedy English transcription of audio arrays with any HF Whisper model, in batches, optionally with
Whisper's temperature fallback (a guard against repetition loops).

The fallback is transformers' own: in transformers 5.24 (read in ``generation_whisper.py``) short-form audio
(at most 30 s) goes through the same seek loop as long-form, so ``generate(temperature=(0.0, 0.2, ...),
compression_ratio_threshold=..., logprob_threshold=...)`` runs ``generate_with_fallback`` for our clips too, and
in batches: every row is checked after each decode, and only the rows that fail are decoded again, as a smaller
batch, at the next temperature; the last temperature's decode is kept whatever it scores.
The compression ratio is computed on the generated *token ids* (2 bytes each, zlib), not on the text as in
openai/whisper (zlib ratio of the UTF-8 text > 2.4), hence transformers' recommended threshold 1.35.
"""

from __future__ import annotations

from contextlib import contextmanager, nullcontext
from dataclasses import dataclass

import torch
from transformers import WhisperForConditionalGeneration

from whisperkd.models.lean_decode import LeanDecoder
from whisperkd.models.window import Window, encoder_window, resolve_window, window_batches

SAMPLE_RATE = 16_000


@dataclass(frozen=True)
class Fallback:
    """Whisper's temperature fallback, as transformers' ``generate`` runs it (openai/whisper's defaults, with the
    compression ratio on tokens). A decode fails when its compression ratio is above
    ``compression_ratio_threshold`` (a loop compresses well) or its mean token log-probability is below
    ``logprob_threshold``; the failing utterances are decoded again, sampling at the next temperature.
    ``no_speech_threshold`` (off here, openai's 0.6): a failing decode whose no-speech probability is above it
    gives an empty transcript instead. Sampling is seeded per batch (``seed`` + the batch's first index), so the
    same inputs, batch size and seed give the same transcripts."""

    temperatures: tuple[float, ...] = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)
    compression_ratio_threshold: float | None = 1.35
    logprob_threshold: float | None = -1.0
    no_speech_threshold: float | None = None
    seed: int = 0

    def __post_init__(self):
        if not self.temperatures or any(t < 0 for t in self.temperatures):
            raise ValueError("Fallback.temperatures: give at least one temperature, none negative")
        if self.no_speech_threshold is not None and self.logprob_threshold is None:
            raise ValueError("Fallback.no_speech_threshold needs a logprob_threshold (transformers uses both)")

    def generate_kwargs(self) -> dict:
        return {"temperature": tuple(float(t) for t in self.temperatures),
                "compression_ratio_threshold": self.compression_ratio_threshold,
                "logprob_threshold": self.logprob_threshold, "no_speech_threshold": self.no_speech_threshold}


@dataclass(frozen=True)
class Decoded:
    """How one utterance was decoded: ``decodes`` (1 = the greedy decode was kept), the ``temperature`` of the
    kept decode, whether it ``passed`` the checks (False: the last temperature, kept anyway) and whether it was
    ``skipped`` as no speech (empty transcript)."""

    decodes: int = 1
    temperature: float = 0.0
    passed: bool = True
    skipped: bool = False


def token_compression_ratio(tokens: list[int], vocab_size: int) -> float:
    """The compression ratio transformers' fallback tests: raw bytes / zlib-compressed bytes of the token ids,
    each written little-endian on ``int(log2(vocab_size) / 8) + 1`` bytes (2 for Whisper)."""
    return WhisperForConditionalGeneration._retrieve_compression_ratio(torch.tensor(tokens), vocab_size)


def generate_kwargs(model) -> dict:
    """Greedy English decoding settings; multilingual models get language and task (no language detection)."""
    kwargs = {"num_beams": 1, "do_sample": False}
    if getattr(model.generation_config, "is_multilingual", False):
        kwargs.update(language="en", task="transcribe")
    return kwargs


def max_new_tokens_for(seconds: float, limit: int = 440) -> int:
    """A token cap from the audio length (about 6 tokens per second of speech, at least 24): stops repetition loops."""
    return int(min(limit, max(24, round(6 * seconds) + 16)))


@contextmanager
def _decisions(model, calls: list):
    """Record every ``(temperature, needs_fallback, should_skip)`` transformers decides in the block."""
    decide = model._need_fallback

    def recorded(seek_sequence, seek_outputs, index, logits_processor, generation_config, vocab_size, temperature):
        needs, skip = decide(seek_sequence, seek_outputs, index, logits_processor, generation_config, vocab_size,
                             temperature)
        calls.append((temperature, bool(needs), bool(skip)))
        return needs, skip

    model._need_fallback = recorded
    try:
        yield
    finally:
        del model._need_fallback


def replay(calls: list, n: int, temperatures: tuple[float, ...]) -> list[Decoded]:
    """Per utterance of a batch of ``n``, what the recorded decisions of one fallback ``generate`` mean: round k
    decides, in batch order, for the utterances that failed round k - 1."""
    rows, active, at = [Decoded()] * n, list(range(n)), 0
    for k, temperature in enumerate(temperatures):
        decided, at = calls[at : at + len(active)], at + len(active)
        if len(decided) != len(active):
            raise RuntimeError("transformers' fallback decided for other rows than expected: check decode.replay")
        for i, (_, needs, skip) in zip(active, decided):
            rows[i] = Decoded(k + 1, float(temperature), not needs, skip)
        active = [i for i, (_, needs, _) in zip(active, decided) if needs]
        if not active:
            break
    if at != len(calls):
        raise RuntimeError("transformers' fallback made more decisions than expected: check decode.replay")
    return rows


def _rng_devices(device: torch.device) -> list:
    return [device] if device.type == "cuda" else []


@torch.no_grad()
def transcribe_arrays(model, processor, audios: list, batch_size: int = 8, window: str | int | Window | None = None,
                      fallback: Fallback | None = None, decoded: list | None = None) -> list[str]:
    """Transcribe 16 kHz mono float arrays (each at most 30 s); returns one string per array, in order.

    ``window``: None (the window the model was trained for, else Whisper's 30 s), seconds, "auto" or a
    :class:`~whisperkd.models.window.Window`; with "auto" every utterance gets the shortest window that holds
    it, and a batch holds utterances of one window (see :mod:`whisperkd.models.window`).
    ``fallback``: None (plain greedy decoding) or a :class:`Fallback` (Whisper's temperature fallback, run by
    transformers; the greedy decode is kept for every utterance that passes its checks).
    ``decoded``: a list that receives one :class:`Decoded` per array (how it was decoded), in order."""
    texts: list[str | None] = [None] * len(audios)
    how: list[Decoded | None] = [None] * len(audios)
    device = next(model.parameters()).device
    dtype = next(model.parameters()).dtype
    plan = window_batches([len(a) / SAMPLE_RATE for a in audios], resolve_window(model, window), batch_size)
    for seconds, members in plan:
        chunk = [audios[i] for i in members]
        feats = processor.feature_extractor(chunk, sampling_rate=SAMPLE_RATE, return_tensors="pt").input_features
        longest = max(len(a) for a in chunk) / SAMPLE_RATE
        kwargs = generate_kwargs(model) | (fallback.generate_kwargs() if fallback else {})
        calls: list = []
        # Sampling draws from torch's global generator: seeded per batch, inside fork_rng so that the caller's
        # random state is left as it was.
        seeded = torch.random.fork_rng(devices=_rng_devices(device)) if fallback else nullcontext()
        spied = _decisions(model, calls) if fallback and decoded is not None else nullcontext()
        with seeded, encoder_window(model, seconds) as frames, spied:
            if fallback:
                torch.manual_seed(fallback.seed + members[0])
            ids = model.generate(feats[..., :frames].to(device, dtype), max_new_tokens=max_new_tokens_for(longest),
                                 **kwargs)
        rows = replay(calls, len(chunk), fallback.temperatures) if fallback and decoded is not None else \
            [Decoded()] * len(chunk)
        for i, text, row in zip(members, processor.tokenizer.batch_decode(ids, skip_special_tokens=True), rows):
            texts[i], how[i] = text.strip(), row
    if decoded is not None:
        decoded.extend(how)
    return texts


def greedy_from_encoder(model, encoder_hidden_states: torch.Tensor, prompt: list[int], max_new_tokens: int
                        ) -> list[list[int]]:
    """Greedy decoding from precomputed encoder states (a frozen encoder computed once), with the model's
    suppress lists as in ``generate``; returns the new token ids of each row, end-of-text excluded.

    HF ``generate(encoder_outputs=...)`` fails for batches in transformers 5 (it tries to shrink
    ``input_features`` that it does not have), hence :class:`whisperkd.models.lean_decode.LeanDecoder`'s loop.
    """
    return LeanDecoder(model)(encoder_hidden_states, prompt, max_new_tokens)
