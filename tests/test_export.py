"""``whisperkd export``: HF and CTranslate2 round trips of a tiny random Whisper (weights, transcripts, the stored
encoder window read back by the CTranslate2 engine), a LoRA student merged, faster-whisper and
``transformers.pipeline`` loading the exports, refusals with one line, and tiny.en to CTranslate2 int8."""

from __future__ import annotations

import json
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from helpers import tiny_whisper_config
from safetensors.torch import load_file

from whisperkd.cli import main
from whisperkd.deploy.export import REPORT_FILE, export_model, packaged_clips
from whisperkd.evaluate.engines import CT2Whisper, open_model
from whisperkd.models.loading import load_model
from whisperkd.models.window import Window
from whisperkd.text import normalize

AUTO = {"seconds": None, "step": 5, "margin": 0.5}  # auto: 5, 10 and 15-s windows for the three clips
CLIP_IDS = ("sense_and_sensibility_01_austen_64kb-0880", "sense_and_sensibility_01_austen_64kb-0890", "jfk")


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> Path:
    """Three of the packaged real clips (3.0, 5.3 and 11.0 s): a manifest with absolute audio paths."""
    rows = [json.loads(line) for line in (packaged_clips() / "manifest.jsonl").read_text().splitlines() if line]
    folder = tmp_path_factory.mktemp("clips")
    chosen = [dict(r, audio=str(packaged_clips() / r["audio"])) for r in rows if r["id"] in CLIP_IDS]
    (folder / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in chosen))
    return folder


CAP = 12  # new tokens per utterance: random models never stop by themselves


def tiny_whisper(tiny_en_dir: Path, seed: int = 0):
    """A tiny random Whisper with tiny.en's generation config whose greedy transcripts are text that depends on the
    audio: larger random weights (init_std 0.3; at 0.02 every input gives one repeated token), non-zero biases, and
    special tokens that never win (zero embeddings, tied to the output layer), so decoding runs to the cap."""
    from transformers import GenerationConfig, WhisperForConditionalGeneration

    torch.manual_seed(seed)
    model = WhisperForConditionalGeneration(tiny_whisper_config(init_std=0.3)).eval()
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith("bias") and "k_proj" not in name:
                param.normal_(0, 0.02)
        model.model.decoder.embed_tokens.weight[50256:] = 0
    model.generation_config = GenerationConfig.from_pretrained(tiny_en_dir)
    model.generation_config.alignment_heads = [[1, 0], [1, 1]]
    return model


def save_whisper(model, folder: Path, tiny_en_dir: Path, window: dict | None = AUTO) -> Path:
    from whisperkd.models.loading import load_processor

    if window is not None:
        model.config.whisperkd_window = window
    model.save_pretrained(folder)
    load_processor(tiny_en_dir).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """Two torch threads on the two shared cores make transformers' per-token torch.isin ~50x slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@contextmanager
def capped_decoding():
    """Random models decode CAP new tokens (both engines look the cap up at call time)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr("whisperkd.models.decode.max_new_tokens_for", lambda seconds, limit=440: CAP)
        yield


@pytest.fixture
def capped():
    with capped_decoding():
        yield


@pytest.fixture(scope="module")
def source(tmp_path_factory, tiny_en_dir) -> Path:
    """An HF directory of the tiny random Whisper, trained (so it says) for auto windows, output layer int8."""
    model = tiny_whisper(tiny_en_dir)
    model.config.whisperkd_output_layer = "int8"
    return save_whisper(model, tmp_path_factory.mktemp("source") / "model", tiny_en_dir)


@pytest.fixture(scope="module")
def hf_export(source, clips, tmp_path_factory):
    out = tmp_path_factory.mktemp("exports") / "hf"
    with capped_decoding():
        return out, export_model(source, "hf", out, verify_clips=clips)


@pytest.fixture(scope="module")
def ct2_export(source, clips, tmp_path_factory):
    """A float32 CTranslate2 export written with --force over a folder that held an older file."""
    out = tmp_path_factory.mktemp("exports") / "ct2"
    out.mkdir()
    (out / "stale.txt").write_text("from an older export")
    with capped_decoding():
        return out, export_model(source, "ct2", out, quantization="float32", verify_clips=clips, force=True)


def _logits(model, seed: int = 3) -> torch.Tensor:
    torch.manual_seed(seed)
    features = torch.randn(1, 80, 3000)
    with torch.no_grad():
        return model(input_features=features, decoder_input_ids=torch.tensor([[50257, 50362, 11, 5000]])).logits


