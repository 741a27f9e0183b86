"""Checkpoints: exact resume, reloaded students equal the trained one, atomic writes, requires_grad selection."""

from __future__ import annotations

import json

import pytest
import torch
from accelerate import Accelerator
from safetensors.torch import load_file
from transformers import WhisperForConditionalGeneration

import whisperkd.distill.trainer as trainer
from helpers import first_batch, logits_of, tiny_config
from whisperkd.config import config_from_dict
from whisperkd.distill.checkpoint import (atomic_dir, latest_checkpoint, list_checkpoints, load_checkpoint,
                                          save_checkpoint, save_trainable_only, trainable_state)
from whisperkd.distill.history import read_history
from whisperkd.distill.runfolder import load_run_config, restore_student
from whisperkd.errors import UserError
from whisperkd.models.lora import merge_lora


class Crash(RuntimeError):
    pass


def _weights(run_dir, step):
    return load_file(str(run_dir / "checkpoint" / f"step-{step:06d}" / "model.safetensors"))


def test_resumed_run_equals_uninterrupted_run(tiny_setup, tmp_path, monkeypatch):
    # LoRA (its dropout draws random numbers), TAID (its state), alignment (projector trains), accumulation.
    # No teacher memo: a resumed run would recompute remembered teacher outputs (equal only to the last bits).
    sections = dict(teacher={"memo_size": 0}, lora={"enabled": True, "presets": ["decoder-self-qv", "decoder-ffn"], "dropout": 0.1},
                    loss={"kind": "taid", "align_weight": 0.5, "kl_warmup_steps": 2},
                    train={"max_steps": 4, "batch_size": 2, "grad_accum_steps": 2, "log_every": 1, "progress": False},
                    eval={"every": 2, "at_start": True}, output={"checkpoint_every": 2})
    full = trainer.train(config_from_dict(tiny_config(tiny_setup, tmp_path / "full", **sections)))

    original = trainer.loss_parts

    def crash_at_step_4(*args, step=None, **kwargs):
        if step == 3:  # the fourth optimizer step: after checkpoint step-000002 and history up to step 3
            raise Crash("simulated crash")
        return original(*args, step=step, **kwargs)

    monkeypatch.setattr(trainer, "loss_parts", crash_at_step_4)
    crashed_dir = tmp_path / "crashed"
    with pytest.raises(Crash):
        trainer.train(config_from_dict(tiny_config(tiny_setup, crashed_dir, **sections)))
    assert [p.name for p in list_checkpoints(crashed_dir)] == ["step-000002"]
    assert read_history(crashed_dir)["steps"][-1]["step"] == 3  # logged past the checkpoint
    monkeypatch.setattr(trainer, "loss_parts", original)

    resumed = trainer.train(load_run_config(crashed_dir), resume=True)
    a, b = _weights(tmp_path / "full", 4), _weights(crashed_dir, 4)
    assert a.keys() == b.keys() and any("lora_A" in k for k in a) and "projector.weight" in a
    for key in a:
        assert torch.equal(a[key], b[key]), key
    assert resumed.history["steps"] == full.history["steps"]
    assert resumed.history["evals"] == full.history["evals"]
    assert [s["step"] for s in full.history["steps"]] == [1, 2, 3, 4]
    assert [e["step"] for e in full.history["evals"]] == [0, 2, 4]
    assert all("taid" in s and "align" in s and "t" in s for s in full.history["steps"])
    assert resumed.history["events"][-1]["event"] == "resumed"
    assert read_history(crashed_dir)["steps"] == full.history["steps"]
    state = json.loads((crashed_dir / "checkpoint" / "step-000004" / "state.json").read_text())
    assert state["taid"]["t"] == full.history["steps"][-1]["t"]
    batch = first_batch(tiny_setup)
    assert torch.equal(logits_of(full.student, batch), logits_of(resumed.student, batch))


def test_reloaded_student_equals_trained_one(tiny_setup, tmp_path):
    from transformers import pipeline

    raw = tiny_config(tiny_setup, tmp_path / "run", data={"dev_fraction": 0.0},
                      train={"max_steps": 4, "batch_size": 4, "log_every": 2, "progress": False},
                      output={"checkpoint_every": 2, "keep_checkpoints": 1})
    result = trainer.train(config_from_dict(raw))
    run = tmp_path / "run"
    assert [p.name for p in list_checkpoints(run)] == ["step-000004"]  # the last K=1 kept
    batch = first_batch(tiny_setup)
    trained = logits_of(result.student, batch)
    from_checkpoint = restore_student(run).whisper
    from_final = WhisperForConditionalGeneration.from_pretrained(run / "student_final")
    assert torch.equal(trained, logits_of(from_checkpoint, batch))
    assert torch.equal(trained, logits_of(from_final, batch))
    assert sorted(p.name for p in (run / "adapter_final").iterdir()) == ["projector.safetensors",
                                                                         "whisperkd_adapter.json"]
    asr = pipeline("automatic-speech-recognition", model=str(run / "student_final"), device="cpu")
    out = asr(batch["input_features"].new_zeros(16_000).numpy(), generate_kwargs={"max_new_tokens": 5})
    assert isinstance(out["text"], str)


