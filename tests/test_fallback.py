"""Whisper's temperature fallback (transformers' own, short-form and batched) as ``transcribe_arrays`` runs it,
and its wiring into ``whisperkd transcribe`` (on by default) and ``whisperkd evaluate`` (``--fallback``)."""

from __future__ import annotations

import json
import zlib
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from transformers import GenerationConfig, WhisperFeatureExtractor

from whisperkd.cli import build_parser, main
from whisperkd.errors import UserError
from whisperkd.models.decode import (Decoded, Fallback, generate_kwargs, max_new_tokens_for, replay,
                                     token_compression_ratio, transcribe_arrays)

EOT = 50256
LOOP = (400, 401)  # the greedy decode of a "loud" utterance: 400 401 400 401 ... up to the token cap
READ = (500, 501, 502, 503, 504)  # any other decode: five distinct tokens, then end of text


class Tokenizer:
    """Token ids as text; special ids (>= end of text, and the padding) dropped, as HF's batch_decode does."""

    def batch_decode(self, ids, skip_special_tokens=True):
        return [" ".join(str(t) for t in row.tolist() if t < EOT) for row in ids]


@pytest.fixture
def whisper(tiny_random_model):
    """The tiny random Whisper with a bare generation config and a processor whose tokenizer prints ids."""
    model = tiny_random_model
    model.generation_config = GenerationConfig(decoder_start_token_id=50257, eos_token_id=EOT, pad_token_id=EOT)
    processor = SimpleNamespace(feature_extractor=WhisperFeatureExtractor(feature_size=80), tokenizer=Tokenizer())
    return model, processor


def audios() -> list[np.ndarray]:
    """Silence, noise (the "loud" one), silence: 2, 3 and 2.5 s."""
    noise = 0.1 * np.random.default_rng(0).standard_normal(16000 * 3).astype(np.float32)
    return [np.zeros(32000, np.float32), noise, np.zeros(40000, np.float32)]


class Script:
    """Hooks that dictate the model's next token (one finite logit): in the first decode of a ``generate`` call
    (the greedy one), rows whose log-mel is not constant (noise) loop on LOOP until the cap; every other row,
    and every later decode, reads READ and stops. Records the batch size of every decode."""

    def __init__(self, model):
        self.batches: list[int] = []
        self.loud = None
        self.step = 0
        model.model.encoder.register_forward_pre_hook(self.encoder, with_kwargs=True)
        model.proj_out.register_forward_hook(self.logits)

    def encoder(self, module, args, kwargs):
        feats = args[0] if args else kwargs["input_features"]
        self.loud = (feats.std(dim=(1, 2)) > 1e-3).tolist() if not self.batches else [False] * feats.shape[0]
        self.batches.append(feats.shape[0])
        self.step = 0

    def logits(self, module, args, out):
        forced = torch.full_like(out[:, -1], -1e4)
        for row, loud in enumerate(self.loud):
            token = LOOP[self.step % 2] if loud else (READ[self.step] if self.step < len(READ) else EOT)
            forced[row, token] = 0.0
        self.step += 1
        out = out.clone()
        out[:, -1] = forced
        return out

    def reset(self):
        self.batches = []


# ---------------------------------------------------------------- the decision and its bookkeeping

def test_token_compression_ratio_by_hand():
    tokens = [50257, 440, 1029, 440, 1029, 440, 1029, 440, 1029, 440, 1029, 440, 1029, EOT]
    raw = b"".join(t.to_bytes(2, "little") for t in tokens)  # vocabulary 51,865 < 2**16: two bytes a token
    assert len(raw) == 28 and raw[:4] == bytes([0x51, 0xC4, 0xB8, 0x01])  # 50257 = 0xC451, 440 = 0x01B8
    assert token_compression_ratio(tokens, 51865) == pytest.approx(len(raw) / len(zlib.compress(raw)))
    assert token_compression_ratio([440, 1029] * 30, 51865) > 1.35 > token_compression_ratio(list(range(40)), 51865)
    assert token_compression_ratio([1, 2], 255) == pytest.approx(2 / len(zlib.compress(b"\x01\x02")))  # one byte