def test_hf_export_has_the_same_weights_config_and_transcripts(source, hf_export):
    from transformers import WhisperForConditionalGeneration

    out, report = hf_export
    before, after = load_file(str(source / "model.safetensors")), load_file(str(out / "model.safetensors"))
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)
    config = json.loads((out / "config.json").read_text())
    assert config["whisperkd_window"] == AUTO and config["whisperkd_output_layer"] == "int8"
    assert json.loads((out / "generation_config.json").read_text()) == \
        json.loads((source / "generation_config.json").read_text())
    assert json.loads((out / "preprocessor_config.json").read_text())["feature_size"] == 80
    assert (out / "tokenizer.json").read_bytes() == (source / "tokenizer.json").read_bytes()
    model = WhisperForConditionalGeneration.from_pretrained(out).eval()
    torch.testing.assert_close(_logits(model), _logits(WhisperForConditionalGeneration.from_pretrained(source).eval()),
                               atol=0, rtol=0)
    v = report["verification"]
    assert v["lossless"] and v["passed"] and v["identical"] == v["utterances"] == 3
    assert v["source_window"] == v["export_window"] == Window(**AUTO).describe()
    assert json.loads((out / REPORT_FILE).read_text())["verification"]["per_clip"] == v["per_clip"]
    assert "Verification of this export" in (out / "README.md").read_text()


def test_hf_float16_export_halves_the_weights_and_reports_the_wer_difference(source, clips, capped, tmp_path):
    report = export_model(source, "hf", tmp_path / "hf16", quantization="float16", verify_clips=clips)
    weights = load_file(str(tmp_path / "hf16" / "model.safetensors"))
    original = load_file(str(source / "model.safetensors"))
    assert all(w.dtype == torch.float16 and torch.equal(w, original[k].half()) for k, w in weights.items())
    v = report["verification"]
    assert not v["lossless"] and v["passed"] and v["rule"].startswith("quantised")
    assert v["wer_difference"] == pytest.approx(v["export_wer"] - v["source_wer"])


class GenerateSpy:
    """Stands in for a ctranslate2 Whisper: records the log-mel frames of every generate call."""

    def __init__(self, model):
        self.model, self.frames = model, []

    def generate(self, features, *args, **kwargs):
        self.frames.append(features.shape[-1])
        return self.model.generate(features, *args, **kwargs)

    def __getattr__(self, name):
        return getattr(self.model, name)


def _clip_audio(clips: Path) -> list[np.ndarray]:
    from whisperkd.data.audio import load_utterance
    from whisperkd.data.sources import open_source

    return [load_utterance(u) for u in open_source(clips)]


def test_ct2_float32_export_gives_the_source_transcripts_with_its_window(source, ct2_export, clips, capped):
    out, report = ct2_export
    assert not (out / "stale.txt").exists() and not list(out.parent.glob(".ct2.export-*"))
    v = report["verification"]
    assert v["lossless"] and v["passed"] and v["identical"] == v["utterances"] == 3
    texts = [row["export"] for row in v["per_clip"]]
    assert all(texts) and len(set(texts)) == 3  # real text, different per clip: the comparison means something
    for name in ("tokenizer.json", "preprocessor_config.json", "model.bin", "README.md", REPORT_FILE):
        assert (out / name).is_file(), name
    assert json.loads((out / "config.json").read_text())["whisperkd_window"] == AUTO

    engine = open_model(str(out))
    assert isinstance(engine, CT2Whisper) and engine.window == Window(**AUTO)
    engine.model = GenerateSpy(engine.model)
    audios = _clip_audio(clips)
    assert engine.transcribe(audios) == texts
    assert engine.model.frames == [1500, 1000, 500]  # windows of 15, 10 and 5 s, longest first
    hf = open_model(str(source))
    hf.model = load_model(source)  # its float32 output layer, as converted (not the int8 one of for_inference)
    assert hf.transcribe(audios) == texts

    for window, frames in (("off", [3000]), (10, [1000])):
        engine = open_model(str(out), encoder_window=window)
        engine.model = GenerateSpy(engine.model)
        engine.transcribe(audios)
        assert engine.model.frames == frames



