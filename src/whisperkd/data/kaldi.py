"""Kaldi data folders: ``wav.scp`` and ``text``, optionally ``segments``, ``utt2spk`` and ``spk2gender``.

::

    wav.scp     <recording-id> <path>                              audio files; a piped command ('... |') is refused
    text        <utterance-id> <transcript>                        the utterances, in file order (UTF-8)
    segments    <utterance-id> <recording-id> <start> <end>        seconds; end -1 = to the end of the recording
    utt2spk     <utterance-id> <speaker-id>
    spk2gender  <speaker-id> m|f

A relative path in ``wav.scp`` is taken from the data folder; when it does not exist there but exists from the
current directory (Kaldi recipes write paths relative to the recipe's root), from the current directory.

Without ``segments`` an utterance's recording id is its utterance id. An utterance whose recording is not in
``wav.scp``, or that ``segments`` (when present) does not list, gets the path ``<folder>/wav.scp/<id>`` (or
``<folder>/segments/<id>``), which never exists: the loader skips it with reason ``missing`` like a missing file.
Utterances listed in ``segments`` or ``utt2spk`` but not in ``text`` have no transcript and are left out.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from pathlib import Path

from whisperkd.data.utterance import Utterance
from whisperkd.errors import UserError

REQUIRED = ("wav.scp", "text")
GENDERS = ("m", "f")
_ARCHIVE = re.compile(r"\.ark:\d+$")  # an extended filename: an offset into a Kaldi archive
_FIX = ("convert the audio to files (e.g. `sox in.sph out.wav` or `ffmpeg -i in.sph out.wav`) and list their "
        "paths in wav.scp")


def is_kaldi_dir(path: str | Path) -> bool:
    """Whether ``path`` is a folder holding ``wav.scp`` and ``text``."""
    path = Path(path)
    return path.is_dir() and all((path / name).is_file() for name in REQUIRED)


def _lines(path: Path) -> Iterator[tuple[int, str, str]]:
    """(line number, first field, the rest stripped) of every non-blank line; UserError on bytes that are not UTF-8."""
    with open(path, "rb") as f:
        for number, raw in enumerate(f, start=1):
            try:
                line = raw.decode("utf-8-sig" if number == 1 else "utf-8").strip()
            except UnicodeDecodeError:
                raise UserError(f"{path}:{number}: not UTF-8 text (Kaldi data files must be UTF-8)") from None
            if line:
                parts = line.split(maxsplit=1)
                yield number, parts[0], parts[1].strip() if len(parts) > 1 else ""


def _table(path: Path, expected: str, fields: int | None = None) -> dict[str, tuple[int, str]]:
    """``{key: (line number, value)}`` of one file; with ``fields``, every line must have exactly that many."""
    out: dict[str, tuple[int, str]] = {}
    for number, key, value in _lines(path):
        if fields is not None and len(value.split()) + 1 != fields:
            raise UserError(f"{path}:{number}: expected '{expected}', got {len(value.split()) + 1} fields")
        if key in out:
            raise UserError(f"{path}:{number}: '{key}' appears twice (first on line {out[key][0]}); ids must be unique")
        out[key] = (number, value)
    return out


def _resolve(folder: Path, value: str) -> Path:
    """An audio path of wav.scp: absolute as it is; relative from the data folder, or from the current directory
    when it exists only there; a path that exists nowhere is kept relative to the folder (skipped as missing)."""
    path = Path(value)
    if path.is_absolute():
        return path
    here = folder / path
    if here.exists():
        return here
    from_cwd = Path.cwd() / path
    return from_cwd if from_cwd.exists() else here


def read_wav_scp(folder: Path) -> dict[str, Path]:
    """``{recording-id: audio path}``; UserError naming ``wav.scp:LINE`` for a piped command, an archive offset or
    a line without a path."""
    file = folder / "wav.scp"
    out: dict[str, Path] = {}
    for rec, (number, value) in _table(file, "<recording-id> <path>").items():
        where = f"{file}:{number}"
        if not value:
            raise UserError(f"{where}: missing the audio path (expected '<recording-id> <path>')")
        if value.endswith("|"):
            raise UserError(f"{where}: '{rec}' is a piped command, and whisperkd reads audio files only; {_FIX}")
        if _ARCHIVE.search(value):
            raise UserError(f"{where}: '{rec}' points into a Kaldi archive ({value}); whisperkd reads audio files "
                            f"only; {_FIX}")
        out[rec] = _resolve(folder, value)
    return out


def read_segments(file: Path) -> dict[str, tuple[str, float, float | None]]:
    """``{utterance-id: (recording-id, start, end)}`` in seconds, ``end`` None for -1 (to the end)."""
    expected = "<utterance-id> <recording-id> <start-seconds> <end-seconds>"
    out = {}
    for utt, (number, value) in _table(file, expected, fields=4).items():
        rec, start_text, end_text = value.split()
        where = f"{file}:{number}"
        try:
            start, end = float(start_text), float(end_text)
        except ValueError:
            raise UserError(f"{where}: start and end must be seconds, got {start_text!r} {end_text!r}") from None
        if not (math.isfinite(start) and math.isfinite(end)) or start < 0:
            raise UserError(f"{where}: start must be a number of seconds >= 0 and end one after it (or -1), "
                            f"got {start_text} {end_text}")
        if end != -1 and end <= start:
            raise UserError(f"{where}: end {end_text} is not after start {start_text} "
                            f"(use -1 for the end of the recording)")
        out[utt] = (rec, start, None if end == -1 else end)
    return out


def _speakers(folder: Path) -> tuple[dict[str, str], dict[str, str]]:
    """``utt2spk`` and ``spk2gender`` (each empty when its file is absent)."""
    utt2spk, genders = {}, {}
    if (folder / "utt2spk").is_file():
        utt2spk = {u: v for u, (_, v) in _table(folder / "utt2spk", "<utterance-id> <speaker-id>", 2).items()}
    if (folder / "spk2gender").is_file():
        file = folder / "spk2gender"
        for speaker, (number, value) in _table(file, "<speaker-id> m|f", 2).items():
            if value.lower() not in GENDERS:
                raise UserError(f"{file}:{number}: gender must be m or f, got {value!r}")
            genders[speaker] = value.lower()
    return utt2spk, genders


def read_kaldi(folder: str | Path) -> list[Utterance]:
    """The utterances of a Kaldi data folder, in the order of ``text``; an utterance with an empty transcript is
    kept with text "" (as a manifest line with ``"text": ""`` is)."""
    folder = Path(folder)
    for name in REQUIRED:
        if not (folder / name).is_file():
            raise UserError(f"{folder}: not a Kaldi data folder ({name} not found; it needs wav.scp and text)")
    wavs = read_wav_scp(folder)
    texts = _table(folder / "text", "<utterance-id> <transcript>")
    segments = read_segments(folder / "segments") if (folder / "segments").is_file() else None
    utt2spk, genders = _speakers(folder)
    out = []
    for utt_id, (_, text) in texts.items():
        speaker = utt2spk.get(utt_id)
        start = end = duration = None
        if segments is None:
            audio = wavs.get(utt_id, folder / "wav.scp" / utt_id)
        elif utt_id not in segments:
            audio = folder / "segments" / utt_id
        else:
            rec, start, end = segments[utt_id]
            audio = wavs.get(rec, folder / "wav.scp" / rec)
            duration = None if end is None else end - start
        out.append(Utterance(id=utt_id, audio=audio, text=text, duration=duration, speaker=speaker,
                             start=start, end=end, gender=genders.get(speaker) if speaker else None))
    return out
