"""Open any supported data source by path: manifest (.jsonl/.csv), LibriSpeech tree, Kaldi data folder, or HF
datasets folder."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from whisperkd.data.hf_dataset import is_hf_dataset_dir, read_hf_dataset
from whisperkd.data.kaldi import is_kaldi_dir, read_kaldi
from whisperkd.data.librispeech import read_librispeech, transcript_files
from whisperkd.data.manifest import read_manifest
from whisperkd.data.utterance import Utterance
from whisperkd.errors import UserError

MANIFEST_NAMES = ("manifest.jsonl", "manifest.csv")


@dataclass
class Source:
    """A named sequence of utterances; ``kind`` is 'manifest', 'librispeech', 'kaldi' or 'hf_dataset'."""

    kind: str
    path: Path
    utterances: Sequence[Utterance]

    def __len__(self) -> int:
        return len(self.utterances)

    def __iter__(self):
        return iter(self.utterances)

    def __getitem__(self, index):
        return self.utterances[index]


def detect_kind(path: str | Path) -> str:
    """'manifest', 'hf_dataset', 'kaldi' or 'librispeech' (checked in this order); UserError when nothing matches."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"{path}: no such file or folder")
    if path.is_file():
        if path.suffix.lower() in (".jsonl", ".json", ".csv"):
            return "manifest"
        raise UserError(f"{path}: not a manifest (.jsonl or .csv) nor a data folder")
    if any((path / name).is_file() for name in MANIFEST_NAMES):
        return "manifest"
    if is_hf_dataset_dir(path):
        return "hf_dataset"
    if is_kaldi_dir(path):
        return "kaldi"
    if transcript_files(path):
        return "librispeech"
    half = [name for name in ("wav.scp", "text") if (path / name).is_file()]
    if half:
        raise UserError(f"{path}: has {half[0]} but not {'text' if half[0] == 'wav.scp' else 'wav.scp'}; a Kaldi "
                        f"data folder needs both")
    raise UserError(f"{path}: not a data source (expected manifest.jsonl, a LibriSpeech tree with "
                    f"*.trans.txt, a Kaldi data folder with wav.scp and text, or a Hugging Face save_to_disk folder)")


def open_source(path: str | Path, split: str | None = None) -> Source:
    """Detect the kind of ``path`` and read its utterances (``split`` only for a HF DatasetDict)."""
    path = Path(path)
    kind = detect_kind(path)
    if kind == "manifest":
        file = path if path.is_file() else next(path / n for n in MANIFEST_NAMES if (path / n).is_file())
        return Source(kind, file, read_manifest(file))
    if kind == "hf_dataset":
        return Source(kind, path, read_hf_dataset(path, split=split))
    if kind == "kaldi":
        return Source(kind, path, read_kaldi(path))
    return Source(kind, path, read_librispeech(path))
