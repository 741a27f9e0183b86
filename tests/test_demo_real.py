"""The demo's real-speech stage without a model: finding the corpus, fixed dev subsets, the label choices
(pseudo / original / both, WER filter), and mixing manifests with prefixed ids."""

from __future__ import annotations

import json

import numpy as np
import pytest

from helpers import write
from whisperkd.data.manifest import read_manifest, write_manifest
from whisperkd.data.utterance import Utterance
from whisperkd.demo_real import (find_real_corpus, hash_order, mix_manifests, real_dev_subsets,
                                 training_utterances)
from whisperkd.distill.dev_eval import part_wers
from whisperkd.errors import UserError


def _corpus(tmp_path, n_dev=10):
    for split, n in (("train", 4), ("dev", n_dev)):
        utts = [Utterance(f"{split}{i:03d}", write(tmp_path / split / f"{split}{i}.wav", np.full(8000, 0.1, np.float32)),
                          f"WORD {i}", 0.5, speaker=f"{split}-spk{i % 2}") for i in range(n)]
        write_manifest(tmp_path / split / "manifest.jsonl", utts)
    return tmp_path


def test_find_real_corpus_given_env_and_none(tmp_path, monkeypatch):
    corpus = _corpus(tmp_path / "c")
    assert find_real_corpus(corpus) == corpus
    assert find_real_corpus("none") is None
    monkeypatch.setenv("WHISPERKD_REAL_CORPUS", str(corpus))
    assert find_real_corpus() == corpus
    monkeypatch.setenv("WHISPERKD_REAL_CORPUS", "none")
    assert find_real_corpus() is None
    with pytest.raises(UserError, match=r"no dev/ folder"):
        (tmp_path / "half" / "train").mkdir(parents=True)
        find_real_corpus(tmp_path / "half")


def test_dev_subsets_are_fixed_disjoint_and_sized(tmp_path):
    corpus = _corpus(tmp_path / "c", n_dev=10)
    select, report = real_dev_subsets(corpus, tmp_path / "out", 3, 5)
    a, b = [u.id for u in read_manifest(select)], [u.id for u in read_manifest(report)]
    assert len(a) == 3 and len(b) == 5 and not set(a) & set(b)
    again = real_dev_subsets(corpus, tmp_path / "out2", 3, 5)
    assert [u.id for u in read_manifest(again[0])] == a and [u.id for u in read_manifest(again[1])] == b
    with pytest.raises(UserError, match="needs 11"):
        real_dev_subsets(corpus, tmp_path / "out3", 6, 5)


def test_hash_order_does_not_depend_on_input_order():
    utts = [Utterance(str(i), b"", "x") for i in range(20)]
    assert [u.id for u in hash_order(utts, "s")] == [u.id for u in hash_order(utts[::-1], "s")]
    assert [u.id for u in hash_order(utts, "s")] != [u.id for u in hash_order(utts, "t")]


def test_label_choices_and_wer_filter(tmp_path):
    audio = write(tmp_path / "a.wav", np.full(8000, 0.1, np.float32))
    rows = [{"id": "u1", "audio": str(audio), "text": "Two six four eight.", "text_original": "TWO SIX FOUR EIGHT",
             "wer": 0.0},
            {"id": "u2", "audio": str(audio), "text": "We call it bear.", "text_original": "WE CALL IT A BEAR",
             "wer": 0.2},
            {"id": "u3", "audio": str(audio), "text": "The boy the boy the boy", "text_original": "THE BOY",
             "wer": 2.0}]
    labelled = tmp_path / "labelled.jsonl"
    labelled.write_text("".join(json.dumps(r) + "\n" for r in rows))
    pseudo = training_utterances(labelled, "pseudo", None)
    assert [(u.id, u.text) for u in pseudo] == [(r["id"], r["text"]) for r in rows]
    filtered = training_utterances(labelled, "pseudo", 0.5)
    assert [u.id for u in filtered] == ["u1", "u2"]
    original = training_utterances(labelled, "original", 0.5)  # the corpus text needs no filter
    assert [u.id for u in training_utterances(labelled, "pseudo", None, ids=["u3", "u1"])] == ["u1", "u3"]
    assert [(u.id, u.text) for u in original] == [(r["id"], r["text_original"]) for r in rows]
    both = training_utterances(labelled, "both", 0.5)  # u1's texts agree after normalisation: once
    assert [(u.id, u.text) for u in both] == [("u1", "Two six four eight."), ("u2", "We call it bear."),
                                              ("u2#original", "WE CALL IT A BEAR")]
    with pytest.raises(UserError, match="real labels 'truth'"):
        training_utterances(labelled, "truth", None)


def test_mix_prefixes_ids_and_keeps_audio(tmp_path):
    a = write_manifest(tmp_path / "a" / "manifest.jsonl",
                       [Utterance("packed-00000", write(tmp_path / "a" / "x.wav", np.zeros(800, np.float32)), "a")])
    b = write_manifest(tmp_path / "b" / "manifest.jsonl",
                       [Utterance("packed-00000", write(tmp_path / "b" / "x.wav", np.zeros(800, np.float32)), "b")])
    mixed = read_manifest(mix_manifests({"synthetic": a, "real": b}, tmp_path / "m" / "manifest.jsonl"))
    assert [(u.id, u.text) for u in mixed] == [("synthetic/packed-00000", "a"), ("real/packed-00000", "b")]
    assert [u.path.resolve() for u in mixed] == [(tmp_path / "a" / "x.wav").resolve(), (tmp_path / "b" / "x.wav").resolve()]


def test_mixed_dev_set_gets_a_wer_per_part():
    ids = ["synthetic/a", "real/b", "real/c"]
    refs = ["the cat sat", "good morning", "we call it bear"]
    hyps = ["the cat sat", "good", "we call it a bear"]  # real: 1 deletion + 1 insertion in 6 words
    assert part_wers(ids, refs, hyps) == {"wer_real": pytest.approx(2 / 6), "wer_synthetic": 0.0}
    assert part_wers(["a", "real/b"], refs[:2], hyps[:2]) == {}  # an id without a part: no breakdown
    assert part_wers(["real/b", "real/c"], refs[1:], hyps[1:]) == {}  # one part only
