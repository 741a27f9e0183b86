"""Transcription with a CTranslate2 Whisper (``ctranslate2.models.Whisper``), with a guard per window and, for
recordings of any length, Whisper's sequential windows with timestamps.

- :func:`ct2_texts`: recordings that fit the encoder window, decoded without timestamps: one batch, the log-mel
  features cut to the window, the decoder prompt of :class:`whisperkd.evaluate.engines.CT2Whisper` and its token
  cap; with no fallback the transcripts are that engine's (tested);
- :func:`ct2_segments`: the seek loop of openai/whisper and faster-whisper, for a batch of recordings, each
  seeking on its own: cut the next window from the recording's log-mel features (zeros past its end), decode it
  with a timestamp prompt (the same prompt without ``<|notimestamps|>``; ctranslate2 then applies Whisper's
  timestamp rules: a timestamp first, timestamps in pairs), split the tokens at each pair of timestamps
  (:func:`split_window`) and seek to the end of the last complete segment, or by the whole window when the
  decode ends on a single timestamp or holds no pair.

The guard (:func:`guarded_generate`) is the one transformers runs for HF models (:class:`~whisperkd.models.decode.Fallback`,
its thresholds and the compression ratio on token ids, :func:`~whisperkd.models.decode.token_compression_ratio`):
a window whose decode compresses too well (a loop) or is too unlikely is decoded again, sampling at the next
temperature (``sampling_temperature``, seeded with ``ctranslate2.set_random_seed``); a window that fails at
every temperature keeps its most likely decode that does not loop (faster-whisper's rule). Windows are not conditioned on the previous window's text.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import ctranslate2
import numpy as np

from whisperkd.deploy.transcript import Segment, segment_text
from whisperkd.evaluate.engines import CT2_MAX_LENGTH
from whisperkd.models.decode import SAMPLE_RATE, Fallback, max_new_tokens_for, token_compression_ratio
from whisperkd.models.window import FRAMES_PER_SECOND

HOP = SAMPLE_RATE // FRAMES_PER_SECOND  # samples per log-mel frame
TIME_PRECISION = 0.02  # seconds per timestamp step: <|0.02|> - <|0.00|>
FRAMES_PER_STEP = 2  # log-mel frames per timestamp step


@dataclass(frozen=True)
class Decode:
    """One window's decode: the new tokens (no end-of-text), their mean log-probability as faster-whisper computes
    it, the temperature, and whether the no-speech check said to skip the window."""

    tokens: list[int]
    avg_logprob: float
    temperature: float
    skip: bool = False


def _generate(model, feats: np.ndarray, prompt: list[int], max_length: int, temperature: float, seed: int
              ) -> list[tuple[list[int], float, float]]:
    sampling = {}
    if temperature > 0:
        ctranslate2.set_random_seed(seed)
        sampling = {"sampling_topk": 0, "sampling_temperature": temperature}  # topk 0: the whole distribution
    results = model.generate(ctranslate2.StorageView.from_array(np.ascontiguousarray(feats, dtype=np.float32)),
                             [prompt] * len(feats), beam_size=1, max_length=max_length, return_scores=True,
                             return_no_speech_prob=True, **sampling)
    out = []
    for r in results:
        tokens = list(r.sequences_ids[0])
        # the score is the sum of log-probabilities over the length; faster-whisper counts the end-of-text too
        out.append((tokens, r.scores[0] * len(tokens) / (len(tokens) + 1), r.no_speech_prob))
    return out


def _verdict(tokens: list[int], logprob: float, no_speech: float, fallback: Fallback, vocab_size: int
             ) -> tuple[bool, bool, bool]:
    """(needs another decode, skip as no speech, compresses too well), as transformers'
    ``WhisperGenerationMixin._need_fallback`` decides."""
    loops = (fallback.compression_ratio_threshold is not None and bool(tokens)
             and token_compression_ratio(tokens, vocab_size) > fallback.compression_ratio_threshold)
    unlikely = fallback.logprob_threshold is not None and logprob < fallback.logprob_threshold
    if unlikely and fallback.no_speech_threshold is not None and no_speech > fallback.no_speech_threshold:
        return False, True, loops
    return loops or unlikely, False, loops


def guarded_generate(model, feats: np.ndarray, prompt: list[int], max_length: int, fallback: Fallback | None,
                     vocab_size: int, seed: int = 0, cap: int | None = None) -> tuple[list[Decode], int]:
    """Decode each window of ``feats`` (batch, mels, frames): greedy, then, with a ``fallback``, the failing
    windows again at each next temperature (a smaller batch each time). A window that fails at every
    temperature keeps its most likely decode among those that do not compress too well (faster-whisper's
    choice; transformers keeps the last one). ``cap``: keep at most that many new tokens (checked after the
    cut). Returns the kept decodes and how many decodes were repeated."""
    temperatures = fallback.temperatures if fallback else (0.0,)
    kept: list[Decode | None] = [None] * len(feats)
    tried: list[list[tuple[bool, Decode]]] = [[] for _ in range(len(feats))]
    rows, repeated = list(range(len(feats))), 0
    for k, temperature in enumerate(temperatures):
        results = _generate(model, feats[rows], prompt, max_length, float(temperature), seed + 1009 * k)
        failed = []
        for i, (tokens, logprob, no_speech) in zip(rows, results):
            tokens = tokens[:cap] if cap is not None else tokens
            verdict = _verdict(tokens, logprob, no_speech, fallback, vocab_size) if fallback else (False,) * 3
            kept[i] = Decode(tokens, logprob, float(temperature), verdict[1])
            tried[i].append((verdict[2], kept[i]))
            if verdict[0]:
                failed.append(i)
        if k + 1 == len(temperatures):
            for i in failed:
                pool = [d for loops, d in tried[i] if not loops] or [d for _, d in tried[i]]
                kept[i] = max(pool, key=lambda d: d.avg_logprob)
            break
        rows = failed
        repeated += len(failed)
        if not rows:
            break
    return kept, repeated


def prompts(engine) -> tuple[list[int], list[int], int]:
    """The engine's prompt (no timestamps), the same prompt for timestamps, and the id of ``<|0.00|>``."""
    no_timestamps = engine.tokenizer.convert_tokens_to_ids("<|notimestamps|>")
    plain = list(engine.prompt)
    return plain, [t for t in plain if t != no_timestamps], int(no_timestamps) + 1


