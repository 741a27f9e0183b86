"""The loop: a non-finite loss skips the optimizer step and is counted; repeated ones stop the run."""

from __future__ import annotations

import json

import pytest
import torch

import whisperkd.distill.trainer as trainer
from helpers import tiny_config
from whisperkd.cli import main
from whisperkd.config import config_from_dict
from whisperkd.distill.history import read_history
from whisperkd.errors import UserError


def _nan_at(monkeypatch, steps):
    original = trainer.loss_parts

    def poisoned(*args, step=None, **kwargs):
        parts = original(*args, step=step, **kwargs)
        if step in steps:
            parts["loss"] = parts["loss"] * torch.tensor(float("nan"))
        return parts

    monkeypatch.setattr(trainer, "loss_parts", poisoned)


def test_nan_loss_is_skipped_and_counted(tiny_setup, tmp_path, monkeypatch):
    _nan_at(monkeypatch, {2})  # the third optimizer step
    raw = tiny_config(tiny_setup, tmp_path / "run", data={"dev_fraction": 0.0},
                      train={"max_steps": 4, "batch_size": 4, "log_every": 1, "progress": False})
    result = trainer.train(config_from_dict(raw))
    steps = {s["step"]: s for s in result.history["steps"]}
    assert [steps[i]["skipped"] for i in (1, 2, 3, 4)] == [False, False, True, False]
    assert steps[3]["loss"] is None and steps[3]["grad_norm"] is None
    assert steps[4]["lr"] == steps[3]["lr"]  # the schedule did not advance on the skipped step
    assert all(s["loss"] is not None for i, s in steps.items() if i != 3)
    assert [(e["step"], e["event"], e["in_a_row"]) for e in result.history["events"]] == [(3, "non_finite_loss", 1)]
    state = json.loads((tmp_path / "run" / "checkpoint" / "step-000004" / "state.json").read_text())
    assert (state["nonfinite"], state["consecutive_nonfinite"]) == (1, 0)
    text = (tmp_path / "run" / "training_history.json").read_text()
    assert "NaN" not in text  # strict JSON: non-finite numbers are null


def test_repeated_nan_losses_stop_the_run(tiny_setup, tmp_path, monkeypatch):
    _nan_at(monkeypatch, {1, 2, 3, 4, 5})
    raw = tiny_config(tiny_setup, tmp_path / "run", data={"dev_fraction": 0.0},
                      train={"max_steps": 8, "batch_size": 4, "log_every": 4, "max_consecutive_nonfinite": 3,
                             "progress": False})
    with pytest.raises(UserError) as err:
        trainer.train(config_from_dict(raw))
    message = str(err.value)
    assert message.startswith("stopped at step 4: 3 non-finite losses in a row (steps 2-4, 3 in all); "
                              "last checkpoint: ")
    assert "lower optim.lr" in message and "\n" not in message
    history = read_history(tmp_path / "run")
    assert [e["step"] for e in history["events"]] == [2, 3, 4]
    assert [s["step"] for s in history["steps"] if s["skipped"]] == [2, 3, 4]


def test_on_eval_reports_and_can_stop_the_run(tiny_setup, tmp_path):
    class Stop(Exception):
        pass

    seen = []

    def on_eval(step, record):
        seen.append((step, record["dev_loss"]))
        if step == 2:
            raise Stop

    raw = tiny_config(tiny_setup, tmp_path / "run", eval={"every": 1, "at_start": False},
                      train={"max_steps": 5, "batch_size": 4, "progress": False})
    with pytest.raises(Stop):
        trainer.train(config_from_dict(raw), on_eval=on_eval)
    assert [s for s, _ in seen] == [1, 2]
    assert [e["dev_loss"] for e in read_history(tmp_path / "run")["evals"]] == [v for _, v in seen]


def test_cli_runs_and_resumes(tiny_setup, tmp_path, capsys):
    import yaml

    raw = tiny_config(tiny_setup, tmp_path / "run", eval={"wer": True, "at_start": True, "every": 2},
                      train={"max_steps": 2, "batch_size": 4, "log_every": 1, "progress": False})
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump(raw))
    assert main(["distill", str(config), "train.max_steps=2", "optim.warmup_steps=1"]) == 0
    out = capsys.readouterr().out
    assert "dev WER" in out and "student_final/" in out
    saved = json.loads((tmp_path / "run" / "training_config.json").read_text())
    assert saved["optim"]["warmup_steps"] == 1 and saved["data"]["train"] == tiny_setup["manifest"]
    assert main(["distill", str(config)]) == 2
    assert "already holds a run" in capsys.readouterr().err
    assert main(["distill", "--resume", str(tmp_path / "run"), "optim.lr=1"]) == 2
    assert "takes no config or overrides" in capsys.readouterr().err
    assert main(["distill", "--resume", str(tmp_path / "run")]) == 0  # already at max_steps: exports again
    assert (tmp_path / "run" / "student_final" / "config.json").is_file()


def test_gradient_checkpointing_gives_the_same_gradients(tiny_setup, tmp_path):
    from helpers import first_batch

    from whisperkd.distill.build import build_models

    batch = first_batch(tiny_setup, n=2)
    grads = []
    for checkpointing in (False, True):
        raw = tiny_config(tiny_setup, tmp_path / "run", student={"decoder_layers": 2,
                                                                  "gradient_checkpointing": checkpointing})
        cfg = config_from_dict(raw)
        built = build_models(cfg)
        built.model.train()
        parts = trainer.loss_parts(built.model, batch, built.online_teacher(cfg, "cpu")(batch), cfg.loss,
                                   built.align_pairs, step=1)
        parts["loss"].backward()
        grads.append({n: p.grad for n, p in built.model.named_parameters() if p.requires_grad})
    assert grads[0].keys() == grads[1].keys()
    for name in grads[0]:
        torch.testing.assert_close(grads[0][name], grads[1][name], rtol=1e-5, atol=1e-6)
