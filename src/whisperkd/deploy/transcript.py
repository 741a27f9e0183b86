"""What ``whisperkd transcribe`` gives for one recording: its text and its timed segments."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Segment:
    """A stretch of the recording, ``start`` to ``end`` seconds from its beginning, and what was said in it."""

    start: float
    end: float
    text: str


@dataclass
class Transcript:
    """The text of a recording (its segments' texts joined by spaces) and the segments. ``temperature``: the
    temperature of the kept decode, known for short recordings decoded without timestamps (None otherwise)."""

    text: str
    segments: list[Segment] = field(default_factory=list)
    temperature: float | None = None


def whole(text: str, duration: float, temperature: float | None = None) -> Transcript:
    """A transcript without timestamps: one segment from 0 to ``duration`` (none when the text is empty)."""
    text = text.strip()
    segments = [Segment(0.0, round(float(duration), 3), text)] if text else []
    return Transcript(text, segments, temperature=temperature)


def timed(segments: list[Segment], duration: float) -> Transcript:
    """A transcript from decoded segments: empty ones dropped, times cut to ``[0, duration]`` and made
    non-decreasing (a segment never starts before the previous one ended), text joined by spaces."""
    out: list[Segment] = []
    last = 0.0
    for seg in segments:
        text = " ".join(seg.text.split())
        if not text:
            continue
        start = min(max(float(seg.start), last), duration)
        end = min(max(float(seg.end), start), duration)
        out.append(Segment(round(start, 3), round(end, 3), text))
        last = end
    return Transcript(" ".join(s.text for s in out), out)


def segment_text(tokenizer, tokens, first_timestamp: int) -> str:
    """The text of a segment's tokens: timestamp tokens (ids from ``first_timestamp`` on) and special tokens left out."""
    return tokenizer.decode([t for t in tokens if t < first_timestamp], skip_special_tokens=True).strip()