def test_reloaded_lora_student_equals_trained_one(tiny_setup, tmp_path):
    from peft import PeftModel

    raw = tiny_config(tiny_setup, tmp_path / "lora", data={"dev_fraction": 0.0},
                      lora={"enabled": True, "presets": ["decoder-self-qkvo"], "rank": 4},
                      train={"max_steps": 3, "batch_size": 4, "log_every": 1, "progress": False})
    result = trainer.train(config_from_dict(raw))
    run = tmp_path / "lora"
    assert {"adapter_config.json", "adapter_model.safetensors", "projector.safetensors"} <= {
        p.name for p in (run / "adapter_final").iterdir()}
    batch = first_batch(tiny_setup)
    restored = restore_student(run)
    assert isinstance(restored.student, PeftModel)
    unmerged = logits_of(restored.whisper, batch)
    merged = merge_lora(restored.student)
    final = WhisperForConditionalGeneration.from_pretrained(run / "student_final")
    assert torch.equal(logits_of(merged, batch), logits_of(final, batch))
    assert torch.equal(logits_of(result.student, batch), logits_of(final, batch))
    torch.testing.assert_close(unmerged, logits_of(final, batch), rtol=1e-4, atol=1e-4)


def test_trainable_weights_are_chosen_by_requires_grad(tiny_random_model):
    from whisperkd.models.student import build_student_from_teacher, set_trainable

    student = build_student_from_teacher(tiny_random_model, 1)
    set_trainable(student, train_encoder=False, train_decoder=True)
    names = set(trainable_state(student))
    assert any(".encoder_attn." in n for n in names)  # the decoder's cross-attention trains
    assert not any(n.startswith("model.encoder.") for n in names)
    assert names == {n for n, p in student.named_parameters() if p.requires_grad}


def _tiny_training_objects():
    """A prepared Linear whose bias is frozen, its AdamW and schedule, after one step."""
    acc = Accelerator(cpu=True, step_scheduler_with_optimizer=False)
    acc.register_save_state_pre_hook(save_trainable_only)
    model = torch.nn.Linear(3, 2)
    model.bias.requires_grad_(False)
    optimizer = torch.optim.AdamW([model.weight], lr=0.1)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1.0 / (s + 1))
    model, optimizer, scheduler = acc.prepare(model, optimizer, scheduler)
    model(torch.ones(1, 3)).sum().backward()
    optimizer.step()
    scheduler.step()
    return acc, model, optimizer, scheduler


def test_checkpoints_are_atomic_and_pruned(tmp_path):
    acc, model, optimizer, scheduler = _tiny_training_objects()
    for step in (1, 2, 3):
        save_checkpoint(acc, tmp_path, step, {"step": step}, {"steps": []}, keep=2)
    (tmp_path / "checkpoint" / ".tmp-step-000004-abc").mkdir()  # a write that died half-way
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step-000002", "step-000003"]
    assert set(load_file(str(tmp_path / "checkpoint" / "step-000003" / "model.safetensors"))) == {"weight"}
    with pytest.raises(RuntimeError), atomic_dir(tmp_path / "checkpoint" / "step-000005") as tmp:
        (tmp / "state.json").write_text("{}")
        raise RuntimeError("disk full")
    assert latest_checkpoint(tmp_path).name == "step-000003"
    assert not list((tmp_path / "checkpoint").glob(".tmp-step-000005*"))

    acc2, fresh, opt2, sched2 = _tiny_training_objects()
    with torch.no_grad():
        fresh.weight.zero_()
    torch.manual_seed(123)
    save_checkpoint(acc, tmp_path, 6, {"step": 6}, {"steps": [1]}, keep=2)
    expected_draw = torch.rand(3)
    torch.manual_seed(999)
    state, history, best = load_checkpoint(acc2, fresh, latest_checkpoint(tmp_path))
    assert state == {"step": 6} and history == {"steps": [1]} and best is None
    assert torch.equal(fresh.weight, model.weight)
    assert opt2.state_dict()["state"][0]["step"] == optimizer.state_dict()["state"][0]["step"]
    assert sched2.state_dict()["last_epoch"] == scheduler.state_dict()["last_epoch"]
    assert torch.equal(torch.rand(3), expected_draw)  # the RNG state of step 6 is back


def test_a_checkpoint_of_another_model_is_refused(tmp_path):
    acc, model, optimizer, scheduler = _tiny_training_objects()
    save_checkpoint(acc, tmp_path, 1, {"step": 1}, {"steps": []}, keep=1)
    acc2 = Accelerator(cpu=True)
    other = acc2.prepare(torch.nn.Linear(3, 4))
    with pytest.raises(UserError, match="model.safetensors: the saved trainable weights do not fit this model"):
        load_checkpoint(acc2, other, latest_checkpoint(tmp_path))


def test_resume_needs_a_checkpoint(tiny_setup, tmp_path):
    from whisperkd.distill.runfolder import start_run_dir

    cfg = config_from_dict(tiny_config(tiny_setup, tmp_path / "empty"))
    start_run_dir(cfg)
    with pytest.raises(UserError, match="no checkpoint to resume from"):
        trainer.train(load_run_config(tmp_path / "empty"), resume=True)
    with pytest.raises(UserError, match="already holds a run"):
        start_run_dir(cfg)
