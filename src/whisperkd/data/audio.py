"""Decode an audio file (anything libsndfile reads) to 16 kHz mono float32, or say why it is unusable."""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

from whisperkd.data.utterance import Utterance

SAMPLE_RATE = 16_000
MIN_SECONDS = 1.0
MAX_SECONDS = 30.0
SILENCE_PEAK = 1e-4  # about -80 dBFS: below this the clip is treated as silent
MAX_OVERSHOOT = 0.5  # seconds a segment may end past its recording (cut there), as in Kaldi's extract-segments

# First bytes of the containers libsndfile reads. A file that starts like one but cannot be decoded in full
# is reported as "truncated" (cut short or otherwise corrupt); anything else unreadable is "not_audio".
_MAGIC = (b"RIFF", b"RIFX", b"RF64", b"fLaC", b"OggS", b"FORM", b".snd", b"ID3", b"\xff\xfb", b"\xff\xf3")


class AudioSkip(Exception):
    """An input that cannot be used; ``reason`` is a short fixed code (missing, not_a_file, empty, not_audio,
    truncated, non_finite, silent, too_short, too_long; the collator adds too_many_tokens), ``detail`` says more."""

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class DurationFilter:
    """Accepted utterance lengths in seconds (inclusive)."""

    min_seconds: float = MIN_SECONDS
    max_seconds: float = MAX_SECONDS

    def check(self, seconds: float) -> None:
        """Raise :class:`AudioSkip` (``too_short`` / ``too_long``) when ``seconds`` is out of range."""
        if seconds < self.min_seconds:
            raise AudioSkip("too_short", f"{seconds:.2f} s < {self.min_seconds:g} s")
        if seconds > self.max_seconds:
            raise AudioSkip("too_long", f"{seconds:.2f} s > {self.max_seconds:g} s")


def _check_riff_size(head: bytes, size: int) -> None:
    """A WAV whose RIFF header promises more bytes than the file has was cut short."""
    if head[:4] in (b"RIFF", b"RIFX") and len(head) >= 8:
        declared = int.from_bytes(head[4:8], "little" if head[:4] == b"RIFF" else "big")
        if 0 < declared < 0xFFFFFFFF and declared + 8 > size:
            raise AudioSkip("truncated", f"header declares {declared + 8} bytes, file has {size}")


def _open(source: str | Path | bytes) -> sf.SoundFile:
    if isinstance(source, (bytes, bytearray)):
        if len(source) == 0:
            raise AudioSkip("empty", "0 bytes")
        head, handle, size = bytes(source[:8]), io.BytesIO(source), len(source)
    else:
        path = Path(source)
        if not path.exists():
            # <folder>/wav.scp/<id>: the path a Kaldi reader gives an id that wav.scp (or segments) does not list
            unlisted = path.parent.is_file()
            raise AudioSkip("missing", f"'{path.name}' is not listed in {path.parent.name}" if unlisted
                            else "no such file")
        if not path.is_file():
            raise AudioSkip("not_a_file", "a directory or special file")
        size = path.stat().st_size
        if size == 0:
            raise AudioSkip("empty", "0 bytes")
        with open(path, "rb") as f:
            head = f.read(8)
        handle = path
    _check_riff_size(head, size)
    try:
        return sf.SoundFile(handle)
    except (sf.LibsndfileError, RuntimeError, TypeError) as err:
        reason = "truncated" if head.startswith(_MAGIC) else "not_audio"
        raise AudioSkip(reason, str(err).splitlines()[0][:200]) from None


def _span(frames: int, sample_rate: int, start: float | None, end: float | None) -> tuple[int, int]:
    """First and one-past-last frame of the region ``start``-``end`` seconds (None: the beginning / the end).
    An end up to :data:`MAX_OVERSHOOT` seconds past the recording is cut to it (as Kaldi's extract-segments does);
    a region that starts or ends later than that raises ``truncated``: the recording is shorter than it should be."""
    first = int(round((start or 0.0) * sample_rate))
    last = frames if end is None else int(round(end * sample_rate))
    if first >= frames or last > frames + MAX_OVERSHOOT * sample_rate:
        stop = "the end" if end is None else f"{end:g} s"
        raise AudioSkip("truncated", f"segment {start or 0.0:g} s to {stop}, "
                                     f"the recording has {frames / sample_rate:.2f} s")
    last = min(last, frames)
    if last <= first:
        raise AudioSkip("empty", "the segment holds no samples")
    return first, last


