"""LibriSpeech layout: ``<speaker>/<chapter>/<speaker>-<chapter>-<utt>.flac`` + ``<speaker>-<chapter>.trans.txt``."""

from __future__ import annotations

from pathlib import Path

from whisperkd.data.utterance import Utterance
from whisperkd.errors import UserError

AUDIO_SUFFIXES = (".flac", ".wav", ".ogg")


def transcript_files(root: str | Path) -> list[Path]:
    """All ``*.trans.txt`` files under ``root``, sorted."""
    return sorted(Path(root).rglob("*.trans.txt"))


def _audio_for(folder: Path, utt_id: str) -> Path:
    for suffix in AUDIO_SUFFIXES:
        candidate = folder / f"{utt_id}{suffix}"
        if candidate.exists():
            return candidate
    return folder / f"{utt_id}{AUDIO_SUFFIXES[0]}"  # missing: the loader skips it with reason "missing"


def read_transcripts(trans: Path) -> list[Utterance]:
    """The utterances of one chapter; the speaker is the name of the chapter folder's parent."""
    speaker = trans.parent.parent.name
    out = []
    with open(trans, encoding="utf-8") as f:
        for number, line in enumerate(f, start=1):
            line = line.rstrip("\r\n")
            if not line.strip():
                continue
            parts = line.split(maxsplit=1)
            if len(parts) < 2:
                raise UserError(f"{trans}:{number}: missing field 'text' (expected '<utterance-id> <transcript>')")
            utt_id, text = parts
            out.append(Utterance(id=utt_id, audio=_audio_for(trans.parent, utt_id), text=text.strip(),
                                 speaker=speaker))
    return out


def read_librispeech(root: str | Path) -> list[Utterance]:
    """All utterances of a LibriSpeech-style folder tree, in sorted file order."""
    files = transcript_files(root)
    if not files:
        raise UserError(f"{root}: no '*.trans.txt' files found (expected <speaker>/<chapter>/<speaker>-<chapter>.trans.txt)")
    return [utt for trans in files for utt in read_transcripts(trans)]
