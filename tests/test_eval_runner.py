"""`whisperkd evaluate` / `whisperkd report` end to end on tiny random models, and their building blocks."""

from __future__ import annotations

import json
import struct

import numpy as np
import pytest
import soundfile as sf
import torch
from helpers import tiny_whisper_config

from whisperkd.cli import main
from whisperkd.errors import UserError
from whisperkd.evaluate import memory
from whisperkd.evaluate.plots import pareto_front
from whisperkd.evaluate.report import history_series, read_history
from whisperkd.evaluate.speed import percentile, speed_stats

PNG = b"\x89PNG\r\n\x1a\n"


def test_speed_stats_by_hand():
    s = speed_stats([2.0, 1.0, 3.0], audio_seconds=10.0, n_utterances=4, batch_size=2, latencies=[1.0, 2.0, 3.0, 4.0])
    assert s["processing_seconds"] == 2.0 and s["rtf"] == pytest.approx(0.2) and s["inverse_rtf"] == pytest.approx(5.0)
    assert s["throughput_utterances_per_s"] == pytest.approx(2.0) and s["throughput_audio_s_per_s"] == pytest.approx(5.0)
    assert s["latency_p50_s"] == pytest.approx(2.5) and s["latency_p95_s"] == pytest.approx(3.85)
    assert s["repeats"] == 3 and speed_stats([1.0], 2.0, 1, 1)["latency_p50_s"] is None
    assert percentile([], 50) is None


def test_pareto_front():
    points = [(0.5, 10.0), (0.2, 12.0), (0.3, 15.0), (0.6, 9.0), (0.1, 30.0)]
    assert pareto_front(points) == [4, 1, 0, 3]  # (0.3, 15) is beaten by (0.2, 12)


