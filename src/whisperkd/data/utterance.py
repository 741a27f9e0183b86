"""The one record every data source yields."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass
class Utterance:
    """One utterance: ``audio`` is a file path, encoded bytes, or a sample array at ``sample_rate``.

    ``start`` / ``end`` (seconds) make it a region of a longer recording (Kaldi ``segments``), cut when the audio
    is loaded (:func:`whisperkd.data.audio.load_utterance`); ``end=None`` runs to the end of the recording.
    ``gender`` is what a Kaldi ``spk2gender`` says of the speaker ('m' or 'f'), else None.
    """

    id: str
    audio: Path | bytes | np.ndarray
    text: str
    duration: float | None = None
    speaker: str | None = None
    sample_rate: int | None = None
    start: float | None = None
    end: float | None = None
    gender: str | None = None

    @property
    def path(self) -> Path | None:
        """The audio file, when the audio is a file."""
        return Path(self.audio) if isinstance(self.audio, (str, Path)) else None

    @property
    def is_segment(self) -> bool:
        """Whether only a region (``start``/``end``) of the audio belongs to this utterance."""
        return self.start is not None or self.end is not None
