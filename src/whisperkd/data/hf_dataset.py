"""A local Hugging Face ``datasets`` folder (written with ``save_to_disk``) that has an Audio column.

Audio is read undecoded (bytes or path) and decoded by :func:`whisperkd.data.audio.load_audio`, so no
extra audio backend is needed. ``datasets`` is optional: ``pip install 'whisperkd[datasets]'``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from whisperkd.data.utterance import Utterance
from whisperkd.errors import UserError

TEXT_COLUMNS = ("text", "sentence", "transcription", "transcript", "normalized_text")
ID_COLUMNS = ("id", "utterance_id", "file", "path")
SPEAKER_COLUMNS = ("speaker_id", "speaker", "client_id")


def is_hf_dataset_dir(path: str | Path) -> bool:
    """Whether ``path`` looks like the output of ``Dataset(Dict).save_to_disk``."""
    path = Path(path)
    return (path / "dataset_dict.json").is_file() or (
        (path / "state.json").is_file() and (path / "dataset_info.json").is_file())


def _import_datasets():
    try:
        import datasets
    except ImportError:
        raise UserError("reading a Hugging Face dataset folder needs the 'datasets' package: "
                        "pip install 'whisperkd[datasets]'") from None
    return datasets


def _pick(columns: list[str], wanted: tuple[str, ...]) -> str | None:
    return next((c for c in wanted if c in columns), None)


class HFDatasetUtterances(Sequence):
    """Random access to the rows of a datasets.Dataset as :class:`Utterance` (audio as encoded bytes)."""

    def __init__(self, dataset, audio_column: str, text_column: str, base: Path):
        self.dataset = dataset
        self.audio_column, self.text_column, self.base = audio_column, text_column, base
        columns = list(dataset.column_names)
        self.id_column = _pick(columns, ID_COLUMNS)
        self.speaker_column = _pick(columns, SPEAKER_COLUMNS)

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index):
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        if index < 0:
            index += len(self)
        row = self.dataset[int(index)]
        audio = row[self.audio_column] or {}
        if audio.get("bytes"):
            source = audio["bytes"]
        elif audio.get("path"):
            source = Path(audio["path"]) if Path(audio["path"]).is_absolute() else self.base / audio["path"]
        else:
            source = b""
        utt_id = str(row[self.id_column]) if self.id_column else f"{index:08d}"
        speaker = row.get(self.speaker_column) if self.speaker_column else None
        return Utterance(id=utt_id, audio=source, text=str(row[self.text_column] or ""),
                         speaker=None if speaker is None else str(speaker))


def read_hf_dataset(path: str | Path, split: str | None = None, text_column: str | None = None) -> HFDatasetUtterances:
    """Open a ``save_to_disk`` folder; for a DatasetDict choose ``split`` (or its only split)."""
    datasets = _import_datasets()
    path = Path(path)
    loaded = datasets.load_from_disk(str(path))
    if isinstance(loaded, datasets.DatasetDict):
        names = list(loaded.keys())
        if split is None and len(names) == 1:
            split = names[0]
        if split not in loaded:
            raise UserError(f"{path}: choose a split with --split (one of: {', '.join(names)})")
        loaded = loaded[split]
    audio_columns = [n for n, f in loaded.features.items() if isinstance(f, datasets.Audio)]
    if not audio_columns:
        raise UserError(f"{path}: no Audio column (features: {', '.join(loaded.features)})")
    columns = list(loaded.column_names)
    text_column = text_column or _pick(columns, TEXT_COLUMNS)
    if text_column is None or text_column not in columns:
        raise UserError(f"{path}: no transcript column (expected one of {', '.join(TEXT_COLUMNS)})")
    loaded = loaded.cast_column(audio_columns[0], datasets.Audio(decode=False))
    return HFDatasetUtterances(loaded, audio_columns[0], text_column, path)
