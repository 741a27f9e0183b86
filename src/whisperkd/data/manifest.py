"""JSONL and CSV manifests: one utterance per line with fields id, audio, text[, duration, speaker].

``audio`` is a path relative to the manifest's folder (absolute paths are kept as they are).
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Iterable, Iterator
from pathlib import Path

from whisperkd.data.atomic import atomic_write_text
from whisperkd.data.utterance import Utterance
from whisperkd.errors import UserError

REQUIRED = ("id", "audio", "text")


def _utterance(row: dict, where: str, base: Path) -> Utterance:
    for field in REQUIRED:
        value = row.get(field)
        if value is None or (isinstance(value, str) and not value.strip() and field != "text"):
            raise UserError(f"{where}: missing field '{field}' (every line needs id, audio, text)")
        if not isinstance(value, (str, int)):
            raise UserError(f"{where}: field '{field}' must be a string, got {type(value).__name__}")
    duration = row.get("duration")
    if duration in ("", None):
        duration = None
    else:
        try:
            duration = float(duration)
        except (TypeError, ValueError):
            raise UserError(f"{where}: field 'duration' must be a number of seconds, got {duration!r}") from None
    speaker = row.get("speaker")
    speaker = None if speaker in ("", None) else str(speaker)
    return Utterance(id=str(row["id"]), audio=base / str(row["audio"]), text=str(row["text"]),
                     duration=duration, speaker=speaker)


def _read_jsonl(path: Path) -> Iterator[Utterance]:
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            where = f"{path}:{number}"
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                raise UserError(f"{where}: not valid JSON ({err.msg}); each line must be one JSON object") from None
            if not isinstance(row, dict):
                raise UserError(f"{where}: expected a JSON object with fields id, audio, text")
            yield _utterance(row, where, path.parent)


def _read_csv(path: Path) -> Iterator[Utterance]:
    with open(path, encoding="utf-8", newline="") as f:
        reader = csv.DictReader(f)
        header = reader.fieldnames or []
        for field in REQUIRED:
            if field not in header:
                raise UserError(f"{path}:1: missing column '{field}' (the header needs id, audio, text)")
        for row in reader:
            yield _utterance(row, f"{path}:{reader.line_num}", path.parent)


def read_manifest(path: str | Path) -> list[Utterance]:
    """All utterances of a ``.jsonl`` or ``.csv`` manifest; a bad line raises UserError naming file:line."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: manifest not found")
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".json"):
        return list(_read_jsonl(path))
    if suffix == ".csv":
        return list(_read_csv(path))
    raise UserError(f"{path}: unknown manifest type '{suffix}' (use .jsonl or .csv)")


def manifest_row(utt: Utterance, base: Path) -> dict:
    """The JSON object for one utterance; its audio path (relative paths are taken from the current
    directory) is written relative to ``base``. A segment (``start``/``end``) has no manifest form: ValueError."""
    if utt.is_segment:
        raise ValueError(f"utterance {utt.id!r} is a segment of {utt.audio}; a manifest lists whole files")
    audio = Path(utt.audio).absolute()
    try:
        audio_str = os.path.relpath(audio, base)
    except ValueError:  # another drive on Windows
        audio_str = str(audio)
    row = {"id": utt.id, "audio": audio_str.replace(os.sep, "/"), "text": utt.text}
    if utt.duration is not None:
        row["duration"] = round(float(utt.duration), 3)
    if utt.speaker is not None:
        row["speaker"] = utt.speaker
    return row


def write_manifest(path: str | Path, utterances: Iterable[Utterance]) -> Path:
    """Write a JSONL manifest atomically (temp file + rename); audio paths relative to its folder."""
    path = Path(path)
    base = path.parent.resolve()
    lines = [json.dumps(manifest_row(utt, base), ensure_ascii=False) + "\n" for utt in utterances]
    return atomic_write_text(path, "".join(lines))
