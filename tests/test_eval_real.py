"""`whisperkd evaluate` on the real clips with the real tiny.en, base and tiny.en's CTranslate2 files; then the report."""

from __future__ import annotations

import json

import pytest

from whisperkd.cli import main

pytestmark = pytest.mark.real
PNG = b"\x89PNG\r\n\x1a\n"


def test_tiny_en_base_and_ct2_on_real_speech(tmp_path, real_speech_dir, tiny_en_dir, base_dir, capsys):
    from whisperkd.models.fetch import ct2_dir_of

    ct2 = ct2_dir_of("tiny.en")
    run = tmp_path / "run"
    out = run / "report"
    # batch size 1: the timed pass is also the latency pass (one pass per model keeps CI short)
    assert main(["evaluate", "base", "tiny.en", str(ct2), "--data", str(real_speech_dir), "--out", str(out),
                 "--batch-size", "1", "--repeats", "1"]) == 0
    printed = capsys.readouterr().out
    assert "| tiny.en |" in printed and "speed-up vs base" in printed
    metrics = json.loads((out / "metrics.json").read_text())
    results = {r["model"]: r for r in metrics["results"]}
    assert set(results) == {"base", "tiny.en", "tiny.en-ct2"}
    for name, r in results.items():
        s = r["speed"]
        assert r["n"] == 6 and s["audio_seconds"] == pytest.approx(35.7, abs=0.1)
        assert s["processing_seconds"] > 0 and s["rtf"] > 0 and s["inverse_rtf"] > 0
        assert s["latency_p50_s"] > 0 and s["throughput_utterances_per_s"] > 0
        assert r["vs_reference"]["speedup"] > 0 and r["vs_reference"]["reference"] == "base"
        assert r["wer"] < 0.15, (name, r["wer"])  # both models understand these clips
        assert r["memory"]["rss_peak_extra_bytes"] > 0
    models = {m["label"]: m for m in metrics["models"]}
    assert models["tiny.en"]["parameters"] == 37_760_256
    assert models["tiny.en-ct2"]["parameters"] == 37_760_256 + 384 * 12  # + zero key biases of 12 attention blocks
    assert models["base"]["parameters"] > 70e6 and models["tiny.en"]["disk_bytes"] > 50e6
    assert models["tiny.en-ct2"]["engine"] == "ctranslate2" and models["tiny.en"]["rss_load_bytes"] > 0
    rows = [json.loads(line) for line in (out / "utterances.jsonl").read_text().splitlines()]
    assert len(rows) == 18
    jfk = {r["model"]: r for r in rows if r["id"] == "jfk"}
    assert jfk["tiny.en"]["hypothesis_normalized"] == jfk["tiny.en-ct2"]["hypothesis_normalized"]
    assert "ask not what your country can do for you" in jfk["base"]["hypothesis_normalized"]
    assert "tiny.en-ct2" in (out / "metrics.md").read_text()

    assert main(["report", str(run), "--no-geometry"]) == 0
    report = (out / "report.md").read_text()
    for name in ("wer_vs_rtf.png", "wer_by_speaker.png"):
        assert (out / name).read_bytes()[:8] == PNG and f"({name})" in report
    assert "No `training_history.json`" in report and "### real-speech" in report