def test_replay_maps_rounds_back_to_utterances():
    # round 0.0 decides rows 0, 1, 2 (1 and 2 fail); round 0.2 decides 1, 2 (2 fails); round 0.4 decides 2
    calls = [(0.0, False, False), (0.0, True, False), (0.0, True, False), (0.2, False, False), (0.2, True, False),
             (0.4, True, False)]
    rows = replay(calls, 3, (0.0, 0.2, 0.4))
    assert rows == [Decoded(1, 0.0, True), Decoded(2, 0.2, True), Decoded(3, 0.4, False)]
    assert replay([(0.0, False, True)], 1, (0.0, 0.2)) == [Decoded(1, 0.0, True, True)]  # no speech: not redone
    with pytest.raises(RuntimeError):
        replay(calls[:2], 3, (0.0, 0.2, 0.4))
    with pytest.raises(ValueError):
        Fallback(no_speech_threshold=0.6, logprob_threshold=None)


# ---------------------------------------------------------------- decoding with a tiny model

def test_off_equals_plain_greedy_generate(whisper):
    model, processor = whisper
    clips = audios()
    feats = processor.feature_extractor(clips, sampling_rate=16000, return_tensors="pt").input_features
    ids = model.generate(feats, max_new_tokens=max_new_tokens_for(3.0), **generate_kwargs(model))
    decoded: list = []
    assert transcribe_arrays(model, processor, clips, batch_size=3, decoded=decoded) == \
        [t.strip() for t in Tokenizer().batch_decode(ids)]
    assert decoded == [Decoded()] * 3


@pytest.mark.parametrize("window", [None, "auto"])
def test_only_the_looping_utterance_is_decoded_again(whisper, window):
    model, processor = whisper
    script = Script(model)
    greedy = transcribe_arrays(model, processor, audios(), batch_size=3, window=window)
    loop = " ".join(str(LOOP[i % 2]) for i in range(max_new_tokens_for(3.0)))
    read = " ".join(map(str, READ))
    assert greedy == [read, loop, read] and script.batches == [3]
    script.reset()
    decoded: list = []
    guarded = transcribe_arrays(model, processor, audios(), batch_size=3, window=window, fallback=Fallback(),
                                decoded=decoded)
    assert guarded == [read, read, read]  # the loop is gone, the others are the greedy transcripts
    assert script.batches == [3, 1]  # one greedy decode of the batch, then the failing utterance alone at 0.2
    assert decoded == [Decoded(), Decoded(2, 0.2, True), Decoded()]
    assert model.config.max_source_positions == 1500 and "_need_fallback" not in vars(model)  # all restored


def test_sampling_is_seeded_and_leaves_the_global_generator_alone(whisper):
    # A random model fails every check (its mean log-probability is near -log(vocabulary)): every utterance is
    # sampled at every temperature, and the last sample is kept.
    model, processor = whisper
    clips = [0.1 * np.random.default_rng(i).standard_normal(16000).astype(np.float32) for i in range(3)]
    torch.manual_seed(123)
    state = torch.random.get_rng_state()
    decoded: list = []
    guard = Fallback(temperatures=(0.0, 1.0))
    first = transcribe_arrays(model, processor, clips, batch_size=2, window=5, fallback=guard, decoded=decoded)
    assert torch.equal(torch.random.get_rng_state(), state)
    assert decoded == [Decoded(2, 1.0, False)] * 3
    again = transcribe_arrays(model, processor, clips, batch_size=2, window=5, fallback=guard)
    other = transcribe_arrays(model, processor, clips, batch_size=2, window=5, fallback=Fallback((0.0, 1.0), seed=1))
    greedy = transcribe_arrays(model, processor, clips, batch_size=2, window=5)
    assert first == again and first != other and first != greedy


def test_real_clean_speech_keeps_every_greedy_transcript(tiny_en_dir, real_speech_dir):
    from whisperkd.data.audio import load_audio
    from whisperkd.models.loading import load_model, load_processor

    model, processor = load_model(tiny_en_dir), load_processor(tiny_en_dir)
    clips = [load_audio(real_speech_dir / f"sense_and_sensibility_01_austen_64kb-{n}.wav") for n in ("0880", "0930")]
    decoded: list = []
    assert transcribe_arrays(model, processor, clips, batch_size=2, fallback=Fallback(), decoded=decoded) == \
        transcribe_arrays(model, processor, clips, batch_size=2)
    assert decoded == [Decoded()] * 2


# ---------------------------------------------------------------- commands and the evaluation engine

