"""The four output formats of ``whisperkd transcribe``: txt, jsonl, srt (SubRip) and vtt (WebVTT).

- txt: on stdout one ``LABEL<TAB>TEXT`` line per recording; in ``--out-dir`` one ``NAME.txt`` per recording
  holding its text;
- jsonl: one JSON object per recording (``id``, ``audio``, ``text``, ``duration``, ``segments`` with ``start``,
  ``end``, ``text`` in seconds, ``temperature`` when known), on stdout or in ``OUT_DIR/transcripts.jsonl``;
- srt: ``NAME.srt``: numbered cues, ``HH:MM:SS,mmm --> HH:MM:SS,mmm``, the text, a blank line;
- vtt: ``NAME.vtt``: a ``WEBVTT`` header, then cues ``HH:MM:SS.mmm --> HH:MM:SS.mmm`` and the text.

Every file is written atomically (:mod:`whisperkd.data.atomic`): a file is whole or absent, never cut short.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import TextIO

from whisperkd.data.atomic import atomic_write_text
from whisperkd.deploy.inputs import Item
from whisperkd.deploy.transcript import Segment, Transcript

FORMATS = ("txt", "jsonl", "srt", "vtt")
JSONL_FILE = "transcripts.jsonl"
JSONL_EVERY_S = 10.0  # transcripts.jsonl is rewritten at most this often during a run (and at its end)


def clock(seconds: float, decimal: str) -> str:
    """``HH:MM:SS<decimal>mmm`` (hours grow past 99 as needed), rounded to the millisecond."""
    ms = max(0, int(round(float(seconds) * 1000)))
    hours, ms = divmod(ms, 3_600_000)
    minutes, ms = divmod(ms, 60_000)
    secs, ms = divmod(ms, 1000)
    return f"{hours:02d}:{minutes:02d}:{secs:02d}{decimal}{ms:03d}"


def _cue_text(text: str) -> str:
    # a cue ends at a blank line, and "-->" would read as a timing line
    return " ".join(text.split()).replace("-->", "->")


def to_srt(segments: list[Segment]) -> str:
    cues = [f"{i}\n{clock(s.start, ',')} --> {clock(s.end, ',')}\n{_cue_text(s.text)}\n"
            for i, s in enumerate(segments, start=1)]
    return "\n".join(cues)


def to_vtt(segments: list[Segment]) -> str:
    cues = [f"{clock(s.start, '.')} --> {clock(s.end, '.')}\n{_cue_text(s.text)}\n" for s in segments]
    return "\n".join(["WEBVTT\n"] + cues)


def jsonl_row(item: Item, transcript: Transcript, duration: float) -> dict:
    row = {"id": item.utterance.id, "audio": item.audio, "text": transcript.text,
           "duration": round(float(duration), 3),
           "segments": [{"start": s.start, "end": s.end, "text": s.text} for s in transcript.segments]}
    if transcript.temperature is not None:
        row["temperature"] = transcript.temperature
    return row


def txt_line(item: Item, transcript: Transcript) -> str:
    return f"{item.label}\t{transcript.text}"


def write_one(out_dir: Path, fmt: str, item: Item, transcript: Transcript) -> Path | None:
    """Write ``item``'s file in ``out_dir`` for ``fmt`` (txt, srt, vtt); jsonl has one file for all
    (:func:`write_jsonl`), so nothing is written here for it."""
    if fmt == "jsonl":
        return None
    body = {"txt": lambda t: t.text + "\n", "srt": lambda t: to_srt(t.segments),
            "vtt": lambda t: to_vtt(t.segments)}[fmt](transcript)
    return atomic_write_text(out_dir / f"{item.name}.{fmt}", body)


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    return atomic_write_text(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))


class Outputs:
    """Where transcripts go. Without ``out_dir``: kept, and printed in input order by :meth:`finish` (txt lines
    or JSON lines). With ``out_dir``: each recording's file is written as soon as it is transcribed;
    ``transcripts.jsonl`` (all recordings so far, in input order) is rewritten at most every
    :data:`JSONL_EVERY_S` seconds and by :meth:`finish`, which the caller runs even when the run is interrupted."""

    def __init__(self, fmt: str, out_dir: Path | None):
        self.fmt, self.out_dir = fmt, out_dir
        self.rows: dict[int, dict] = {}
        self.lines: dict[int, str] = {}
        self._saved = time.monotonic()

    def add(self, index: int, item: Item, transcript: Transcript, duration: float) -> None:
        self.rows[index] = jsonl_row(item, transcript, duration)
        self.lines[index] = txt_line(item, transcript)
        if self.out_dir is None:
            return
        if self.fmt != "jsonl":
            write_one(self.out_dir, self.fmt, item, transcript)
        elif time.monotonic() - self._saved >= JSONL_EVERY_S:
            self._save_jsonl()

    def _save_jsonl(self) -> None:
        write_jsonl(self.out_dir / JSONL_FILE, [self.rows[i] for i in sorted(self.rows)])
        self._saved = time.monotonic()

    def finish(self, stream: TextIO) -> None:
        if self.out_dir is None:
            for i in sorted(self.rows):
                print(json.dumps(self.rows[i], ensure_ascii=False) if self.fmt == "jsonl" else self.lines[i],
                      file=stream)
        elif self.fmt == "jsonl" and self.rows:
            self._save_jsonl()
