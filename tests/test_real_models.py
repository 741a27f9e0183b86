"""Real offline Whisper weights (tiny.en, base): conversion is exact, tokenizers are repaired, transcripts are good."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import jiwer
import numpy as np
import pytest
import torch

from whisperkd.cli import main
from whisperkd.data.audio import load_audio
from whisperkd.errors import UserError
from whisperkd.models.fetch import ct2_dir_of, ensure_model
from whisperkd.models.loading import load_model, load_processor
from whisperkd.models.tokenizer import special_ids
from whisperkd.models.vocabulary import check_same_vocabulary
from whisperkd.models.decode import max_new_tokens_for

pytestmark = pytest.mark.real

EXPECTED_IDS = {
    "tiny.en": {"eot": 50256, "sot": 50257, "notimestamps": 50362, "prompt": [50257, 50362], "vocab": 51864},
    "base": {"eot": 50257, "sot": 50258, "notimestamps": 50363, "prompt": [50258, 50259, 50359, 50363], "vocab": 51865},
}


def _clips(real_speech_dir):
    rows = [json.loads(line) for line in (real_speech_dir / "manifest.jsonl").read_text().splitlines() if line.strip()]
    return [(r["id"], load_audio(real_speech_dir / r["audio"]), r["text"]) for r in rows]


@pytest.fixture(scope="module", params=["tiny.en", "base"])
def real(request):
    name = request.param
    path = request.getfixturevalue({"tiny.en": "tiny_en_dir", "base": "base_dir"}[name])  # fetched, never downloaded
    return name, path, load_model(path), load_processor(path)


def test_special_ids_and_prompt_match_the_table(real):
    name, _, model, processor = real
    tok, want = processor.tokenizer, EXPECTED_IDS[name]
    ids = special_ids(tok)
    assert (ids["eot"], ids["sot"], ids["notimestamps"]) == (want["eot"], want["sot"], want["notimestamps"])
    assert len(tok) == model.config.vocab_size == want["vocab"]
    if name == "base":
        tok.set_prefix_tokens(language="english", task="transcribe", predict_timestamps=False)
    assert tok.prefix_tokens == want["prompt"]
    assert tok.convert_ids_to_tokens(want["vocab"] - 1) == "<|30.00|>"  # timestamp tokens were added


def test_first_merge_repair_gives_canonical_ids(real):
    _, _, _, processor = real
    assert len(processor.tokenizer(" this is a test", add_special_tokens=False).input_ids) == 4


def test_encoder_matches_ctranslate2_on_the_same_features(real, real_speech_dir):
    import ctranslate2

    name, _, model, processor = real
    ct2 = ctranslate2.models.Whisper(str(ct2_dir_of(name)), device="cpu", compute_type="float32")
    audio = [a for _, a, _ in _clips(real_speech_dir)[:2]]
    feats = processor.feature_extractor(audio, sampling_rate=16000, return_tensors="np").input_features
    with torch.no_grad():
        hf = model.model.encoder(torch.from_numpy(feats)).last_hidden_state.numpy()
    ours = np.asarray(ct2.encode(ctranslate2.StorageView.from_array(np.ascontiguousarray(feats)), to_cpu=True))
    diff = float(np.abs(hf - ours).max())
    print(f"\n{name}: max |HF - CTranslate2| encoder output = {diff:.2e}")
    assert diff < 1e-3


def test_greedy_ids_agree_with_ctranslate2_and_wer_is_good(real, real_speech_dir):
    import ctranslate2

    name, _, model, processor = real
    ct2 = ctranslate2.models.Whisper(str(ct2_dir_of(name)), device="cpu", compute_type="float32")
    tok = processor.tokenizer
    prompt = EXPECTED_IDS[name]["prompt"]
    refs, hyps = [], []
    for clip_id, audio, text in _clips(real_speech_dir):
        feats = processor.feature_extractor(audio, sampling_rate=16000, return_tensors="np").input_features
        cap = max_new_tokens_for(len(audio) / 16000)
        kwargs = {"language": "en", "task": "transcribe"} if name == "base" else {}
        with torch.no_grad():
            hf_ids = model.generate(torch.from_numpy(feats), max_new_tokens=cap, num_beams=1, **kwargs)[0].tolist()
        hf_ids = [i for i in hf_ids if i < EXPECTED_IDS[name]["eot"]]
        res = ct2.generate(ctranslate2.StorageView.from_array(np.ascontiguousarray(feats)), [prompt], beam_size=1,
                           max_length=len(prompt) + cap)
        ct2_ids = [i for i in res[0].sequences_ids[0] if i < EXPECTED_IDS[name]["eot"]]
        assert hf_ids == ct2_ids, f"{name} {clip_id}: HF and CTranslate2 greedy ids differ"
        refs.append(tok.normalize(text))
        hyps.append(tok.normalize(tok.decode(hf_ids, skip_special_tokens=True)))
    wer = jiwer.wer(refs, hyps)
    print(f"\n{name}: WER on the six real clips = {100 * wer:.1f}%")
    assert wer < 0.30


def test_pipeline_runs_offline(real, real_speech_dir):
    from transformers import pipeline

    name, path, _, _ = real
    pipe = pipeline("automatic-speech-recognition", model=str(path), device="cpu")
    kwargs = {"generate_kwargs": {"language": "en", "task": "transcribe"}} if name == "base" else {}
    audio = load_audio(real_speech_dir / "jfk.wav")
    text = pipe({"raw": audio, "sampling_rate": 16000}, **kwargs)["text"].lower()
    assert "ask not what your country can do for you" in text


def test_tiny_en_and_base_vocabularies_are_refused(tiny_en_dir, base_dir):
    check_same_vocabulary(load_processor(base_dir), load_processor(base_dir))
    with pytest.raises(UserError) as err:
        check_same_vocabulary(load_processor(base_dir), load_processor(tiny_en_dir))
    msg = str(err.value)
    assert "\n" not in msg
    assert "multilingual, 51865 tokens, end-of-text 50257" in msg
    assert "English-only, 51864 tokens, end-of-text 50256" in msg
    assert "derived from the teacher" in msg


def test_fetch_is_idempotent_and_instant(tiny_en_dir, capsys):
    assert main(["models", "fetch", "tiny.en"]) == 0
    out = capsys.readouterr().out
    assert "downloading" not in out and out.strip().endswith("tiny.en")
    assert main(["models", "list"]) == 0
    assert "fetched" in capsys.readouterr().out


def test_transcribe_cli_prints_lines_and_jsonl(tiny_en_dir, real_speech_dir, capsys):
    clip = str(real_speech_dir / "jfk.wav")
    assert main(["transcribe", "tiny.en", clip, clip, "--jsonl", "--batch-size", "2"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len(rows) == 2 and rows[0]["text"] == rows[1]["text"] and "country" in rows[0]["text"]


@pytest.mark.parametrize("content,reason", [(None, "missing"), (b"", "empty"), (b"this is not audio" * 10, "not_audio")])
def test_transcribe_bad_input_is_one_line_exit_2(tiny_en_dir, tmp_path, capsys, content, reason):
    path = tmp_path / "clip.wav"
    if content is not None:
        path.write_bytes(content)
    assert main(["transcribe", "tiny.en", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(path) in err and reason in err and "Traceback" not in err


def test_unknown_names_and_offline_hub_ids_say_what_to_run(real_speech_dir):
    with pytest.raises(UserError, match="choose one of: tiny.en, base"):
        ensure_model("medium")
    with pytest.raises(UserError, match="truncated"):
        ensure_model("small")
    with pytest.raises(UserError, match="no such model directory"):
        load_model("./no/such/dir")
    # A hub id with the hub offline: the real code path up to the network boundary, in a fresh process.
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    cmd = [sys.executable, "-m", "whisperkd.cli", "transcribe", "openai/whisper-small", str(real_speech_dir / "jfk.wav")]
    result = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 2
    err = result.stderr.strip().splitlines()
    assert len(err) == 1 and "openai/whisper-small" in err[0] and "whisperkd models fetch tiny.en" in err[0]


def test_greedy_from_cached_encoder_equals_generate(real, real_speech_dir):
    from whisperkd.data.collate import decoder_prompt_ids
    from whisperkd.models.decode import generate_kwargs, greedy_from_encoder

    name, _, model, processor = real
    audio = [a for _, a, _ in _clips(real_speech_dir)[:3]]
    feats = processor.feature_extractor(audio, sampling_rate=16000, return_tensors="pt").input_features
    with torch.no_grad():
        enc = model.model.encoder(feats).last_hidden_state
        ref = model.generate(feats, max_new_tokens=40, **generate_kwargs(model))
    eot = EXPECTED_IDS[name]["eot"]
    ours = greedy_from_encoder(model, enc, decoder_prompt_ids(processor.tokenizer), 40)
    assert ours == [[t for t in row.tolist() if t < eot] for row in ref]