def test_transcribe_guards_by_default_and_no_fallback_turns_it_off(tmp_path, monkeypatch, capsys):
    import soundfile as sf

    import whisperkd.models.decode as decode
    import whisperkd.models.loading as loading

    parser = build_parser()
    assert parser.parse_args(["transcribe", "base", "a.wav"]).fallback is True
    assert parser.parse_args(["transcribe", "base", "a.wav", "--no-fallback"]).fallback is False
    assert parser.parse_args(["evaluate", "base", "--data", "d"]).fallback is False
    assert parser.parse_args(["evaluate", "base", "--data", "d", "--fallback"]).fallback is True

    seen = []

    def fake(model, processor, audios, batch_size=8, window=None, fallback=None, decoded=None):
        seen.append(fallback)
        decoded.extend([Decoded(2, 0.2)] * len(audios) if fallback else [Decoded()] * len(audios))
        return ["some words"] * len(audios)

    import whisperkd.deploy.decoders  # noqa: F401  (imported before the patches: engines binds load_model at import)

    monkeypatch.setattr(decode, "transcribe_arrays", fake)
    monkeypatch.setattr(loading, "load_model", lambda spec: SimpleNamespace(config=SimpleNamespace()))
    monkeypatch.setattr(loading, "load_processor", lambda spec: None)
    clip = tmp_path / "clip.wav"
    sf.write(clip, 0.1 * np.random.default_rng(0).standard_normal(16000).astype(np.float32), 16000)
    assert main(["transcribe", "base", str(clip), "--jsonl"]) == 0
    assert seen[-1] == Fallback() and json.loads(capsys.readouterr().out)["temperature"] == 0.2
    assert main(["transcribe", "base", str(clip), "--no-fallback", "--loop-guard"]) == 0
    assert seen[-1] is None and "greedy, no fallback" in capsys.readouterr().out


def test_evaluate_engine_and_summary(tmp_path):
    from whisperkd.evaluate.engines import open_model
    from whisperkd.evaluate.runner import fallback_summary

    (tmp_path / "model.bin").write_bytes(b"")
    with pytest.raises(UserError, match="--fallback works with HF models only"):
        open_model(str(tmp_path), fallback=Fallback())
    assert fallback_summary([None, None]) is None
    assert fallback_summary([Decoded(), Decoded(3, 0.4), Decoded(6, 1.0, False), Decoded(1, 0.0, True, True)]) == \
        {"redecoded": 2, "no_speech": 1, "failed_all": 1, "utterances": 4}


def test_evaluate_fallback_end_to_end(tmp_path, tiny_en_dir, monkeypatch, capsys):
    import soundfile as sf
    from helpers import tiny_whisper_config
    from transformers import WhisperForConditionalGeneration

    from whisperkd.models.loading import load_processor

    torch.manual_seed(0)
    model = WhisperForConditionalGeneration(tiny_whisper_config())
    model.generation_config.update(decoder_start_token_id=50257, eos_token_id=EOT, pad_token_id=EOT,
                                   forced_decoder_ids=None, max_length=448)
    model.save_pretrained(tmp_path / "model")
    load_processor(tiny_en_dir).save_pretrained(tmp_path / "model")
    rows = []
    for i in range(2):
        sf.write(tmp_path / f"u{i}.wav", 0.1 * np.random.default_rng(i).standard_normal(16000).astype(np.float32),
                 16000)
        rows.append({"id": f"u{i}", "audio": f"u{i}.wav", "text": "a few words"})
    (tmp_path / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    monkeypatch.setattr("whisperkd.models.decode.max_new_tokens_for", lambda seconds, limit=440: 4)
    out = tmp_path / "eval"
    assert main(["evaluate", str(tmp_path / "model"), "--data", str(tmp_path / "manifest.jsonl"), "--out", str(out),
                 "--repeats", "1", "--no-latency", "--fallback", "--encoder-window", "auto"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["settings"]["fallback"]["temperatures"] == [0.0, 0.2, 0.4, 0.6, 0.8, 1.0]
    # a random model fails the log-probability check at every temperature
    assert metrics["results"][0]["fallback"] == {"redecoded": 2, "no_speech": 0, "failed_all": 2, "utterances": 2}
    utterances = [json.loads(line) for line in (out / "utterances.jsonl").read_text().splitlines()]
    assert [(u["decodes"], u["temperature"]) for u in utterances] == [(6, 1.0), (6, 1.0)]
