"""The quick offline demo end to end (what `make demo` does, CI-sized): every stage leaves its files and the
distilled student beats the untrained pruned student on held-out voices and sentences."""

from __future__ import annotations

import json
import shutil

import pytest

from whisperkd.cli import main
from whisperkd.data.manifest import read_manifest
from whisperkd.demo import format_table, summary_rows
from whisperkd.demo_real import find_real_corpus


@pytest.fixture(scope="module")
def quick_demo(tmp_path_factory, base_dir, real_speech_dir):
    for tool in ("espeak-ng", "flite", "text2wave"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} not installed (make system-packages)")
    work = tmp_path_factory.mktemp("demo")
    assert main(["demo", "--quick", "--workdir", str(work), "--real-speech", str(real_speech_dir)]) == 0
    return work / "quick"


@pytest.mark.slow  # the quick demo (module fixture): ~7-8 min on 2 CPU cores
def test_every_stage_left_its_files(quick_demo):
    corpus = quick_demo / "corpus"
    for split in ("train", "dev", "test"):
        assert read_manifest(corpus / split / "manifest.jsonl"), split
    packed = read_manifest(corpus / "train-packed" / "manifest.jsonl")
    assert 0 < len(packed) < len(read_manifest(corpus / "train" / "manifest.jsonl"))
    assert (quick_demo / "teacher_cache").is_dir() and any((quick_demo / "teacher_cache").rglob("*.safetensors"))
    # the demo trains on one augmented copy of every window: its own cached split, complete
    assert any((quick_demo / "teacher_cache" / "train-aug1").glob("*.safetensors"))
    assert json.loads((quick_demo / "teacher_cache" / "cache.json").read_text())["complete"]["train-aug1"]
    run = quick_demo / "run"
    for name in ("training_history.json", "training_config.json", "student_final/config.json", "tb"):
        assert (run / name).exists(), name
    assert (quick_demo / "student_untrained" / "config.json").is_file()
    for name in ("metrics.json", "demo_summary.json", "demo_summary.md"):
        assert (run / "report" / name).is_file(), name


@pytest.mark.slow  # the quick demo (module fixture): ~7-8 min on 2 CPU cores
def test_held_out_voices_and_sentences_are_disjoint_from_training(quick_demo):
    corpus = quick_demo / "corpus"
    train = read_manifest(corpus / "train" / "manifest.jsonl")
    for split in ("dev", "test"):
        held = read_manifest(corpus / split / "manifest.jsonl")
        assert not {u.speaker for u in held} & {u.speaker for u in train}, split
        assert not {u.text for u in held} & {u.text for u in train}, split


@pytest.mark.slow  # the quick demo (module fixture): ~7-8 min on 2 CPU cores
def test_distilled_beats_untrained_student(quick_demo):
    rows = json.loads((quick_demo / "run" / "report" / "demo_summary.json").read_text())
    by_model = {r["model"]: r for r in rows}
    assert set(by_model) == {"teacher (base)", "untrained pruned student", "distilled student"}
    assert by_model["distilled student"]["wer_held_out"] < by_model["untrained pruned student"]["wer_held_out"]
    assert by_model["distilled student"]["parameters"] < by_model["teacher (base)"]["parameters"]
    table = (quick_demo / "run" / "report" / "demo_summary.md").read_text()
    assert table.strip() == format_table(rows)


