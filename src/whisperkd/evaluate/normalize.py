"""Whisper's English text normaliser, built from the spelling map shipped with whisperkd.

Every WER/CER in whisperkd is computed on normalised text, for every model (HF, CTranslate2, ours or
not), so the normaliser never comes from a model's tokenizer: it is built once from
``resources/english_spelling.json`` (openai/whisper's ``english.json``, MIT).
"""

from __future__ import annotations

import json
from functools import lru_cache

from transformers.models.whisper.english_normalizer import EnglishTextNormalizer

from whisperkd.models.tokenizer import english_spelling_file


@lru_cache(maxsize=1)
def english_normalizer() -> EnglishTextNormalizer:
    """The EnglishTextNormalizer of openai/whisper with its British-to-American spelling map."""
    with open(english_spelling_file(), encoding="utf-8") as f:
        return EnglishTextNormalizer(json.load(f))


def normalize(text: str) -> str:
    """``"Mr. Smith paid twenty five dollars for the colour"`` -> ``"mister smith paid $25 for the color"``."""
    return english_normalizer()(text)
