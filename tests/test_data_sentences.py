"""The committed sentence lists and the cleaning rules that made them."""

from __future__ import annotations

import json

import pytest

from whisperkd.data.sentences import clean_sentence, load_sentences, split_sentences_text
from whisperkd.data.text import exclude_overlap, normalize_text
from whisperkd.errors import UserError


def test_committed_lists_are_clean():
    austen, harvard = load_sentences("austen"), load_sentences(["harvard"])
    assert 2500 <= len(austen) <= 4000 and len(harvard) == 720
    for s in austen + harvard:
        assert 4 <= len(s.split()) <= 35, s
        assert s.isascii() and "\u201c" not in s and "_" not in s and "--" not in s, s
        assert not s.upper().startswith(("CHAPTER", "VOLUME")), s
    assert len({normalize_text(s) for s in austen}) == len(austen)


def test_lists_leave_out_the_real_speech_sentences(real_speech_dir):
    rows = [json.loads(line) for line in (real_speech_dir / "manifest.jsonl").read_text().splitlines()]
    evaluation = [r["text"] for r in rows if r["id"].startswith("sense_and_sensibility")]
    assert len(evaluation) == 5
    sentences = load_sentences()
    assert exclude_overlap(sentences, evaluation, ngram=6) == sentences


def test_split_and_clean():
    paragraph = ('Mr. Weston was a man of character. "I am sure," said she, "it is so." She smiled. '
                 "Sorrow came--a gentle sorrow--but not at all.--Miss Taylor married.")
    parts = split_sentences_text(paragraph)
    assert parts[0] == "Mr. Weston was a man of character."
    assert parts[1] == '"I am sure," said she, "it is so."'
    cleaned = [clean_sentence(p) for p in parts]
    assert cleaned[2] is None  # two words
    assert cleaned[3] == "Sorrow came, a gentle sorrow, but not at all."
    assert clean_sentence("CHAPTER XII") is None
    assert clean_sentence("It cost 1811 pounds, or so they said.") is None  # digits are not spoken as written
    assert clean_sentence("\u201cWell, _she_ said so,\u201d he answered her.") == '"Well, she said so," he answered her.'
    assert clean_sentence("He WOULD have told me so.") == "He would have told me so."
    assert clean_sentence('He said "no more and walked away.') == "He said no more and walked away."


def test_unknown_sentence_list():
    with pytest.raises(UserError, match="not a built-in list"):
        load_sentences("shakespeare")


def test_sentence_file(tmp_path):
    (tmp_path / "mine.txt").write_text("One two three four.\n\nFive six seven eight.\n")
    assert load_sentences(str(tmp_path / "mine.txt")) == ["One two three four.", "Five six seven eight."]
