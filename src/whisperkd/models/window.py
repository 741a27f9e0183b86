"""A shorter encoder window: run Whisper's encoder on W seconds instead of 30.

Whisper pads every input to 30 s (1,500 encoder positions); for a 5-s utterance most of the encoder's work
is padding, and on CPU the encoder is about half of the time of a short transcription. Inside
:func:`encoder_window` the model's encoder takes ``100 * W`` log-mel frames: its position table is cut to
the first ``50 * W`` rows and ``config.max_source_positions`` says so, exactly as an HF Whisper built with a
W-second window would be (tested), and both are restored on exit.

A :class:`Window` says which W an utterance gets: a fixed number of seconds, or ``auto``: the shortest
multiple of ``step`` seconds that holds the audio plus ``margin``. Weights trained at 30 s lose some accuracy
under a short window (benchmarks/bench_encoder_window.py); a student distilled with ``student.encoder_window``
is trained for it (docs/distill.md) and carries its :class:`Window` in its config (``config.whisperkd_window``,
:func:`store_window`), which decoding uses when it is not told otherwise (:func:`resolve_window`).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass

import torch

from whisperkd.errors import UserError

FULL_WINDOW_SECONDS = 30
FRAMES_PER_SECOND = 100  # log-mel frames; the encoder halves them into positions
CONFIG_KEY = "whisperkd_window"  # the attribute of a model's config that stores its Window


def window_for(seconds: float, step: int = 5, margin: float = 0.5) -> int:
    """The shortest window (a multiple of ``step`` seconds, at most 30) that holds ``seconds`` + ``margin``."""
    return int(min(FULL_WINDOW_SECONDS, max(step, step * math.ceil((seconds + margin) / step))))


@dataclass(frozen=True)
class Window:
    """``seconds``: a fixed window, or None for ``auto`` (per utterance, :func:`window_for` with ``step`` and
    ``margin``); ``Window(30)`` is Whisper's own."""

    seconds: int | None = None
    step: int = 5
    margin: float = 0.5

    def __post_init__(self):
        if self.seconds is not None and not 1 <= self.seconds <= FULL_WINDOW_SECONDS:
            raise ValueError(f"encoder window {self.seconds}: use whole seconds in 1..30")
        if not 1 <= self.step <= FULL_WINDOW_SECONDS:
            raise ValueError(f"encoder window step {self.step}: use whole seconds in 1..30")
        if not 0 <= self.margin < FULL_WINDOW_SECONDS:
            raise ValueError(f"encoder window margin {self.margin}: use seconds in [0, 30)")

    @property
    def full(self) -> bool:
        return self.seconds == FULL_WINDOW_SECONDS

    def for_audio(self, audio_seconds: float) -> int:
        """The window (seconds) for audio of ``audio_seconds``."""
        return self.seconds if self.seconds is not None else window_for(audio_seconds, self.step, self.margin)

    def tag(self) -> str:
        """A short name for file paths: ``10s`` or ``auto-step5-margin0.5``."""
        return f"{self.seconds}s" if self.seconds is not None else f"auto-step{self.step}-margin{self.margin:g}"

    def describe(self) -> str:
        if self.seconds is not None:
            return f"{self.seconds} s"
        return f"auto (multiples of {self.step} s, margin {self.margin:g} s)"


FULL = Window(FULL_WINDOW_SECONDS)


def parse_window(value: str | int | None) -> str | int | None:
    """None (the model's own window), "off" or 30 (always 30 s: returns 30), "auto" (per utterance,
    :func:`window_for`) or a number of seconds in 1..30."""
    if value is None:
        return None
    if value in ("off", "30", 30):
        return FULL_WINDOW_SECONDS
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


def stored_window(model) -> Window | None:
    """The :class:`Window` a model was trained for (its config's ``whisperkd_window``), or None."""
    raw = getattr(model.config, CONFIG_KEY, None)
    if not raw:
        return None
    try:
        return Window(**raw)
    except (TypeError, ValueError) as err:
        raise UserError(f"model config {CONFIG_KEY}: {raw!r} is not a window ({err})") from None


def store_window(model, window: Window) -> None:
    """Record ``window`` in the model's config (saved with ``save_pretrained``, read by :func:`stored_window`)."""
    setattr(model.config, CONFIG_KEY, asdict(window))


def resolve_window(model, window: str | int | Window | None) -> Window:
    """The :class:`Window` to decode with: None -> the model's stored one, else 30 s; "auto" -> per utterance
    (with the stored step and margin when the model has them); "off" -> 30 s; seconds -> that window."""
    if isinstance(window, Window):
        return window
    window = parse_window(window)
    stored = stored_window(model)
    if window is None:
        return stored or FULL
    if window == "auto":
        return Window(None, stored.step, stored.margin) if stored else Window()
    return Window(int(window))


def window_batches(seconds: Sequence[float], window: Window, batch_size: int) -> list[tuple[int, list[int]]]:
    """Batches of indices into ``seconds`` for decoding under ``window``: ``(window seconds, indices)``; with
    ``auto`` each batch holds utterances of one window (longest windows first, input order within one)."""
    windows = [window.for_audio(s) for s in seconds]
    out = []
    for w in sorted(set(windows), reverse=True):
        members = [i for i, x in enumerate(windows) if x == w]
        out += [(w, members[i:i + batch_size]) for i in range(0, len(members), batch_size)]
    return out


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