def test_peak_rss_sees_an_allocation():
    with memory.PeakRSS() as peak:
        block = np.ones(40 * 2**20 // 8)  # 40 MiB touched
        del block
    assert peak.method != "unavailable"
    assert peak.extra >= 30 * 2**20
    assert memory.process_peak_rss() >= peak.peak


def test_history_of_the_distill_trainer(tmp_path):
    # the format whisperkd.distill.history writes: steps, evals, events; non-finite values stored as null
    data = {"steps": [{"step": 10, "epoch": 0, "loss": 2.0, "ce": 1.5, "kl": 0.5, "kl_weight": 1.0, "lr": 1e-4,
                       "grad_norm": 3.0, "skipped": False, "t": 0.1, "align": 0.2},
                      {"step": 20, "epoch": 0, "loss": None, "ce": 1.2, "lr": 2e-4, "skipped": True}],
            "evals": [{"step": 0, "dev_loss": 2.5, "dev_ce": 2.0, "wer": 0.5, "utterances": 8, "best": True},
                      {"step": 20, "dev_loss": 2.0, "wer": 0.4, "utterances": 8, "best": True}],
            "events": [{"step": 7, "event": "non_finite_loss"}, {"step": 15, "event": "resumed"}]}
    (tmp_path / "h.json").write_text(json.dumps(data))
    history = read_history(tmp_path / "h.json")
    train, dev = history_series(history)
    assert list(train) == ["loss", "align", "ce", "kl", "lr", "t", "epoch", "grad_norm", "kl_weight"]
    assert train["loss"] == [(10, 2.0)] and train["ce"] == [(10, 1.5), (20, 1.2)]
    assert list(dev) == ["dev_loss", "dev_ce", "wer", "utterances"] and dev["wer"] == [(0, 0.5), (20, 0.4)]
    assert [e["event"] for e in history["events"]] == ["non_finite_loss", "resumed"]


def test_history_as_a_plain_list(tmp_path):
    entries = [{"step": 1, "loss": 2.0, "loss_kl": 1.5, "lr": 1e-4, "t": 0.1, "note": "x"},
               {"step": 2, "loss": 1.5, "grad_norm": 3.0, "flag": True},
               {"step": 2, "dev_loss": 1.7, "dev_wer": 0.4},
               {"loss": None}, "not a dict", {"step": 4, "loss": 1.0, "dev_wer": 0.3}]
    (tmp_path / "h.json").write_text(json.dumps({"history": entries}))
    train, dev = history_series(read_history(tmp_path / "h.json"))
    assert list(train) == ["loss", "loss_kl", "lr", "t", "grad_norm"]
    assert train["loss"] == [(1, 2.0), (2, 1.5), (4, 1.0)]
    assert dev == {"dev_loss": [(2, 1.7)], "dev_wer": [(2, 0.4), (4, 0.3)]}
    (tmp_path / "bad.json").write_text('{"steps": 3}')
    with pytest.raises(UserError):
        read_history(tmp_path / "bad.json")


# ---- end to end on tiny random models ------------------------------------------------------------------


@pytest.fixture(scope="module")
def random_dirs(tmp_path_factory, tiny_en_dir):
    """Two tiny random HF Whisper directories with tiny.en's processor; the second inside a run folder."""
    from transformers import WhisperForConditionalGeneration

    from whisperkd.models.loading import load_processor
    from whisperkd.models.projector import Projector, save_projector

    root = tmp_path_factory.mktemp("models")
    processor = load_processor(tiny_en_dir)
    dirs = []
    for seed, path in ((0, root / "teacher"), (1, root / "run" / "student_final")):
        torch.manual_seed(seed)
        model = WhisperForConditionalGeneration(tiny_whisper_config())
        model.generation_config.update(decoder_start_token_id=50257, eos_token_id=50256, pad_token_id=50256,
                                       forced_decoder_ids=None, max_length=448)
        model.save_pretrained(path)
        processor.save_pretrained(path)
        dirs.append(path)
    adapter = root / "run" / "adapter_final"
    adapter.mkdir()
    from safetensors.torch import save_file

    save_file({"a": torch.zeros(8, 64), "b": torch.zeros(64, 8)}, str(adapter / "adapter_model.safetensors"))
    save_projector(Projector(64, 64), adapter)
    return dirs[0], root / "run"


@pytest.fixture(scope="module")
def tiny_set(tmp_path_factory):
    root = tmp_path_factory.mktemp("set")
    rng = np.random.default_rng(0)
    rows = []
    for i, (seconds, speaker) in enumerate([(1.0, "anna"), (1.5, "bob"), (2.0, "anna")]):
        sf.write(root / f"u{i}.wav", 0.1 * rng.standard_normal(int(16000 * seconds)).astype(np.float32), 16000)
        rows.append({"id": f"u{i}", "audio": f"u{i}.wav", "text": f"word number {i}", "speaker": speaker})
    (root / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return root


@pytest.mark.real
def test_evaluate_and_report_end_to_end(random_dirs, tiny_set, capsys, monkeypatch):
    teacher, run = random_dirs
    # random models never stop early: cap them at 4 new tokens to keep the test short (2 shared cores)
    monkeypatch.setattr("whisperkd.models.decode.max_new_tokens_for", lambda seconds, limit=440: 4)
    code = main(["evaluate", str(teacher), str(run), "--data", str(tiny_set), "--batch-size", "2", "--repeats", "1"])
    assert code == 0
    out = run / "report"  # the default for a run folder
    metrics = json.loads((out / "metrics.json").read_text())
    assert [m["label"] for m in metrics["models"]] == ["teacher", "run"]
    assert metrics["models"][1]["trainable_parameters"] == 2 * 8 * 64 + 64 * 64 + 64
    assert metrics["models"][0]["parameters"] > 0 and metrics["models"][0]["disk_bytes"] > 0
    for res in metrics["results"]:
        s = res["speed"]
        assert res["n"] == 3 and s["repeats"] == 1 and len(s["pass_seconds"]) == 1
        assert s["processing_seconds"] > 0 and s["rtf"] > 0 and s["latency_p95_s"] >= s["latency_p50_s"] > 0
        assert set(res["by_speaker"]) == {"anna", "bob"} and res["wer"] >= 0
        assert res["vs_reference"]["reference"] == "teacher" and res["vs_reference"]["speedup"] > 0
    assert metrics["results"][0]["vs_reference"]["speedup"] == 1.0
    rows = [json.loads(line) for line in (out / "utterances.jsonl").read_text().splitlines()]
    assert len(rows) == 6 and {"reference_normalized", "hypothesis", "word_errors", "seconds"} <= set(rows[0])
    assert "speed-up vs teacher" in (out / "metrics.md").read_text()
    assert "| run |" in capsys.readouterr().out

    history = {"steps": [{"step": s, "loss": 3.0 / s, "ce": 2.0 / s, "lr": 1e-4, "t": s / 10} for s in range(1, 6)],
               "evals": [{"step": 0, "dev_loss": 2.0, "wer": 0.9}, {"step": 5, "dev_loss": 1.0, "wer": 0.5}],
               "events": [{"step": 3, "event": "resumed"}]}
    (run / "training_history.json").write_text(json.dumps(history))
    assert main(["report", str(run), "--teacher", str(teacher), "--before", str(teacher), "--data", str(tiny_set),
                 "--geometry-utterances", "2"]) == 0
    report = (out / "report.md").read_text()
    for name in ("training.png", "dev.png", "wer_vs_rtf.png", "wer_by_speaker.png", "geometry.png"):
        assert (out / name).read_bytes()[:8] == PNG, name
        assert f"({name})" in report
    geometry = json.loads((out / "geometry.json").read_text())
    before, after = geometry["rows"]
    assert before["student"] == "before" and before["linear_cka"] == pytest.approx(1.0, abs=1e-6)
    assert after["projector"].startswith("run's") and after["mean_geodesic"] > 0.1
    assert "Best wer: 50.00 % at step 5" in report and "resumed at step 3" in report
    # Re-rendering without a teacher reuses geometry.json.
    assert main(["report", str(run)]) == 0
    assert "linear CKA" in (out / "report.md").read_text()

    # With a training_config.json the teacher and dev set come from it, and `--before init` rebuilds the
    # untrained student as distill does (here: the teacher pruned to 1 decoder layer).
    config = {"teacher": {"model": str(teacher)}, "student": {"init": "teacher", "decoder_layers": 1},
              "data": {"train": str(tiny_set / "manifest.jsonl"), "dev": str(tiny_set / "manifest.jsonl")}}
    (run / "training_config.json").write_text(json.dumps(config))
    assert main(["report", str(run), "--before", "init", "--geometry-utterances", "2"]) == 0
    before, after = json.loads((out / "geometry.json").read_text())["rows"]
    assert before["model"] == "init" and before["projector"].startswith("initial") and after["student"] == "after"
    assert 0 < before["linear_cka"] <= 1 and before["tokens"] == after["tokens"]


def _one_line_error(capsys, argv: list[str], *needles: str) -> str:
    assert main(argv) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    err = lines[-1]
    assert err.startswith(f"whisperkd {argv[0]}: error: ") and not any("Traceback" in x for x in lines), lines
    for needle in needles:
        assert needle in err, err
    return err


def test_bad_inputs_are_one_line_errors(tmp_path, tiny_set, capsys, tiny_en_dir):  # evaluates "tiny.en"
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "a", "audio": "a.wav", "text": "x"}\nnot json\n')
    _one_line_error(capsys, ["evaluate", "tiny.en", "--data", str(bad)], "bad.jsonl:2")
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    _one_line_error(capsys, ["evaluate", "tiny.en", "--data", str(empty)], "empty")
    gone = tmp_path / "gone.jsonl"
    gone.write_text('{"id": "a", "audio": "missing.wav", "text": "x"}\n')
    _one_line_error(capsys, ["evaluate", "tiny.en", "--data", str(gone), "--out", str(tmp_path / "o")], "no usable")
    assert json.loads((tmp_path / "o" / "skipped.jsonl").read_text())["reason"] == "missing"
    _one_line_error(capsys, ["evaluate", "tiny.en", "--data", str(tmp_path / "nope")], "no such file")
    _one_line_error(capsys, ["evaluate", "./no/such/model", "--data", str(tiny_set), "--out", str(tmp_path / "o")],
                    "no/such/model")
    _one_line_error(capsys, ["evaluate", str(tmp_path), "--data", str(tiny_set), "--out", str(tmp_path / "o")],
                    "config.json")
    _one_line_error(capsys, ["evaluate", "tiny.en", "--data", str(tiny_set), "--repeats", "0"], "--repeats")
    _one_line_error(capsys, ["report", str(tmp_path / "no-run")], "no such run folder")
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "training_history.json").write_text("{oops")
    _one_line_error(capsys, ["report", str(tmp_path / "run")], "training_history.json")
    (tmp_path / "run2").mkdir()
    _one_line_error(capsys, ["report", str(tmp_path / "run2"), "--metrics", str(bad)], "bad.jsonl")


