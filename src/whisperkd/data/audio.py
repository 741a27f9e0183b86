"""Decode an audio file (anything libsndfile reads) to 16 kHz mono float32, or say why it is unusable."""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

SAMPLE_RATE = 16_000
MIN_SECONDS = 1.0
MAX_SECONDS = 30.0
SILENCE_PEAK = 1e-4  # about -80 dBFS: below this the clip is treated as silent

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
            raise AudioSkip("missing", "no such file")
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


def _read(source: str | Path | bytes, durations: DurationFilter | None) -> tuple[np.ndarray, int]:
    with _open(source) as f:
        sr, frames = f.samplerate, f.frames
        if frames <= 0 or sr <= 0:
            raise AudioSkip("empty", "no samples")
        if durations is not None:
            durations.check(frames / sr)
        try:
            data = f.read(dtype="float32", always_2d=True)
        except (sf.LibsndfileError, RuntimeError) as err:
            raise AudioSkip("truncated", str(err).splitlines()[0][:200]) from None
    if data.shape[0] == 0:
        raise AudioSkip("empty", "no samples decoded")
    if data.shape[0] < 0.99 * frames:
        raise AudioSkip("truncated", f"decoded {data.shape[0]} of {frames} frames")
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
               durations: DurationFilter | None = DurationFilter()) -> np.ndarray:
    """16 kHz mono float32 samples of a file path, encoded bytes, or an array at ``sample_rate``.

    Raises :class:`AudioSkip` with a reason code when the input cannot be used.
    """
    if isinstance(source, np.ndarray):
        if sample_rate is None:
            raise ValueError("sample_rate is required for an array")
        if source.size == 0:
            raise AudioSkip("empty", "no samples")
        data, sr = source, sample_rate
        if durations is not None:
            durations.check(data.shape[0] / sr)
    else:
        data, sr = _read(source, durations)
    check_samples(np.asarray(data))
    return to_mono_16k(data, sr)
