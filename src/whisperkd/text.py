"""Text scoring: Whisper's English normaliser and the one word/character error count of whisperkd.

Every WER in whisperkd (evaluate, dev evaluation during distillation, pseudo-label filtering) is computed here,
on text passed through Whisper's English normaliser ("Mr." = "mister", "twenty five" = "25", "colour" =
"color"), built once from ``resources/english_spelling.json`` (openai/whisper's ``english.json``, MIT), never
from a model's tokenizer. This module imports nothing else of whisperkd.

A corpus rate is the sum of the edits over the sum of reference lengths, never a mean of per-utterance
rates. An utterance whose normalised reference is empty (``"(End of volume one.)"`` -> ``""``: the normaliser
drops bracketed text) is left out of a corpus rate, as the Open ASR Leaderboard does; alone its rate is 0
(nothing said) or inf. Characters include the spaces between words (jiwer's character transform).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path

import jiwer
from transformers.models.whisper.english_normalizer import EnglishTextNormalizer


def english_spelling_file() -> Path:
    """Whisper's English spelling map (``english.json`` from openai/whisper, MIT), shipped with whisperkd."""
    return Path(str(resources.files("whisperkd") / "resources" / "english_spelling.json"))


@lru_cache(maxsize=1)
def english_normalizer() -> EnglishTextNormalizer:
    """The EnglishTextNormalizer of openai/whisper with its British-to-American spelling map."""
    with open(english_spelling_file(), encoding="utf-8") as f:
        return EnglishTextNormalizer(json.load(f))


def normalize(text: str) -> str:
    """``"Mr. Smith paid twenty five dollars for the colour"`` -> ``"mister smith paid $25 for the color"``."""
    return english_normalizer()(text)


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
    """Edits that turn ``reference`` into ``hypothesis`` (already normalised), in words or characters."""
    if unit not in ("word", "char"):
        raise ValueError(f"unit must be 'word' or 'char', got {unit!r}")
    if not reference.split():  # jiwer needs a non-empty reference: everything said is inserted
        return Errors(insertions=len(_units(hypothesis, unit)))
    if not hypothesis.split():
        return Errors(deletions=len(_units(reference, unit)))
    reference, hypothesis = " ".join(reference.split()), " ".join(hypothesis.split())
    out = jiwer.process_words(reference, hypothesis) if unit == "word" else jiwer.process_characters(reference, hypothesis)
    return Errors(out.substitutions, out.deletions, out.insertions, out.hits)


def corpus_errors(references: Iterable[str], hypotheses: Iterable[str], unit: str = "word") -> Errors:
    """The sum of :func:`errors` over aligned pairs of already-normalised texts whose reference is not empty."""
    references, hypotheses = list(references), list(hypotheses)
    if len(references) != len(hypotheses):
        raise ValueError(f"{len(references)} references but {len(hypotheses)} hypotheses")
    total = Errors()
    for ref, hyp in zip(references, hypotheses):
        if ref.split():
            total = total + errors(ref, hyp, unit)
    return total


def wer(references: Iterable[str], hypotheses: Iterable[str], normalized: bool = True) -> float:
    """Corpus word error rate; ``normalized=False`` passes both sides through :func:`normalize` first."""
    if not normalized:
        references, hypotheses = map(normalize, references), map(normalize, hypotheses)
    return corpus_errors(references, hypotheses, "word").rate
