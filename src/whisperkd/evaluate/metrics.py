"""Word and character error rates with their substitutions, deletions and insertions (jiwer alignments).

Texts are compared after Whisper's English normaliser (:mod:`whisperkd.evaluate.normalize`). A corpus
rate is the sum of the edits over the sum of reference lengths, never a mean of per-utterance rates.
Characters include the spaces between words (jiwer's character transform).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass

import jiwer


@dataclass
class Errors:
    """Edit counts of one alignment (or a sum of them); ``reference`` = hits + substitutions + deletions."""

    substitutions: int = 0
    deletions: int = 0
    insertions: int = 0
    hits: int = 0

    @property
    def reference(self) -> int:
        return self.hits + self.substitutions + self.deletions

    @property
    def edits(self) -> int:
        return self.substitutions + self.deletions + self.insertions

    @property
    def rate(self) -> float:
        """Edits per reference unit; with an empty reference 0 when nothing was inserted, else inf."""
        if self.reference == 0:
            return 0.0 if self.insertions == 0 else float("inf")
        return self.edits / self.reference

    def __add__(self, other: Errors) -> Errors:
        return Errors(self.substitutions + other.substitutions, self.deletions + other.deletions,
                      self.insertions + other.insertions, self.hits + other.hits)

    def as_dict(self) -> dict:
        return {**asdict(self), "reference": self.reference, "rate": self.rate}


def _units(text: str, unit: str) -> list[str]:
    return text.split() if unit == "word" else list(" ".join(text.split()))


def errors(reference: str, hypothesis: str, unit: str = "word") -> Errors:
    """Edits that turn ``reference`` into ``hypothesis``, counted in words or characters (``unit``)."""
    if unit not in ("word", "char"):
        raise ValueError(f"unit must be 'word' or 'char', got {unit!r}")
    if not reference.split():  # jiwer needs a non-empty reference: everything said is inserted
        return Errors(insertions=len(_units(hypothesis, unit)))
    if not hypothesis.split():
        return Errors(deletions=len(_units(reference, unit)))
    out = jiwer.process_words(reference, hypothesis) if unit == "word" else jiwer.process_characters(reference, hypothesis)
    return Errors(out.substitutions, out.deletions, out.insertions, out.hits)


def corpus_errors(references: Iterable[str], hypotheses: Iterable[str], unit: str = "word") -> Errors:
    """The sum of :func:`errors` over aligned pairs."""
    references, hypotheses = list(references), list(hypotheses)
    if len(references) != len(hypotheses):
        raise ValueError(f"{len(references)} references but {len(hypotheses)} hypotheses")
    total = Errors()
    for ref, hyp in zip(references, hypotheses):
        total = total + errors(ref, hyp, unit)
    return total


def wer(references: Iterable[str], hypotheses: Iterable[str]) -> float:
    """Corpus word error rate of already-normalised texts."""
    return corpus_errors(references, hypotheses, "word").rate


def cer(references: Iterable[str], hypotheses: Iterable[str]) -> float:
    """Corpus character error rate of already-normalised texts."""
    return corpus_errors(references, hypotheses, "char").rate