def split_window(tokens: list[int], first_timestamp: int, offset: float, size: int
                 ) -> tuple[list[tuple[float, float, list[int]]], int]:
    """The segments ``(start, end, tokens)`` of one window's decode and how many log-mel frames to seek.

    ``offset``: seconds from the recording's start to the window's; ``size``: frames of audio in the window.
    Pairs of timestamps close segments; when the decode ends on a single timestamp there is no speech after it
    and the seek moves by the whole window, else it moves to the end of the last complete segment (the
    unfinished one is decoded again from there). Without a pair of timestamps (a student that never predicts
    them) the window is one segment, ending at its last timestamp if one is past ``<|0.00|>``, else at the
    window's end, and the seek moves by the whole window."""
    stamp = [t >= first_timestamp for t in tokens]
    single_ending = len(tokens) >= 2 and not stamp[-2] and stamp[-1]
    pairs = [i for i in range(1, len(tokens)) if stamp[i] and stamp[i - 1]]
    if not pairs:
        stamps = [t for t in tokens if t >= first_timestamp]
        seconds = size / FRAMES_PER_SECOND
        if stamps and stamps[-1] != first_timestamp:
            seconds = (stamps[-1] - first_timestamp) * TIME_PRECISION
        return [(offset, offset + seconds, tokens)], size
    cuts = pairs + ([len(tokens)] if single_ending else [])
    found, last = [], 0
    for cut in cuts:
        part = tokens[last:cut]
        begin = part[0] - first_timestamp if part[0] >= first_timestamp else 0
        end = part[-1] - first_timestamp if part[-1] >= first_timestamp else begin
        found.append((offset + begin * TIME_PRECISION, offset + end * TIME_PRECISION, part))
        last = cut
    seek = size if single_ending else (tokens[last - 1] - first_timestamp) * FRAMES_PER_STEP
    return found, seek if 0 < seek <= size else size


def ct2_texts(engine, audios: list, seconds: int, fallback: Fallback | None = None, seed: int = 0
              ) -> tuple[list[Decode], list[str], int]:
    """Decodes and texts of recordings that fit a ``seconds``-long window, without timestamps; and how many
    decodes the fallback repeated."""
    plain, _, _ = prompts(engine)
    feats = engine.features(audios, sampling_rate=SAMPLE_RATE, return_tensors="np").input_features
    cap = max_new_tokens_for(max(len(a) for a in audios) / SAMPLE_RATE)
    # as CT2Whisper.transcribe: max_length counts the prompt and ctranslate2 stops near max_length / 2 new tokens
    max_length = min(CT2_MAX_LENGTH, 2 * cap + len(plain))
    decodes, repeated = guarded_generate(engine.model, feats[..., :seconds * FRAMES_PER_SECOND], plain, max_length,
                                         fallback, len(engine.tokenizer), seed, cap)
    return decodes, [engine.tokenizer.decode(d.tokens, skip_special_tokens=True).strip() for d in decodes], repeated


def ct2_segments(engine, audios: list, seconds: int, fallback: Fallback | None = None, seed: int = 0,
                 progress: Callable[[float], None] | None = None) -> tuple[list[list[Segment]], int]:
    """Timed segments of each 16 kHz array (any length), decoded in ``seconds``-long windows, the recordings of
    the batch side by side; and how many window decodes the fallback repeated. ``progress`` receives the
    seconds of audio done since its last call."""
    _, prompt, first_timestamp = prompts(engine)
    window = seconds * FRAMES_PER_SECOND
    feats = [engine.features(a, sampling_rate=SAMPLE_RATE, return_tensors="np", truncation=False,
                             padding="longest").input_features[0] for a in audios]
    content = [min(f.shape[-1], math.ceil(len(a) / HOP)) for f, a in zip(feats, audios)]
    seek = [0] * len(audios)
    found: list[list[Segment]] = [[] for _ in audios]
    repeated, step = 0, 0
    while active := [i for i in range(len(audios)) if seek[i] < content[i]]:
        sizes = [min(window, content[i] - seek[i]) for i in active]
        batch = np.zeros((len(active), feats[0].shape[0], window), dtype=np.float32)
        for row, (i, size) in enumerate(zip(active, sizes)):
            batch[row, :, :size] = feats[i][:, seek[i]:seek[i] + size]
        decodes, again = guarded_generate(engine.model, batch, prompt, CT2_MAX_LENGTH, fallback,
                                          len(engine.tokenizer), seed + 7919 * step)
        repeated, step = repeated + again, step + 1
        for i, size, d in zip(active, sizes, decodes):
            moved = size
            if not d.skip:
                parts, moved = split_window(d.tokens, first_timestamp, seek[i] / FRAMES_PER_SECOND, size)
                found[i] += [Segment(start, end, segment_text(engine.tokenizer, tokens, first_timestamp))
                             for start, end, tokens in parts]
            seek[i] += moved
            if progress is not None:
                progress(moved / FRAMES_PER_SECOND)
    return found, repeated
