"""The one record every data source yields."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass
class Utterance:
    """One utterance: ``audio`` is a file path, encoded bytes, or a sample array at ``sample_rate``."""

    id: str
    audio: Path | bytes | np.ndarray
    text: str
    duration: float | None = None
    speaker: str | None = None
    sample_rate: int | None = None

    @property
    def path(self) -> Path | None:
        """The audio file, when the audio is a file."""
        return Path(self.audio) if isinstance(self.audio, (str, Path)) else None