def test_faster_whisper_loads_the_ct2_export_as_it_is(source, ct2_export, clips, capped):
    from faster_whisper import WhisperModel
    from transformers import WhisperTokenizerFast

    out, _ = ct2_export
    model = WhisperModel(str(out), device="cpu", compute_type="float32", cpu_threads=1)  # offline: no download
    preprocessor = json.loads((out / "preprocessor_config.json").read_text())
    assert model.feat_kwargs and all(preprocessor[k] == v for k, v in model.feat_kwargs.items())
    assert model.hf_tokenizer.encode(" ask not", add_special_tokens=False).ids == \
        WhisperTokenizerFast.from_pretrained(source).encode(" ask not", add_special_tokens=False)
    segments, info = model.transcribe(_clip_audio(clips)[0], language="en", beam_size=1, temperature=0.0,
                                      without_timestamps=True, max_new_tokens=CAP, condition_on_previous_text=False)
    segments = list(segments)
    # its own log-mel code and prompt: a random model says other words than ours (tiny.en agrees: the real test)
    assert info.duration == pytest.approx(2.99, abs=0.01) and len(segments) == 1 and segments[0].text.strip()


def test_transformers_pipeline_runs_the_hf_export(hf_export, clips, capped):
    from transformers import pipeline

    out, _ = hf_export
    audio = _clip_audio(clips)[0]
    asr = pipeline("automatic-speech-recognition", model=str(out), device="cpu")
    text = asr({"raw": audio, "sampling_rate": 16_000}, generate_kwargs={"max_new_tokens": CAP, "num_beams": 1})["text"]
    reference = open_model(str(out), encoder_window="off")
    reference.model = load_model(out)  # the pipeline runs the float32 output layer
    assert text.strip() == reference.transcribe([audio])[0] != ""


def _metrics(student_wer: float) -> dict:
    """A metrics.json as `whisperkd evaluate` writes it, cut to what the model card reads."""
    from whisperkd.evaluate.runner import FORMAT

    def row(model, wer, speedup):
        return {"model": model, "set": "dev", "wer": wer, "cer": wer / 2,
                "words": {"substitutions": 3, "deletions": 1, "insertions": 0},
                "speed": {"rtf": 0.05, "inverse_rtf": 20.0, "latency_p50_s": 0.3, "latency_p95_s": 0.4,
                          "throughput_utterances_per_s": 4.0},
                "vs_reference": {"reference": "teacher", "speedup": speedup, "wer_difference": wer - 0.1}}

    return {"format": FORMAT, "created": "2026-12-03T00:00:00+00:00", "machine": {"cpu": "test CPU", "usable_cpus": 2},
            "settings": {"device": "cpu", "batch_size": 8, "decoding": "greedy, English, no timestamps"},
            "results": [row("teacher", 0.1, 1.0), row("run", student_wer, 2.5)]}


def test_a_lora_run_is_exported_merged_with_its_card(tiny_en_dir, tmp_path):
    from transformers import WhisperForConditionalGeneration

    from whisperkd.config import Config
    from whisperkd.distill.runfolder import export_final
    from whisperkd.models.loading import load_processor
    from whisperkd.models.lora import LoraSettings, apply_lora
    from whisperkd.models.projector import Projector

    student = tiny_whisper(tiny_en_dir, seed=1)
    peft = apply_lora(student, LoraSettings(["decoder-self-qv", "decoder-cross-qkvo", "decoder-ffn"], rank=4, alpha=8,
                                            dropout=0.0)).eval()
    with torch.no_grad():
        for name, param in peft.named_parameters():
            if ".lora_B." in name:
                param.normal_(0.0, 0.5)  # B starts at zero; perturb it so the adapter matters
    unmerged = _logits(peft)
    run = tmp_path / "run"
    config = Config().to_dict()
    config["teacher"]["model"] = "tiny.en"
    config["lora"].update(enabled=True, presets=["decoder-self-qv", "decoder-cross-qkvo", "decoder-ffn"], rank=4)
    (run / "report").mkdir(parents=True)
    (run / "training_config.json").write_text(json.dumps(config))
    (run / "report" / "metrics.json").write_text(json.dumps(_metrics(0.125)))
    # distill's own hand-over: adapter_final/ and student_final/ (LoRA merged, projector left out)
    merged = export_final(run, SimpleNamespace(student=peft, projector=Projector(64, 384)),
                          load_processor(tiny_en_dir), uses_lora=True, info={"step": 6})

    assert main(["export", str(run), "--format", "hf", "--out", str(tmp_path / "out"), "--verify-clips", "none"]) == 0
    exported = load_file(str(tmp_path / "out" / "model.safetensors"))
    reference = {k: v for k, v in merged.state_dict().items() if k != "proj_out.weight"}  # tied: saved once
    assert exported.keys() == reference.keys() and all(torch.equal(exported[k], reference[k]) for k in reference)
    model = WhisperForConditionalGeneration.from_pretrained(tmp_path / "out").eval()
    torch.testing.assert_close(_logits(model), unmerged, atol=1e-4, rtol=1e-5)  # logits of size ~10
    card = (tmp_path / "out" / "README.md").read_text()
    assert "distilled from the teacher `tiny.en`" in card and "LoRA (decoder-self-qv, decoder-cross-qkvo" in card
    assert "| run | 12.50 |" in card and "2.50×" in card and "Not verified" in card
    assert json.loads((tmp_path / "out" / REPORT_FILE).read_text())["source"]["kind"] == "run"


