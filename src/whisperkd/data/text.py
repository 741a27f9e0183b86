"""Text normalisation for comparing sentences, and removal of evaluation sentences from training text."""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable, Iterable
from typing import TypeVar

T = TypeVar("T")

_APOSTROPHES = re.compile(r"['\u2018\u2019`]")
_NON_WORD = re.compile(r"[^\w]+|_")
_SPACES = re.compile(r"\s+")


def normalize_text(text: str) -> str:
    """Lowercase, drop apostrophes, turn other punctuation into spaces, collapse spaces."""
    text = unicodedata.normalize("NFKC", text).lower()
    text = _APOSTROPHES.sub("", text)
    text = _NON_WORD.sub(" ", text)
    return _SPACES.sub(" ", text).strip()


def _ngrams(words: list[str], n: int) -> set[tuple[str, ...]]:
    return {tuple(words[i:i + n]) for i in range(len(words) - n + 1)}


def exclude_overlap(items: Iterable[T], eval_texts: Iterable[str], ngram: int | None = None,
                    text_of: Callable[[T], str] = lambda x: x if isinstance(x, str) else x.text) -> list[T]:
    """``items`` without those whose text occurs in ``eval_texts`` (normalised comparison).

    With ``ngram=None`` a training text is dropped when it equals an evaluation text. With ``ngram=n``
    it is dropped when it shares any run of ``n`` words with one (catches sentences that contain, or
    are contained in, an evaluation sentence); evaluation texts shorter than ``n`` words must match whole.
    """
    normalised = [normalize_text(t) for t in eval_texts]
    exact = set(normalised)
    grams: set[tuple[str, ...]] = set()
    if ngram is not None:
        for text in normalised:
            words = text.split()
            grams |= _ngrams(words, ngram) if len(words) >= ngram else set()
    kept = []
    for item in items:
        text = normalize_text(text_of(item))
        if text in exact:
            continue
        if grams and _ngrams(text.split(), ngram) & grams:
            continue
        kept.append(item)
    return kept