def _read(source: str | Path | bytes, durations: DurationFilter | None, start: float | None = None,
          end: float | None = None) -> tuple[np.ndarray, int]:
    with _open(source) as f:
        sr, frames = f.samplerate, f.frames
        if frames <= 0 or sr <= 0:
            raise AudioSkip("empty", "no samples")
        first, last = _span(frames, sr, start, end)
        if durations is not None:
            durations.check((last - first) / sr)
        try:
            if first:
                f.seek(first)  # only the segment's frames are decoded
            data = f.read(-1 if end is None else last - first, dtype="float32", always_2d=True)
        except (sf.LibsndfileError, RuntimeError) as err:
            raise AudioSkip("truncated", str(err).splitlines()[0][:200]) from None
    if data.shape[0] == 0:
        raise AudioSkip("empty", "no samples decoded")
    if data.shape[0] < 0.99 * (last - first):
        raise AudioSkip("truncated", f"decoded {data.shape[0]} of {last - first} frames")
    return data, sr


def to_mono_16k(data: np.ndarray, sample_rate: int) -> np.ndarray:
    """Mix (frames, channels) or (frames,) to mono and resample to 16 kHz with soxr."""
    data = np.asarray(data, dtype=np.float32)
    mono = data.mean(axis=1) if data.ndim == 2 else data
    if sample_rate != SAMPLE_RATE:
        mono = soxr.resample(mono, sample_rate, SAMPLE_RATE, quality="HQ")
    return np.ascontiguousarray(mono, dtype=np.float32)


def check_samples(samples: np.ndarray) -> None:
    """Raise :class:`AudioSkip` for NaN/inf samples (``non_finite``) or silence (``silent``)."""
    if not np.all(np.isfinite(samples)):
        raise AudioSkip("non_finite", f"{int(np.sum(~np.isfinite(samples)))} NaN/inf samples")
    peak = float(np.max(np.abs(samples))) if samples.size else 0.0
    if peak < SILENCE_PEAK:
        raise AudioSkip("silent", f"peak {peak:.2e}")


def load_audio(source: str | Path | bytes | np.ndarray, sample_rate: int | None = None,
               durations: DurationFilter | None = DurationFilter(), start: float | None = None,
               end: float | None = None) -> np.ndarray:
    """16 kHz mono float32 samples of a file path, encoded bytes, or an array at ``sample_rate``; with
    ``start``/``end`` (seconds) only that region, whose length the duration filter then checks.

    Raises :class:`AudioSkip` with a reason code when the input cannot be used.
    """
    if isinstance(source, np.ndarray):
        if sample_rate is None:
            raise ValueError("sample_rate is required for an array")
        if source.size == 0:
            raise AudioSkip("empty", "no samples")
        data, sr = source, sample_rate
        if start is not None or end is not None:
            first, last = _span(data.shape[0], sr, start, end)
            data = data[first:last]
        if durations is not None:
            durations.check(data.shape[0] / sr)
    else:
        data, sr = _read(source, durations, start, end)
    check_samples(np.asarray(data))
    return to_mono_16k(data, sr)


def load_utterance(utt: Utterance, durations: DurationFilter | None = DurationFilter()) -> np.ndarray:
    """The samples of an utterance: its audio, or only its region when it is a segment. Every place that decodes an
    :class:`Utterance` goes through here, so segments are cut wherever data is read."""
    return load_audio(utt.audio, sample_rate=utt.sample_rate, durations=durations, start=utt.start, end=utt.end)


def utterance_seconds(utt: Utterance) -> float:
    """The length of what :func:`load_utterance` returns: ``duration`` when known, else read from the file's header
    (no decoding). Raises :class:`AudioSkip` when the audio cannot be opened."""
    if utt.duration is not None:
        return float(utt.duration)
    if isinstance(utt.audio, np.ndarray):
        if not utt.sample_rate:
            raise ValueError("sample_rate is required for an array")
        frames, sr = utt.audio.shape[0], utt.sample_rate
    else:
        with _open(utt.audio) as f:
            frames, sr = f.frames, f.samplerate
    if frames <= 0 or sr <= 0:
        raise AudioSkip("empty", "no samples")
    first, last = _span(frames, sr, utt.start, utt.end)
    return (last - first) / sr
