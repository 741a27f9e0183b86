"""Deterministic train/dev/test splits that keep each group (speaker, sentence) in one split."""

from __future__ import annotations

import random
from collections.abc import Callable, Hashable, Sequence
from typing import TypeVar

from whisperkd.data.text import normalize_text
from whisperkd.data.utterance import Utterance
from whisperkd.errors import UserError

T = TypeVar("T")
DEFAULT_FRACTIONS = {"train": 0.8, "dev": 0.1, "test": 0.1}


def split_counts(n: int, fractions: dict[str, float]) -> dict[str, int]:
    """Split ``n`` groups by ``fractions`` (largest remainder); every split with a positive fraction
    gets at least one group when there are enough groups."""
    if not fractions or any(f < 0 for f in fractions.values()) or sum(fractions.values()) <= 0:
        raise UserError(f"split fractions must be non-negative and not all zero, got {fractions}")
    total = sum(fractions.values())
    exact = {name: n * f / total for name, f in fractions.items()}
    counts = {name: int(x) for name, x in exact.items()}
    by_remainder = sorted(fractions, key=lambda k: (-(exact[k] - counts[k]), list(fractions).index(k)))
    for name in by_remainder[: n - sum(counts.values())]:
        counts[name] += 1
    wanted = [k for k, f in fractions.items() if f > 0]
    if n >= len(wanted):
        for name in wanted:
            if counts[name] == 0:
                donor = max(counts, key=lambda k: counts[k])
                counts[donor] -= 1
                counts[name] += 1
    return counts


def split_groups(items: Sequence[T], key: Callable[[T], Hashable], fractions: dict[str, float] | None = None,
                 seed: int = 0) -> dict[str, list[T]]:
    """Assign whole groups (items with equal ``key``) to splits; deterministic for ``seed``.

    Items keep their original order inside each split.
    """
    fractions = dict(fractions or DEFAULT_FRACTIONS)
    groups = sorted({key(item) for item in items}, key=str)
    random.Random(seed).shuffle(groups)
    counts = split_counts(len(groups), fractions)
    split_of: dict[Hashable, str] = {}
    start = 0
    for name, count in counts.items():
        for group in groups[start:start + count]:
            split_of[group] = name
        start += count
    out: dict[str, list[T]] = {name: [] for name in fractions}
    for item in items:
        out[split_of[key(item)]].append(item)
    return out


def split_by_speaker(utterances: Sequence[Utterance], fractions: dict[str, float] | None = None,
                     seed: int = 0) -> dict[str, list[Utterance]]:
    """Train/dev/test (or any named fractions) with no speaker in two splits.

    An utterance without a speaker counts as its own speaker.
    """
    return split_groups(utterances, lambda u: u.speaker if u.speaker is not None else f"utt:{u.id}",
                        fractions, seed)


def split_sentences(sentences: Sequence[str], fractions: dict[str, float] | None = None,
                    seed: int = 0) -> dict[str, list[str]]:
    """Disjoint sentence sets; sentences equal after normalisation stay in the same split."""
    return split_groups(sentences, normalize_text, fractions, seed)
