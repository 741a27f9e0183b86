"""The teacher interface and the builder: one encoder pass feeds both, a top-k teacher plugs in, and
make_teacher chooses the online or the cached teacher."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from transformers import WhisperForConditionalGeneration

from helpers import first_batch, tiny_config
from whisperkd.config import config_from_dict
from whisperkd.distill.build import build_models, read_splits
from whisperkd.distill.cache import CachedTeacher, run_splits
from whisperkd.distill.teacher import OnlineTeacher, make_teacher
from whisperkd.distill.teacher_batch import TeacherBatch, TeacherNeeds, TeacherOutputs
from whisperkd.distill.trainer import loss_parts
from whisperkd.errors import UserError
from whisperkd.models.loading import load_processor


def _cfg(setup, tmp_path, **sections):
    return config_from_dict(tiny_config(setup, tmp_path / "run", **sections))


def test_shared_encoder_runs_once_and_feeds_both(tiny_setup, tmp_path):
    cfg = _cfg(tiny_setup, tmp_path, loss={"align_weight": 0.5}, teacher={"memo_size": 0})
    built = build_models(cfg)
    assert built.shares_encoder and built.align_pairs == [(0, 0), (1, 2)]
    teacher = built.online_teacher(cfg, "cpu")
    assert isinstance(teacher, TeacherOutputs)
    assert teacher.needs == TeacherNeeds(logits=True, full_logits=False, hidden_layers=(0, 2), encoder=True)
    calls = []
    built.teacher.model.encoder.register_forward_hook(lambda *a: calls.append(1))
    built.model.whisper.model.encoder.register_forward_hook(lambda *a: calls.append(2))
    batch = first_batch(tiny_setup)
    out = teacher(batch).check(teacher.needs)
    with torch.no_grad():
        reference = built.teacher(input_features=batch["input_features"], decoder_input_ids=batch["decoder_input_ids"],
                                  decoder_attention_mask=batch["decoder_attention_mask"], output_hidden_states=True)
        parts = loss_parts(built.model, batch, out, cfg.loss, built.align_pairs, step=0)
    assert calls == [1, 1]  # one teacher encoder pass for the reference, one for the batch; the student's never
    torch.testing.assert_close(out.logits, reference.logits)
    torch.testing.assert_close(out.encoder_hidden_states, reference.encoder_last_hidden_state)
    torch.testing.assert_close(out.hidden_states[2], reference.decoder_hidden_states[3])
    assert set(parts) == {"ce", "kl", "align", "loss"}
    own = built.model(input_features=batch["input_features"], decoder_input_ids=batch["decoder_input_ids"],
                      decoder_attention_mask=batch["decoder_attention_mask"])[0]
    shared = built.model(encoder_hidden_states=out.encoder_hidden_states,
                         decoder_input_ids=batch["decoder_input_ids"],
                         decoder_attention_mask=batch["decoder_attention_mask"])[0]
    torch.testing.assert_close(own, shared)  # the student's frozen encoder is the teacher's


def test_teacher_memo_by_utterance_id(tiny_setup, tmp_path):
    built = build_models(_cfg(tiny_setup, tmp_path))
    teacher = OnlineTeacher(built.teacher, TeacherNeeds(encoder=True, hidden_layers=(1,)), memo_size=8)
    calls = []
    built.teacher.model.encoder.register_forward_hook(lambda *a: calls.append("encoder"))
    built.teacher.model.decoder.register_forward_hook(lambda *a: calls.append("decoder"))
    batch = first_batch(tiny_setup)
    first, second = teacher(batch), teacher(batch)
    assert calls == ["encoder", "decoder"]  # the second batch came from memory
    mask = batch["decoder_attention_mask"].bool()
    assert torch.equal(first.encoder_hidden_states, second.encoder_hidden_states)
    assert torch.equal(first.logits[mask], second.logits[mask])  # padded positions do not count
    assert torch.equal(first.hidden_states[1][mask], second.hidden_states[1][mask])


def test_a_topk_teacher_plugs_in(tiny_setup, tmp_path):
    """A cache-like teacher (top-k log-probs at T, k = V) gives the same loss as the online one."""
    cfg = _cfg(tiny_setup, tmp_path)
    built = build_models(cfg)
    online = built.online_teacher(cfg, "cpu")
    batch = first_batch(tiny_setup)
    full = online(batch)
    logprobs = F.log_softmax(full.logits / cfg.loss.temperature, dim=-1)
    top = logprobs.topk(logprobs.shape[-1], dim=-1)
    cached = TeacherBatch(topk_logprobs=top.values, topk_indices=top.indices, topk_temperature=cfg.loss.temperature,
                          encoder_hidden_states=full.encoder_hidden_states).check(online.needs)
    with torch.no_grad():
        a = loss_parts(built.model, batch, full, cfg.loss, [], step=5)
        b = loss_parts(built.model, batch, cached, cfg.loss, [], step=5)
    torch.testing.assert_close(a["kl"], b["kl"], rtol=1e-5, atol=1e-6)
    cached.topk_temperature = 1.0
    with pytest.raises(UserError, match="top-k log-probs at T=1.0, training at loss.temperature=2.0"):
        loss_parts(built.model, batch, cached, cfg.loss, [], step=5)
    with pytest.raises(UserError, match="full logits are needed"):
        cached.check(TeacherNeeds(full_logits=True))
    with pytest.raises(UserError, match=r"hidden states of decoder layers \[1\] are missing"):
        cached.check(TeacherNeeds(hidden_layers=(1,)))


def test_builder_choices(tiny_setup, tmp_path):
    own_encoder = build_models(_cfg(tiny_setup, tmp_path, student={"decoder_layers": [1, 2], "encoder_layers": 1}))
    assert not own_encoder.shares_encoder
    assert not any(p.requires_grad for p in own_encoder.model.whisper.model.encoder.parameters())
    lora = build_models(_cfg(tiny_setup, tmp_path, lora={"enabled": True, "presets": ["decoder-cross-qv"]}))
    names = [n for n, p in lora.model.named_parameters() if p.requires_grad]
    assert names and all("lora_" in n and "encoder_attn" in n for n in names)
    with pytest.raises(UserError, match=r"^config teacher.load_in_8bit: int8 weights \(bitsandbytes\) need a CUDA"):
        build_models(_cfg(tiny_setup, tmp_path, teacher={"load_in_8bit": True}))
    other = load_processor(tiny_setup["teacher"])
    other.tokenizer.add_tokens(["<|another-vocabulary|>"])
    other.save_pretrained(tmp_path / "other")
    WhisperForConditionalGeneration.from_pretrained(tiny_setup["teacher"]).save_pretrained(tmp_path / "other")
    with pytest.raises(UserError, match="different vocabularies"):
        build_models(_cfg(tiny_setup, tmp_path, student={"init": str(tmp_path / "other"), "decoder_layers": None}))


def test_make_teacher_is_online_or_reads_the_cache(tiny_setup, tmp_path):
    """cache.enabled=false: the online teacher. true: the cache is built (then only checked) and read back, giving
    the online teacher's outputs (float16 hidden states and encoder outputs)."""
    sections = {"loss": {"align_weight": 0.5}, "teacher": {"memo_size": 0}}
    cfg = _cfg(tiny_setup, tmp_path, **sections)
    built = build_models(cfg)
    splits = run_splits(*read_splits(cfg))
    online = make_teacher(cfg, built, "cpu", splits)
    assert isinstance(online, OnlineTeacher)
    cfg = _cfg(tiny_setup, tmp_path, cache={"enabled": True, "hidden_layers": "needed"}, **sections)
    cached = make_teacher(cfg, built, "cpu", splits, progress=False)
    assert isinstance(cached, CachedTeacher) and cached.cache_dir == tmp_path / "run" / "teacher_cache"
    assert cached.meta["hidden_layers"] == [0, 2] and cached.meta["encoder_outputs"]
    calls = []
    built.teacher.model.decoder.register_forward_hook(lambda *a: calls.append(1))
    make_teacher(cfg, built, "cpu", splits, progress=False)
    assert calls == []  # up to date: checked, not recomputed
    batch = first_batch(tiny_setup)
    got, want = cached(batch).check(cached.needs), online(batch)
    mask = batch["labels"] != -100
    torch.testing.assert_close(got.logits[mask], want.logits[mask], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(got.hidden_states[2][mask], want.hidden_states[2][mask], atol=2e-2, rtol=2e-3)
    torch.testing.assert_close(got.encoder_hidden_states, want.encoder_hidden_states, atol=2e-2, rtol=2e-3)
