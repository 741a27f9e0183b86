"""A shorter encoder window at decoding time: run Whisper's encoder on W seconds instead of 30.

Whisper pads every input to 30 s (1,500 encoder positions); for a 5-s utterance most of the encoder's work
is padding, and on CPU the encoder is about half of the time of a short transcription. Inside
:func:`encoder_window` the model's encoder takes ``100 * W`` log-mel frames: its position table is cut to
the first ``50 * W`` rows and ``config.max_source_positions`` says so, exactly as an HF Whisper built with a
W-second window would be (tested), and both are restored on exit. The frozen weights never saw a short
window; benchmarks/bench_encoder_window.py measures what that costs in WER.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager

import torch

from whisperkd.errors import UserError

FULL_WINDOW_SECONDS = 30
FRAMES_PER_SECOND = 100  # log-mel frames; the encoder halves them into positions


def window_for(seconds: float, step: int = 5, margin: float = 0.5) -> int:
    """The shortest window (a multiple of ``step`` seconds, at most 30) that holds ``seconds`` + ``margin``."""
    return int(min(FULL_WINDOW_SECONDS, max(step, step * math.ceil((seconds + margin) / step))))


def parse_window(value: str | int | None) -> str | int | None:
    """``None``/"off" (always 30 s), "auto" (per batch, :func:`window_for`) or a number of seconds in 1..30."""
    if value in (None, "off", "30", 30):
        return None
    if value == "auto":
        return "auto"
    try:
        seconds = int(value)
    except (TypeError, ValueError):
        raise ValueError(f"encoder window {value!r}: use auto, off or whole seconds in 1..30") from None
    if not 1 <= seconds <= FULL_WINDOW_SECONDS:
        raise ValueError(f"encoder window {value!r}: use auto, off or whole seconds in 1..30")
    return seconds


def window_option(value: str | None) -> str | int | None:
    """:func:`parse_window` for a command-line ``--encoder-window``: a bad value is a one-line UserError."""
    try:
        return parse_window(value)
    except ValueError as err:
        raise UserError(f"--encoder-window: {err}") from None


def window_seconds(window: str | int | None, audio_seconds: float) -> int:
    """The window to use for audio of ``audio_seconds``: 30 for None, :func:`window_for` for "auto"."""
    if window is None:
        return FULL_WINDOW_SECONDS
    return window_for(audio_seconds) if window == "auto" else int(window)


@contextmanager
def encoder_window(model, seconds: int) -> Iterator[int]:
    """Give ``model`` (a WhisperForConditionalGeneration) a ``seconds``-long encoder window for the block;
    yields the number of log-mel frames it expects."""
    encoder = model.get_encoder()
    positions = int(seconds) * FRAMES_PER_SECOND // 2
    full = encoder.embed_positions
    if positions >= full.num_embeddings:
        yield 2 * full.num_embeddings
        return
    config = encoder.config
    saved = config.max_source_positions
    short = torch.nn.Embedding(positions, full.embedding_dim, device=full.weight.device, dtype=full.weight.dtype)
    short.weight = torch.nn.Parameter(full.weight.detach()[:positions], requires_grad=False)
    encoder.embed_positions = short
    config.max_source_positions = positions
    try:
        yield 2 * positions
    finally:
        encoder.embed_positions = full
        config.max_source_positions = saved
