"""What ``whisperkd transcribe`` is given, turned into a list of recordings.

Each argument is, checked in this order:

- an existing folder: a data source when :func:`whisperkd.data.sources.detect_kind` recognises one (a folder
  with ``manifest.jsonl``/``manifest.csv``, a Kaldi data folder, a LibriSpeech tree, a Hugging Face
  ``save_to_disk`` folder), else every audio file under it (recursively, by extension: :data:`AUDIO_SUFFIXES`);
- an existing file ending in ``.jsonl``, ``.json`` or ``.csv``: a manifest (:func:`whisperkd.data.sources.open_source`);
- a glob pattern (``*``, ``?`` or ``[`` in a path that does not exist; quote it so that the shell leaves it to us):
  the files it matches, ``**`` across folders;
- anything else: one audio file (a missing one is reported and skipped later, as every unusable file is).

Every recording gets a ``name``, unique among the inputs, for its output file: the path below the folder (or
the fixed part of the glob) without extension, the file's stem, or a data source's utterance id.
"""

from __future__ import annotations

import glob
import re
from dataclasses import dataclass, replace
from pathlib import Path

from whisperkd.data.sources import detect_kind, open_source
from whisperkd.data.utterance import Utterance
from whisperkd.errors import UserError

# What libsndfile (soundfile) decodes; a folder contributes the files with these extensions (any letter case).
AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".aif", ".aiff", ".aifc", ".au", ".snd",
                  ".w64", ".rf64", ".caf")
MANIFEST_SUFFIXES = (".jsonl", ".json", ".csv")


@dataclass(frozen=True)
class Item:
    """One recording to transcribe. ``label``: how lines and the skip list name it (the path, or a data
    source's utterance id); ``source``: the argument it came from; ``name``: its output file name (relative,
    without extension); ``audio``: its audio file as the user would write it (None for audio held in a dataset)."""

    label: str
    utterance: Utterance
    source: str
    name: str
    audio: str | None


@dataclass(frozen=True)
class Unmatched:
    """An argument that names no recording: a glob that matches nothing, a folder without audio files."""

    source: str
    reason: str
    detail: str


def _safe(name: str) -> str:
    """``name`` as a relative file path: path parts kept, anything but letters, digits, ``._-`` replaced by ``_``."""
    parts = [re.sub(r"[^\w.\-]+", "_", p).strip(".") or "_" for p in re.split(r"[\\/]+", name) if p not in ("", ".", "..")]
    return "/".join(parts) or "_"


def _file(path: Path, source: str, label: str, name: str) -> Item:
    return Item(label, Utterance(id=name, audio=path, text=""), source, name, label)


def _audio_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in AUDIO_SUFFIXES and not p.is_dir())


def _fixed_part(pattern: str) -> Path:
    """The folder a glob pattern starts from: its leading parts without wildcards."""
    parts = []
    for part in Path(pattern).parts[:-1]:
        if glob.has_magic(part):
            break
        parts.append(part)
    return Path(*parts) if parts else Path(".")


def _from_source(path: Path, spec: str) -> list[Item]:
    source = open_source(path)
    return [Item(u.id, u, spec, _safe(u.id), str(u.path) if u.path else None) for u in source]


def _from_folder(folder: Path, spec: str) -> list[Item] | Unmatched:
    try:
        detect_kind(folder)
    except UserError:
        files = _audio_files(folder)
        if not files:
            return Unmatched(spec, "missing", f"no audio files ({', '.join(AUDIO_SUFFIXES[:4])}, ...) in this folder")
        return [_file(p, spec, str(p), _safe(str(p.relative_to(folder).with_suffix("")))) for p in files]
    return _from_source(folder, spec)


def _from_glob(pattern: str) -> list[Item] | Unmatched:
    base = _fixed_part(pattern)
    items: list[Item] = []
    for match in sorted(glob.glob(pattern, recursive=True)):
        path = Path(match)
        if path.is_dir():
            found = _from_folder(path, pattern)
            items += found if isinstance(found, list) else []
            continue
        try:
            relative = path.relative_to(base)
        except ValueError:
            relative = Path(path.name)
        items.append(_file(path, pattern, match, _safe(str(relative.with_suffix("")))))
    return items or Unmatched(pattern, "missing", "no file matches this pattern")


def _unique(items: list[Item]) -> list[Item]:
    """Items with names made unique (case-insensitively, for case-insensitive file systems): a repeated name
    gets ``-2``, ``-3``, ... ."""
    seen: set[str] = set()
    out = []
    for item in items:
        name, n = item.name, 1
        while name.lower() in seen:
            n += 1
            name = f"{item.name}-{n}"
        seen.add(name.lower())
        out.append(item if name == item.name else replace(item, name=name))
    return out


def collect_inputs(specs: list[str]) -> tuple[list[Item], list[Unmatched]]:
    """The recordings that ``specs`` (files, folders, glob patterns, manifests and data folders) name, in the
    order given (a folder's and a glob's files sorted by path), and the arguments that name none.
    A data source that cannot be read (a manifest with a bad line, say) raises its one-line UserError."""
    items: list[Item] = []
    unmatched: list[Unmatched] = []
    for spec in specs:
        path = Path(spec).expanduser()
        if path.is_dir():
            found = _from_folder(path, spec)
        elif path.is_file() and path.suffix.lower() in MANIFEST_SUFFIXES:
            found = _from_source(path, spec)
        elif not path.exists() and glob.has_magic(spec):
            found = _from_glob(str(path))
        else:
            found = [_file(path, spec, spec, _safe(path.stem))]
        if isinstance(found, Unmatched):
            unmatched.append(found)
        else:
            items += found
    return _unique(items), unmatched