def _one_line_error(capsys, argv) -> str:
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    return err


def test_refusals_are_one_line_and_write_nothing(source, ct2_export, tmp_path, capsys):
    out = ["--format", "ct2", "--out", str(tmp_path / "out")]
    assert "no such model directory" in _one_line_error(capsys, ["export", str(tmp_path / "missing"), *out])
    assert "a CTranslate2 model, not a Hugging Face one" in _one_line_error(capsys, ["export", str(ct2_export[0]), *out])
    partial = tmp_path / "partial-run"
    partial.mkdir()
    (partial / "training_config.json").write_text("{}")
    err = _one_line_error(capsys, ["export", str(partial), *out])
    assert "without a finished student" in err and f"whisperkd distill --resume {partial}" in err
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep.txt").write_text("mine")
    assert "pass --force" in _one_line_error(capsys, ["export", str(source), *out])
    assert "the hf format takes float32, float16" in _one_line_error(
        capsys, ["export", str(source), "--format", "hf", "--quantization", "int8", "--out", str(tmp_path / "o2")])
    assert "holds the source model" in _one_line_error(
        capsys, ["export", str(source), "--format", "hf", "--out", str(source.parent), "--force"])
    assert "no utterances" in _one_line_error(capsys, ["export", str(source), "--format", "hf", "--out",
                                                       str(tmp_path / "o3"), "--verify-clips", str(_empty(tmp_path))])
    assert (tmp_path / "out" / "keep.txt").read_text() == "mine" and (source / "config.json").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty-clips", "out", "partial-run"]


def _empty(tmp_path: Path) -> Path:
    (tmp_path / "empty-clips").mkdir()
    (tmp_path / "empty-clips" / "manifest.jsonl").write_text("")
    return tmp_path / "empty-clips"


def test_a_lossless_export_that_differs_is_not_written(source, clips, capped, tmp_path, capsys, monkeypatch):
    import whisperkd.deploy.export as export

    real = export.transcribe_all

    def one_clip_differs(spec, audios):
        texts, window = real(spec, audios)
        if Path(spec).name == "export":
            texts[1] += " and more"
        return texts, window

    monkeypatch.setattr(export, "transcribe_all", one_clip_differs)
    code = main(["export", str(source), "--format", "hf", "--out", str(tmp_path / "out"), "--verify-clips", str(clips)])
    lines = capsys.readouterr().err.strip().splitlines()  # progress lines, then the error
    errors = [line for line in lines if line.startswith("whisperkd export: error:")]
    assert code == 1 and errors == lines[-1:] and f"clip {CLIP_IDS[1]}" in errors[0] and "and more" in errors[0]
    assert not list(tmp_path.iterdir())  # neither the export nor its temporary folder


def test_tiny_en_to_ct2_int8_reports_the_wer_difference_and_runs_in_faster_whisper(tiny_en_dir, clips, tmp_path,
                                                                                  capsys):
    from faster_whisper import WhisperModel

    out = tmp_path / "tiny.en-ct2"
    assert main(["export", "tiny.en", "--format", "ct2", "--out", str(out), "--verify-clips", str(clips)]) == 0
    printed = capsys.readouterr().out
    report = json.loads((out / REPORT_FILE).read_text())
    v = report["verification"]
    assert report["export"]["quantization"] == "int8" and not v["lossless"] and v["passed"]
    assert v["wer_difference"] == pytest.approx(v["export_wer"] - v["source_wer"]) and v["source_wer"] < 0.1
    assert f"({100 * v['wer_difference']:+.2f} points)" in printed
    assert (out / "model.bin").stat().st_size < 0.6 * (tiny_en_dir / "model.safetensors").stat().st_size
    jfk = _clip_audio(clips)[2]
    segments, _ = WhisperModel(str(out), device="cpu", compute_type="int8", cpu_threads=1).transcribe(
        jfk, language="en", beam_size=1, temperature=0.0, without_timestamps=True, condition_on_previous_text=False)
    ours = open_model(str(out), encoder_window="off").transcribe([jfk])[0]  # 30 s, as faster-whisper
    # faster-whisper computes its own log-mel (numpy): one comma differs on this clip, the words do not
    assert normalize("".join(s.text for s in segments)) == normalize(ours)
    assert "ask not what your country can do for you" in normalize(ours)
