"""The three ways ``whisperkd transcribe`` decodes, behind one interface.

A decoder has a ``window`` (the :class:`~whisperkd.models.window.Window` it decodes with), counts the decodes its
guard repeated (``redecoded``), and turns a batch of 16 kHz arrays into :class:`~whisperkd.deploy.transcript.Transcript` s:

- ``texts(audios, seconds, offset)``: recordings that fit the ``seconds``-long window, without timestamps (one
  segment per recording, from 0 to its end);
- ``segments(audios, seconds, offset, progress)``: recordings of any length, with timed segments.

:class:`HFDecoder`: short recordings through :func:`whisperkd.models.decode.transcribe_arrays` (batched by window,
Whisper's temperature fallback), timed segments through transformers' long-form ``generate``
(:mod:`whisperkd.deploy.hf_longform`). :class:`CT2Decoder`: a CTranslate2 directory
(:class:`whisperkd.evaluate.engines.CT2Whisper`, its stored window) through :mod:`whisperkd.deploy.ct2_longform`.
:class:`AssistedDecoder`: speculative decoding (:mod:`whisperkd.deploy.speculative`), short recordings only,
without timestamps. ``offset`` (the batch's first index) seeds the fallback's sampling, so that a recording's
transcript does not depend on the other batches.
"""

from __future__ import annotations

from collections.abc import Callable

from whisperkd.deploy.ct2_longform import ct2_segments, ct2_texts
from whisperkd.deploy.hf_longform import hf_segments, timestamp_begin
from whisperkd.deploy.transcript import Transcript, timed, whole
from whisperkd.evaluate.loops import cut_repetition_loop
from whisperkd.models import decode
from whisperkd.models.decode import SAMPLE_RATE, Fallback
from whisperkd.models.window import FULL, Window, resolve_window

Progress = Callable[[float], None] | None


def _seconds(audio) -> float:
    return len(audio) / SAMPLE_RATE


class _Guarded:
    """What the decoders share: the fallback, the loop guard (cut a repeated 4-gram, per segment) and the count."""

    fallback: Fallback | None = None
    loop_guard: bool = False
    redecoded: int = 0

    def _cut(self, text: str) -> str:
        return cut_repetition_loop(text) if self.loop_guard else text

    def _timed(self, rows, audios) -> list[Transcript]:
        out = []
        for segments, audio in zip(rows, audios):
            if self.loop_guard:
                segments = [type(s)(s.start, s.end, self._cut(s.text)) for s in segments]
            out.append(timed(segments, _seconds(audio)))
        return out


class HFDecoder(_Guarded):
    """An HF Whisper (``model``, ``processor``); ``window``: the ``--encoder-window`` option (None: the model's)."""

    def __init__(self, model, processor, window: str | int | Window | None = None, fallback: Fallback | None = None,
                 loop_guard: bool = False):
        self.model, self.processor = model, processor
        self.window = resolve_window(model, window)
        self.fallback, self.loop_guard = fallback, loop_guard

    def check_timestamps(self) -> None:
        timestamp_begin(self.model)

    def texts(self, audios: list, seconds: int, offset: int = 0) -> list[Transcript]:
        how: list = []
        texts = decode.transcribe_arrays(self.model, self.processor, audios, batch_size=len(audios),
                                         window=Window(seconds), fallback=self.fallback, decoded=how)
        self.redecoded += sum(d.decodes > 1 for d in how)
        return [whole(self._cut(t), _seconds(a), d.temperature if self.fallback else None)
                for t, a, d in zip(texts, audios, how)]

    def segments(self, audios: list, seconds: int, offset: int = 0, progress: Progress = None) -> list[Transcript]:
        rows, again = hf_segments(self.model, self.processor, audios, seconds, self.fallback, offset, progress)
        self.redecoded += again
        return self._timed(rows, audios)


class CT2Decoder(_Guarded):
    """A :class:`whisperkd.evaluate.engines.CT2Whisper` (opened with ``encoder_window`` set as asked)."""

    def __init__(self, engine, fallback: Fallback | None = None, loop_guard: bool = False):
        self.engine = engine
        self.window = engine.window
        self.fallback, self.loop_guard = fallback, loop_guard

    def check_timestamps(self) -> None:
        pass  # every Whisper vocabulary has the timestamp tokens (models/tokenizer.py adds them when missing)

    def texts(self, audios: list, seconds: int, offset: int = 0) -> list[Transcript]:
        seed = (self.fallback.seed if self.fallback else 0) + offset
        decodes, texts, again = ct2_texts(self.engine, audios, seconds, self.fallback, seed)
        self.redecoded += again
        return [whole(self._cut(t), _seconds(a), d.temperature if self.fallback else None)
                for t, a, d in zip(texts, audios, decodes)]

    def segments(self, audios: list, seconds: int, offset: int = 0, progress: Progress = None) -> list[Transcript]:
        seed = (self.fallback.seed if self.fallback else 0) + offset
        rows, again = ct2_segments(self.engine, audios, seconds, self.fallback, seed, progress)
        self.redecoded += again
        return self._timed(rows, audios)


class AssistedDecoder(_Guarded):
    """Speculative decoding (an engine of :func:`whisperkd.deploy.speculative.open_speculative`): the teacher's
    greedy transcripts of recordings of at most 30 s, without timestamps (each is one segment)."""

    window = FULL

    def __init__(self, engine):
        self.engine = engine

    def check_timestamps(self) -> None:
        pass

    def texts(self, audios: list, seconds: int, offset: int = 0) -> list[Transcript]:
        return [whole(t, _seconds(a)) for t, a in zip(self.engine.transcribe(audios), audios)]

    def segments(self, audios: list, seconds: int, offset: int = 0, progress: Progress = None) -> list[Transcript]:
        return self.texts(audios, seconds, offset)
