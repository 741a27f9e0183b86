"""Speaker-disjoint splits, sentence splits, text normalisation and evaluation-sentence exclusion."""

from __future__ import annotations

from pathlib import Path

import pytest

from whisperkd.data.splits import split_by_speaker, split_counts, split_sentences
from whisperkd.data.text import exclude_overlap, normalize_text
from whisperkd.data.utterance import Utterance
from whisperkd.errors import UserError


def corpus(speakers=20, per_speaker=5):
    return [Utterance(f"s{s}-{i}", Path(f"s{s}-{i}.wav"), f"text {s} {i}", 2.0, f"spk{s}")
            for s in range(speakers) for i in range(per_speaker)]


def test_no_speaker_in_two_splits():
    splits = split_by_speaker(corpus(), seed=3)
    speakers = {name: {u.speaker for u in utts} for name, utts in splits.items()}
    assert not speakers["train"] & speakers["dev"]
    assert not speakers["train"] & speakers["test"]
    assert not speakers["dev"] & speakers["test"]
    assert {len(s) for s in speakers.values()} == {16, 2}
    assert sum(len(u) for u in splits.values()) == 100


def test_split_is_deterministic_by_seed():
    a = split_by_speaker(corpus(), seed=1)
    b = split_by_speaker(list(reversed(corpus())), seed=1)
    assert {u.speaker for u in a["test"]} == {u.speaker for u in b["test"]}
    others = [{u.speaker for u in split_by_speaker(corpus(), seed=s)["test"]} for s in range(2, 8)]
    assert any(o != {u.speaker for u in a["test"]} for o in others)


def test_custom_fractions_and_speakerless_utterances():
    utts = corpus(speakers=10, per_speaker=2) + [Utterance(f"x{i}", Path("x.wav"), "t") for i in range(10)]
    splits = split_by_speaker(utts, {"train": 0.5, "heldout": 0.5}, seed=0)
    assert set(splits) == {"train", "heldout"}
    groups = {name: {u.speaker or u.id for u in us} for name, us in splits.items()}
    assert len(groups["train"]) == len(groups["heldout"]) == 10


@pytest.mark.parametrize("n, expected", [(10, {"train": 8, "dev": 1, "test": 1}), (3, {"train": 1, "dev": 1, "test": 1}),
                                         (1, {"train": 1, "dev": 0, "test": 0}), (4, {"train": 2, "dev": 1, "test": 1})])
def test_split_counts(n, expected):
    assert split_counts(n, {"train": 0.8, "dev": 0.1, "test": 0.1}) == expected


def test_bad_fractions():
    with pytest.raises(UserError):
        split_counts(5, {"train": -1.0, "dev": 1.0})


def test_normalize_text():
    assert normalize_text("  Hello,   WORLD! It's  ill-disposed...") == "hello world its ill disposed"
    assert normalize_text("Café—naïve") == "café naïve"


def test_exclude_exact_and_ngram():
    train = ["He was not an ill-disposed young man.", "A different sentence entirely here.",
             "He was not an ill-disposed young man, unless to be rather cold-hearted is to be ill-disposed.",
             "HE WAS NOT AN ILL DISPOSED YOUNG MAN"]
    evaluation = ["he was not an ill disposed young man"]
    assert exclude_overlap(train, evaluation) == train[1:3]
    assert exclude_overlap(train, evaluation, ngram=6) == train[1:2]
    utts = [Utterance("a", Path("a"), train[0]), Utterance("b", Path("b"), train[1])]
    assert [u.id for u in exclude_overlap(utts, evaluation)] == ["b"]


def test_split_sentences_is_disjoint_after_normalisation():
    sentences = [f"Sentence number {i}." for i in range(50)] + ["sentence NUMBER 3"]
    splits = split_sentences(sentences, seed=0)
    keys = {name: {normalize_text(s) for s in ss} for name, ss in splits.items()}
    assert not keys["train"] & keys["dev"] and not keys["train"] & keys["test"] and not keys["dev"] & keys["test"]
    where = [name for name, ss in splits.items() if "sentence NUMBER 3" in ss]
    assert "Sentence number 3." in splits[where[0]]
