"""The repetition-loop guard."""

from __future__ import annotations

import pytest

from whisperkd.evaluate.loops import cut_repetition_loop

LOOP = ("And so my fellow Americans, ask not what you can do for you, ask what you can do for you, ask what you "
        "can do for you, ask what you can do for you, but you can do for you")


def test_a_loop_is_cut_at_the_third_occurrence():
    assert cut_repetition_loop(LOOP) == ("And so my fellow Americans, ask not what you can do for you, ask what you "
                                         "can do for you, ask")


def test_text_without_a_loop_is_unchanged():
    ref = ("And so, my fellow Americans, ask not what your country can do for you, ask what you can do for your "
           "country.")
    assert cut_repetition_loop(ref) == ref
    assert cut_repetition_loop("") == ""
    assert cut_repetition_loop("yes yes yes", n=4) == "yes yes yes"


def test_case_and_punctuation_are_ignored_and_limits_apply():
    assert cut_repetition_loop("I quite detest the man. I quite detest the man. I Quite, detest the man.") == \
        "I quite detest the man. I quite detest the man."
    assert cut_repetition_loop("a b a b a b", n=2, max_count=1) == "a b"
    with pytest.raises(ValueError):
        cut_repetition_loop("a", n=0)


def test_wer_with_guard_rescores_saved_transcripts():
    from whisperkd.evaluate.loops import wer_with_guard

    rows = [{"reference_normalized": "i quite detest the man",
             "hypothesis": "I quite detest the man. I quite detest the man. I quite detest the man."},
            {"reference_normalized": "he was not an ill disposed young man",
             "hypothesis": "He was not an ill disposed young man."}]
    assert wer_with_guard(rows) == pytest.approx(5 / 13)  # 5 insertions left of the loop (one copy stays)


def test_engines_cut_loops_only_when_asked():
    from whisperkd.evaluate.engines import _guarded

    class Engine:
        loop_guard = False

    engine = Engine()
    assert _guarded(engine, [LOOP]) == [LOOP]
    engine.loop_guard = True
    assert _guarded(engine, [LOOP, "fine."]) == [cut_repetition_loop(LOOP), "fine."]
