"""Speculative decoding (whisperkd.deploy.speculative): the teacher's greedy transcripts exactly, whichever student
drafts; the encoder runs once per utterance when the student keeps the teacher's encoder; unusable pairs refused."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import GenerationConfig, WhisperForCausalLM, WhisperForConditionalGeneration

from helpers import tiny_whisper_config
from whisperkd.data.audio import load_utterance
from whisperkd.data.manifest import read_manifest
from whisperkd.deploy.speculative import open_speculative
from whisperkd.errors import UserError
from whisperkd.models.decode import transcribe_arrays
from whisperkd.models.loading import load_model, load_processor
from whisperkd.models.student import build_student_from_teacher

EOT = 50256


def _save(model, processor, path: Path) -> str:
    model.save_pretrained(path)
    processor.save_pretrained(path)
    return str(path)


@pytest.fixture(autouse=True)
def one_thread():
    """torch on one thread in these tests: decoding one utterance at a time is many small operations, which extra
    threads slow down on a busy machine (the tiny pair: 1.2 s against 7 s with two threads on 2 busy cores)."""
    saved = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(saved)


@pytest.fixture(scope="module")
def tiny_pair(tmp_path_factory, tiny_en_dir) -> dict:
    """A random tiny teacher (tiny.en's tokenizer and generation config: suppressed and begin-suppressed tokens)
    and students drafted from it: decoder layers [0, 2] with the teacher's encoder ("shared"), the same with one
    encoder layer ("own"), and the whole teacher copied ("copy")."""
    root = tmp_path_factory.mktemp("speculative")
    processor = load_processor(tiny_en_dir)
    torch.manual_seed(0)
    teacher = WhisperForConditionalGeneration(tiny_whisper_config(decoder_layers=3)).eval()
    teacher.generation_config = GenerationConfig.from_pretrained(tiny_en_dir)
    out = {"teacher": _save(teacher, processor, root / "teacher"), "processor": processor}
    for name, dec, enc in (("shared", [0, 2], None), ("own", [0, 2], [1]), ("copy", [0, 1, 2], None)):
        out[name] = _save(build_student_from_teacher(teacher, dec, enc), processor, root / name)
    rng = np.random.default_rng(0)
    out["audios"] = [(0.1 * rng.standard_normal(16_000 * s)).astype(np.float32) for s in (1, 2)]
    return out


def _greedy(engine, audios) -> list[str]:
    """The reference: the engine's own teacher through transcribe_arrays, batch 1, 30 s, no fallback."""
    return transcribe_arrays(engine.model, engine.processor, audios, batch_size=1, window=30)


def _count_calls(module) -> dict:
    calls = {"n": 0}
    module.register_forward_hook(lambda *args: calls.__setitem__("n", calls["n"] + 1))
    return calls


def test_shared_encoder_draft_gives_the_teachers_greedy_text_with_one_encoder_pass(tiny_pair):
    engine = open_speculative(tiny_pair["teacher"], tiny_pair["shared"])
    assert engine.shares_encoder and isinstance(engine.draft, WhisperForCausalLM)
    assert not hasattr(engine.draft.model, "encoder")
    encoder = _count_calls(engine.model.model.encoder)
    texts = engine.transcribe(tiny_pair["audios"])
    assert encoder["n"] == len(tiny_pair["audios"])  # the draft read the teacher's encoder states
    assert texts == _greedy(engine, tiny_pair["audios"])
    assert all(texts)
    stats = engine.last_stats
    assert len(stats) == 2 and all(s.rounds >= 1 and 0 <= s.accepted <= s.drafted for s in stats)
    # the engine protocol of evaluate/engines.py
    teacher = load_model(tiny_pair["teacher"])
    assert engine.kind == "hf-speculative" and engine.device == "cpu" and engine.dtype == "float32"
    assert engine.parameters == sum(p.numel() for p in teacher.parameters()) + \
        sum(p.numel() for p in engine.draft.parameters())
    assert engine.path == Path(tiny_pair["teacher"]) and engine.disk_bytes > 0
    assert engine.trainable_parameters is None and engine.loop_guard is False


def test_a_student_with_its_own_encoder_drafts_as_a_whole_model(tiny_pair):
    engine = open_speculative(tiny_pair["teacher"], tiny_pair["own"])
    assert not engine.shares_encoder and isinstance(engine.draft, WhisperForConditionalGeneration)
    teacher_enc, draft_enc = _count_calls(engine.model.model.encoder), _count_calls(engine.draft.model.encoder)
    texts = engine.transcribe(tiny_pair["audios"])
    assert (teacher_enc["n"], draft_enc["n"]) == (2, 2)
    assert texts == _greedy(engine, tiny_pair["audios"])


def test_a_perfect_draft_is_accepted_in_long_runs(tiny_pair):
    engine = open_speculative(tiny_pair["teacher"], tiny_pair["copy"])
    # a random model is never confident: without transformers' confidence stop the draft proposes up to 20 tokens
    engine.draft.generation_config.assistant_confidence_threshold = 0.0
    texts = engine.transcribe(tiny_pair["audios"])
    assert texts == _greedy(engine, tiny_pair["audios"])
    for s in engine.last_stats:  # the teacher checks the drafted tokens in one pass and keeps them all
        assert s.accepted == s.tokens - s.rounds >= s.tokens - 3 and s.drafted >= s.accepted


@pytest.mark.parametrize("student", ["shared", "own"])
def test_the_first_token_is_begin_suppressed_as_in_greedy_decoding(tiny_pair, student):
    """The teacher prefers end-of-text everywhere: greedy decoding forbids it as the first token only (Whisper's
    begin_suppress_tokens, which transformers drops under assisted generation), so every decode is one token and end-of-text."""
    engine = open_speculative(tiny_pair["teacher"], tiny_pair[student])

    def prefer_eot(module, args, output):
        output[..., EOT] += 1e4
        return output

    engine.model.proj_out.register_forward_hook(prefer_eot)
    texts = engine.transcribe(tiny_pair["audios"])
    reference = _greedy(engine, tiny_pair["audios"])
    assert texts == reference
    assert [s.tokens for s in engine.last_stats] == [2, 2]  # one token, then end-of-text (not end-of-text first)


def test_a_clip_over_30_s_is_refused(tiny_pair):
    engine = open_speculative(tiny_pair["teacher"], tiny_pair["shared"])
    with pytest.raises(UserError, match="at most 30 s"):
        engine.transcribe([np.zeros(31 * 16_000, dtype=np.float32)])


def _other_vocabulary(tiny_pair, path: Path) -> str:
    processor = load_processor(tiny_pair["teacher"])
    processor.tokenizer.add_tokens(["<|extra|>"])
    return _save(load_model(tiny_pair["shared"]), processor, path)


def _other_mels(tiny_pair, path: Path) -> str:
    torch.manual_seed(1)
    model = WhisperForConditionalGeneration(tiny_whisper_config(num_mel_bins=128))
    return _save(model, tiny_pair["processor"], path)


@pytest.mark.parametrize("make, message", [(_other_vocabulary, "vocabularies differ"),
                                           (_other_mels, "num_mel_bins 128 differs")])
def test_a_student_that_cannot_draft_is_refused_in_one_line(tiny_pair, tmp_path, make, message):
    student = make(tiny_pair, tmp_path / "student")
    with pytest.raises(UserError, match=message) as err:
        open_speculative(tiny_pair["teacher"], student)
    assert "\n" not in str(err.value) and student in str(err.value)


@pytest.mark.parametrize("role", ["teacher", "--assistant"])
def test_a_ctranslate2_directory_is_refused_in_one_line(tiny_pair, tmp_path, role):
    ct2 = tmp_path / "ct2"
    ct2.mkdir()
    (ct2 / "model.bin").write_bytes(b"\0" * 16)
    pair = (str(ct2), tiny_pair["shared"]) if role == "teacher" else (tiny_pair["teacher"], str(ct2))
    with pytest.raises(UserError, match=f"{role} {ct2}: a CTranslate2 model") as err:
        open_speculative(*pair)
    assert "\n" not in str(err.value)


# 43 s on the shared 2-core machine under load (load average 7, one torch thread; 2026-12-03)
def test_base_with_a_pruned_untrained_student_gives_bases_greedy_text_on_real_clips(base_dir, real_speech_dir,
                                                                                    tmp_path):
    """Teacher base, draft = decoder layers [0, 5] of base with its encoder (untrained: few drafts accepted)."""
    teacher, processor = load_model(base_dir), load_processor(base_dir)
    student = _save(build_student_from_teacher(teacher, [0, 5]), processor, tmp_path / "student")
    audios = [load_utterance(u) for u in read_manifest(real_speech_dir / "manifest.jsonl")]
    reference = transcribe_arrays(teacher, processor, audios, batch_size=1, window=30)
    del teacher
    engine = open_speculative(str(base_dir), student)
    assert engine.shares_encoder
    assert engine.transcribe(audios) == reference
    assert len(reference) == 6 and all(reference)