def test_summary_rows_from_metrics():
    metrics = {"sets": [{"label": "test"}, {"label": "real"}, {"label": "real dev"}],
               "models": [{"label": "a", "parameters": 100}, {"label": "b", "parameters": 40}],
               "results": [
                   {"model": "a", "set": "test", "wer": 0.1, "speed": {"rtf": 0.4, "latency_p50_s": 1.0}},
                   {"model": "a", "set": "real", "wer": 0.05, "speed": {"rtf": 0.5}},
                   {"model": "a", "set": "real dev", "wer": 0.39, "speed": {"rtf": 0.5}},
                   {"model": "b", "set": "test", "wer": 0.2, "speed": {"rtf": 0.2, "latency_p50_s": 0.8}},
                   {"model": "b", "set": "real", "wer": 0.07, "speed": {"rtf": 0.25}},
                   {"model": "b", "set": "real dev", "wer": 0.371, "speed": {"rtf": 0.25}}]}
    rows = summary_rows(metrics, ["teacher", "student"])
    assert [r["wer_real"] for r in rows] == [0.05, 0.07]
    assert [r["wer_real_dev"] for r in rows] == [0.39, 0.371]
    assert rows[1]["speedup"] == pytest.approx(2.0)
    assert "| student | 0.0 M | 20.0 % | 7.0 % | 37.1 % | 0.200 | 2.00x |" in format_table(rows)
    metrics["sets"] = metrics["sets"][:2]  # no real dev set: n/a
    assert "| student | 0.0 M | 20.0 % | 7.0 % | n/a | 0.200 | 2.00x |" in format_table(summary_rows(metrics, ["t", "student"]))


@pytest.mark.parametrize("argv, size", [([], "full"), (["--quick"], "quick"), (["--size", "large"], "large"),
                                        (["--size", "full"], "full")])
def test_demo_command_picks_the_size(monkeypatch, argv, size):
    import whisperkd.demo as demo

    calls = []
    monkeypatch.setattr(demo, "run_demo", lambda config, variant, *rest: calls.append(variant))
    assert main(["demo", *argv]) == 0
    assert calls == [size]


def test_an_unknown_demo_size_is_refused():
    from whisperkd.errors import UserError
    from whisperkd.demo import DEFAULT_CONFIG, run_demo

    with pytest.raises(UserError, match="choose one of full, quick, large"):
        run_demo(DEFAULT_CONFIG, "huge")


def test_the_demo_config_and_real_clips_ship_with_the_package():
    """configs/demo.yaml is a documented copy of the packaged config, byte for byte; the six real clips and
    their manifest are package data, so an installed whisperkd runs the demo from anywhere."""
    from pathlib import Path

    from whisperkd.demo_settings import DEFAULT_CONFIG, REAL_SPEECH

    repo_copy = Path(__file__).resolve().parents[1] / "configs" / "demo.yaml"
    assert DEFAULT_CONFIG.read_bytes() == repo_copy.read_bytes(), "edit configs/demo.yaml and resources/demo.yaml alike"
    clips = read_manifest(REAL_SPEECH / "manifest.jsonl")
    assert len(clips) == 6 and all(u.path.is_file() for u in clips)
    assert (REAL_SPEECH / "README.md").is_file()


@pytest.mark.slow  # the quick demo (module fixture): ~7-8 min on 2 CPU cores
def test_real_corpus_is_mixed_in_and_its_dev_speakers_are_held_out(quick_demo):
    if find_real_corpus() is None:
        pytest.skip("no real corpus (../shared/data/speechocean762 or WHISPERKD_REAL_CORPUS)")
    corpus = quick_demo / "corpus"
    mixed = read_manifest(corpus / "train-mixed" / "manifest.jsonl")
    assert {u.id.split("/")[0] for u in mixed} == {"synthetic", "real"}
    labelled = read_manifest(corpus / "real-train" / "labelled.jsonl")
    shouting = [u.text for u in labelled if u.text == u.text.upper() and len(u.text.split()) > 1]
    assert labelled and len(shouting) < 0.1 * len(labelled), shouting  # the teacher's writing, not the corpus's
    real_dev = read_manifest(corpus / "real-dev" / "manifest.jsonl")
    select = read_manifest(corpus / "real-dev-select" / "manifest.jsonl")
    assert not {u.speaker for u in labelled} & {u.speaker for u in real_dev + select}
    assert not {u.id for u in real_dev} & {u.id for u in select}
    dev_ids = {u.id for u in read_manifest(corpus / "dev-mixed" / "manifest.jsonl")}
    assert {f"real/{u.id}" for u in select} <= dev_ids
    rows = json.loads((quick_demo / "run" / "report" / "demo_summary.json").read_text())
    assert all(r["wer_real_dev"] is not None for r in rows)