def test_ct2_parameter_count_reads_headers(tmp_path):
    from whisperkd.evaluate.engines import ct2_parameter_count

    def string(s):
        b = s.encode() + b"\0"
        return struct.pack("<H", len(b)) + b

    blob = struct.pack("<I", 6) + string("WhisperSpec") + struct.pack("<I", 1) + struct.pack("<I", 3)
    for name, dims, dtype, itemsize in (("a/weight", (3, 4), 1, 1), ("a/weight_scale", (3,), 0, 4), ("n", (), 3, 4)):
        nbytes = int(np.prod(dims)) * itemsize
        blob += string(name) + struct.pack("<B", len(dims)) + b"".join(struct.pack("<I", d) for d in dims)
        blob += struct.pack("<BI", dtype, nbytes) + b"\0" * nbytes
    (tmp_path / "model.bin").write_bytes(blob + struct.pack("<I", 0))
    assert ct2_parameter_count(tmp_path / "model.bin") == 12
    (tmp_path / "model.bin").write_bytes(blob[:40])
    with pytest.raises(UserError, match="truncated"):
        ct2_parameter_count(tmp_path / "model.bin")


class _Oracle:
    """An engine of another kind: it answers the references of ``tiny_set`` (keyed by length)."""

    kind, path, device, dtype, parameters, trainable_parameters, disk_bytes = "oracle", None, "cpu", "-", 0, None, 0

    def transcribe(self, audios):
        return [f"word number {int(round(2 * len(a) / 16000)) - 2}" for a in audios]


@pytest.mark.real
def test_engines_of_other_kinds_take_turns_with_specs(random_dirs, tiny_set, tmp_path, monkeypatch):
    from whisperkd.evaluate.runner import evaluate_models

    teacher, _ = random_dirs
    monkeypatch.setattr("whisperkd.models.decode.max_new_tokens_for", lambda seconds, limit=440: 4)
    opened = []
    metrics = evaluate_models([str(teacher), ("oracle", lambda: opened.append(1) or _Oracle())], [str(tiny_set)],
                              tmp_path, batch_size=2, repeats=1, latency=False)
    assert opened == [1]
    assert [(m["label"], m["engine"], m["model"]) for m in metrics["models"]] == [
        ("teacher", "hf", str(teacher)), ("oracle", "oracle", "oracle")]
    oracle = next(r for r in metrics["results"] if r["model"] == "oracle")
    assert oracle["wer"] == 0.0 and oracle["vs_reference"]["reference"] == "teacher"
