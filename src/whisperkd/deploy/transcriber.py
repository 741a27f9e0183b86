"""The batched run of ``whisperkd transcribe``: check every recording, plan batches, decode, report skips.

1. :func:`probe` opens every recording's header (no decoding): its length, or why it cannot be used
   (:class:`whisperkd.data.audio.AudioSkip`: missing, empty, not audio, truncated, ...; a file that cannot be
   opened, such as one without read permission, is ``unreadable``).
2. :func:`plan` splits the recordings into those that fit their encoder window (decoded without timestamps,
   unless timestamps are asked for) and longer ones (sequential windows with timestamps), and batches each
   group by window (:func:`whisperkd.models.window.window_batches`).
3. :class:`Transcriber` decodes batch by batch, loading only the batch's audio; a recording that fails to load
   (silent, NaN samples, cut short) is skipped there. Skips never stop the run: each goes to ``on_skip``.
   A progress bar (tqdm, seconds of audio) goes to stderr when asked.

Without timestamps (``timestamps=None``, for a model that does not predict them), a long recording is cut into
consecutive windows, each decoded like a short recording and taken as one segment; a word across a window's
edge can be cut in two or lost.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from tqdm import tqdm

from whisperkd.data.audio import AudioSkip, load_utterance, utterance_seconds
from whisperkd.deploy.inputs import Item
from whisperkd.deploy.transcript import Segment, Transcript, timed
from whisperkd.models.decode import SAMPLE_RATE
from whisperkd.models.window import Window, window_batches


@dataclass(frozen=True)
class Probed:
    """An item whose header could be read, and its length in seconds."""

    index: int
    item: Item
    seconds: float


def _unusable(err: Exception) -> AudioSkip:
    if isinstance(err, AudioSkip):
        return err
    if isinstance(err, MemoryError):
        return AudioSkip("too_large", "not enough memory to decode it")
    detail = err.strerror if isinstance(err, OSError) and err.strerror else str(err)
    return AudioSkip("unreadable", f"{type(err).__name__}: {detail}"[:200])


def probe(items: list[Item]) -> tuple[list[Probed], list[tuple[Item, AudioSkip]]]:
    """The items whose audio can be opened, with their lengths, and the others with the reason."""
    usable, skipped = [], []
    for index, item in enumerate(items):
        try:
            usable.append(Probed(index, item, utterance_seconds(item.utterance)))
        except (AudioSkip, OSError, RuntimeError) as err:
            skipped.append((item, _unusable(err)))
    return usable, skipped


def load(item: Item) -> np.ndarray:
    """The 16 kHz mono samples of an item (no length limit); AudioSkip when they cannot be used."""
    try:
        return load_utterance(item.utterance, durations=None)
    except (AudioSkip, OSError, RuntimeError, MemoryError) as err:
        raise _unusable(err) from None


@dataclass(frozen=True)
class Batch:
    """Items decoded together: ``seconds`` is their encoder window; ``long``: they are longer than it."""

    seconds: int
    long: bool
    members: list[Probed]


def plan(probed: list[Probed], window: Window, batch_size: int) -> list[Batch]:
    """Batches of at most ``batch_size``: first the recordings that fit their window (by window, as
    :func:`~whisperkd.models.window.window_batches`), then the longer ones."""
    batches = []
    for long in (False, True):
        group = [p for p in probed if (p.seconds > window.for_audio(p.seconds)) == long]
        for seconds, members in window_batches([p.seconds for p in group], window, batch_size):
            batches.append(Batch(seconds, long, [group[i] for i in members]))
    return batches


def _windows(audio: np.ndarray, seconds: int) -> list[np.ndarray]:
    step = seconds * SAMPLE_RATE
    return [audio[i:i + step] for i in range(0, len(audio), step)]


class Transcriber:
    """Decodes with ``decoder`` (:mod:`whisperkd.deploy.decoders`). ``timestamps``: False (timed segments for the
    recordings longer than their window), True (for every recording: srt, vtt) or None (never: long recordings
    are cut into consecutive windows, one segment each); ``progress``: show a bar on stderr."""

    def __init__(self, decoder, batch_size: int = 8, timestamps: bool | None = False, progress: bool = False):
        self.decoder, self.batch_size = decoder, batch_size
        self.timestamps, self.progress = timestamps, progress

    def _cut(self, audios: list, seconds: int, offset: int) -> list[Transcript]:
        """Long recordings without timestamps: consecutive windows decoded as short ones, one segment each."""
        pieces = [(n, k, w) for n, audio in enumerate(audios) for k, w in enumerate(_windows(audio, seconds))]
        texts: list[str] = []
        for i in range(0, len(pieces), self.batch_size):
            chunk = pieces[i:i + self.batch_size]
            texts += [t.text for t in self.decoder.texts([w for _, _, w in chunk], seconds, offset + i)]
        found: list[list[Segment]] = [[] for _ in audios]
        for (n, k, w), text in zip(pieces, texts):
            found[n].append(Segment(k * seconds, k * seconds + len(w) / SAMPLE_RATE, text))
        return [timed(segments, len(audio) / SAMPLE_RATE) for segments, audio in zip(found, audios)]

    def _decode(self, batch: Batch, audios: list, offset: int, advance) -> list[Transcript]:
        if batch.long and self.timestamps is None:
            return self._cut(audios, batch.seconds, offset)
        if batch.long or self.timestamps:
            return self.decoder.segments(audios, batch.seconds, offset, advance)
        return self.decoder.texts(audios, batch.seconds, offset)

    def run(self, probed: list[Probed], on_done: Callable[[Probed, Transcript], None],
            on_skip: Callable[[Item, AudioSkip], None]) -> int:
        """Transcribe ``probed``; ``on_done`` gets each transcript as its batch finishes, ``on_skip`` each item
        that fails to load. Returns how many were transcribed."""
        batches = plan(probed, self.decoder.window, self.batch_size)
        if self.timestamps or (self.timestamps is not None and any(b.long for b in batches)):
            self.decoder.check_timestamps()
        done = 0
        total = sum(p.seconds for p in probed)
        with tqdm(total=round(total, 1), unit="s", desc="transcribing", file=sys.stderr, disable=not self.progress,
                  bar_format="{l_bar}{bar}| {n:.0f}/{total:.0f} s audio [{elapsed}<{remaining}]") as bar:
            for batch in batches:
                members, audios = [], []
                for p in batch.members:
                    try:
                        audios.append(load(p.item))
                        members.append(p)
                    except AudioSkip as skip:
                        on_skip(p.item, skip)
                        bar.update(p.seconds)
                if not members:
                    continue
                batch_seconds = sum(p.seconds for p in members)
                shown = [0.0]

                def advance(seconds: float) -> None:
                    step = min(seconds, batch_seconds - shown[0])
                    if step > 0:
                        shown[0] += step
                        bar.update(step)

                results = self._decode(batch, audios, members[0].index, advance)
                advance(batch_seconds)
                for p, transcript in zip(members, results):
                    on_done(p, transcript)
                done += len(members)
        return done
