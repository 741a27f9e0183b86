"""WER/CER equal hand computations; the normaliser behaves as Whisper's EnglishTextNormalizer."""

from __future__ import annotations

import math

import pytest

from whisperkd.text import Errors, corpus_errors, english_normalizer, errors, normalize, wer


def test_wer_is_computed_on_normalised_text():
    assert wer(["Mr. Smith paid twenty-five dollars."], ["mister smith paid $25"], normalized=False) == 0.0
    assert wer(["the colour grey"], ["the color gray"], normalized=False) == 0.0
    assert wer(["red green blue black"], ["red green black"], normalized=False) == 0.25
    assert wer(["(laughs)"], [""], normalized=False) == 0.0
    assert errors(normalize("(laughs)"), normalize("hello")).rate == float("inf")  # alone: everything is inserted
    # a corpus leaves out an utterance whose normalised reference is empty (as the Open ASR Leaderboard does)
    assert wer(["(laughs)", "red green"], ["hello", "red green"], normalized=False) == 0.0
    assert wer(["(End of volume one.)", "red green"], ["the end", "red blue"], normalized=False) == 0.5


def test_word_errors_by_hand():
    # the cat sat on the mat -> the cat sit on mat: "sat"->"sit" (S), second "the" dropped (D); 4 hits.
    e = errors("the cat sat on the mat", "the cat sit on mat")
    assert (e.substitutions, e.deletions, e.insertions, e.hits) == (1, 1, 0, 4)
    assert e.reference == 6 and e.rate == pytest.approx(2 / 6)
    e = errors("a b c", "a x c d")  # b->x (S), d inserted (I)
    assert (e.substitutions, e.deletions, e.insertions, e.hits) == (1, 0, 1, 2)
    assert e.rate == pytest.approx(2 / 3)


def test_character_errors_by_hand():
    # "abc d" has 5 characters (the space counts); "abd" keeps a, b, d: c and the space are deleted.
    e = errors("abc d", "abd", unit="char")
    assert (e.substitutions, e.deletions, e.insertions, e.hits) == (0, 2, 0, 3)
    assert corpus_errors(["abc d"], ["abd"], "char").rate == pytest.approx(2 / 5)
    assert corpus_errors(["kitten"], ["sitting"], "char").rate == pytest.approx(3 / 6)  # k->s, e->i, +g


def test_corpus_rate_is_pooled_not_averaged():
    refs, hyps = ["a b c", "d e"], ["a b c", "d"]
    assert wer(refs, hyps) == pytest.approx(1 / 5)  # the mean of per-utterance rates would be 0.25
    total = corpus_errors(refs, hyps)
    assert total == Errors(substitutions=0, deletions=1, insertions=0, hits=4)


def test_empty_sides():
    assert errors("", "") == Errors()
    assert errors("", "a b").insertions == 2 and math.isinf(errors("", "a b").rate)
    assert errors("a b", "") == Errors(deletions=2) and errors("a b", "").rate == 1.0
    assert errors("ab", "", unit="char").deletions == 2
    with pytest.raises(ValueError):
        corpus_errors(["a"], [])


@pytest.mark.parametrize("text, expected", [
    ("Mr. Smith", "mister smith"),
    ("Mrs. Dashwood", "missus dashwood"),
    ("twenty five", "25"),
    ("twenty-five dollars", "$25"),
    ("one hundred and one", "101"),
    ("the colour of the theatre centre", "the color of the theater center"),
    ("I won't", "i will not"),
    ("And so, my fellow Americans!", "and so my fellow americans"),
    ("[laughter] hello (music)", "hello"),
    ("uh, I mean, hmm", "i mean"),
])
def test_normaliser_cases(text, expected):
    assert normalize(text) == expected


def test_normalised_wer_ignores_spelling_variants():
    ref = "Mr. Smith paid twenty five dollars for the colour TV."
    hyp = "mister smith paid $25 for the color tv"
    assert wer([normalize(ref)], [normalize(hyp)]) == 0.0
    assert wer([ref.lower()], [hyp]) > 0.5  # without the normaliser almost every word differs


@pytest.mark.real
def test_same_as_a_converted_model_tokenizer(tiny_en_dir):
    from whisperkd.models.loading import load_processor

    tokenizer = load_processor(tiny_en_dir).tokenizer
    for text in ["Mr. Brown's colour TV cost twenty-five dollars.", "Dr. Who? Uh, it's 10 percent", "OK, the centre"]:
        assert normalize(text) == tokenizer.normalize(text)
    assert english_normalizer() is english_normalizer()  # built once
