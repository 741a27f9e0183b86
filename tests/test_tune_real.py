"""A 4-trial study of real distillation runs: tiny.en teaches a student on a dozen synthetic utterances.

Trial 0 is sound, trial 1 is destroyed by a huge learning rate (pruned on its dev WER), trial 2 asks for a
negative KL weight (fails, with the reason), trial 3 is sampled by TPE. The teacher runs once, to build the
cache before the first trial; no trial runs it again.
"""

from __future__ import annotations

import inspect
import json
import shutil

import optuna
import pytest
import yaml

needs_tts = pytest.mark.skipif(shutil.which("espeak-ng") is None or shutil.which("flite") is None,
                               reason="espeak-ng or flite not installed")
VOICES = "espeak:en-us,espeak:en-gb,flite:slt,flite:rms"  # voices tiny.en understands well


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """Twelve synthetic utterances (3 per voice): 8 for training, the 3 of another voice for dev."""
    from whisperkd.data.manifest import write_manifest
    from whisperkd.data.sentences import load_sentences
    from whisperkd.data.synth import synthesize_corpus
    from whisperkd.data.voices import resolve_voices

    root = tmp_path_factory.mktemp("tune-corpus")
    utterances = synthesize_corpus(root / "speech", load_sentences("harvard"), resolve_voices(VOICES), seed=4,
                                   utterances=12, jobs=1, progress=False)
    assert len(utterances) == 12
    dev_speaker = utterances[-1].speaker
    write_manifest(root / "train.jsonl", [u for u in utterances if u.speaker != dev_speaker][:8])
    write_manifest(root / "dev.jsonl", [u for u in utterances if u.speaker == dev_speaker])
    return root


@needs_tts
@pytest.mark.real
def test_four_trial_study_on_tiny_en(corpus, tiny_en_dir, tmp_path, monkeypatch, capsys):
    import whisperkd.distill.cache.build as cache_mod
    import whisperkd.distill.trainer as trainer
    from whisperkd.cli import main
    from whisperkd.config import load_config
    from whisperkd.distill.cache import CachedTeacher
    from whisperkd.distill.teacher import OnlineTeacher

    calls = {"build": 0, "online": 0, "cached": 0}

    def count(name, function):
        def counted(*args, **kwargs):
            calls[name] += 1
            return function(*args, **kwargs)
        return counted

    monkeypatch.setattr(cache_mod, "teacher_forward", count("build", cache_mod.teacher_forward))
    monkeypatch.setattr(OnlineTeacher, "__call__", count("online", OnlineTeacher.__call__))
    monkeypatch.setattr(CachedTeacher, "__call__", count("cached", CachedTeacher.__call__))
    study_dir = tmp_path / "study"
    raw = {
        "teacher": {"model": str(tiny_en_dir), "device": "cpu", "dtype": "float32"},
        "student": {"decoder_layers": 4},
        "loss": {"kl_weight": 0.5, "temperature": 2.0},
        "optim": {"lr": 1e-5, "warmup_steps": 0},
        "train": {"max_steps": 2, "batch_size": 4, "device": "cpu", "log_every": 1},
        "data": {"train": str(corpus / "train.jsonl"), "dev": str(corpus / "dev.jsonl"), "dev_fraction": 0.0},
        "eval": {"every": 1, "at_start": False, "max_utterances": 4, "batch_size": 4, "wer": True},
        "output": {"dir": str(study_dir), "tensorboard": False, "checkpoint_every": 100},
        "tune": {"startup_trials": 2, "pruner": {"startup_trials": 1},
                 "enqueue": [{"optim.lr": 1e-5}, {"optim.lr": 1.0}, {"loss.kl_weight": -1.0}],
                 "space": {"optim.lr": {"type": "float", "low": 1e-6, "high": 1.0, "log": True},
                           "loss.kl_weight": {"type": "float", "low": 0.0, "high": 2.0}}},
    }
    config = tmp_path / "tune.yaml"
    config.write_text(yaml.safe_dump(raw))
    with pytest.warns(UserWarning, match="out of range"):
        assert main(["tune", str(config), "--trials", "4", "--no-progress"]) == 0
    out = capsys.readouterr().out
    trials = optuna.load_study(study_name="study", storage=f"sqlite:///{study_dir / 'study.db'}").get_trials()
    assert [t.state.name for t in trials[:3]] == ["COMPLETE", "PRUNED", "FAIL"], out
    assert len(trials) == 4 and trials[3].state.is_finished()
    assert trials[1].intermediate_values[1] > trials[0].intermediate_values[1]  # pruned at step 1 on its WER
    assert trials[2].user_attrs["fail_reason"] == "UserError: config loss.kl_weight: must be 0 or positive"
    history = json.loads((study_dir / "trial-0000" / "training_history.json").read_text())
    assert trials[0].intermediate_values == {e["step"]: pytest.approx(e["wer"]) for e in history["evals"]}
    assert (study_dir / "trial-0000" / "student_final" / "config.json").is_file()
    # One teacher cache, computed once (8 training + 3 dev utterances: one teacher batch each) and read by
    # every trial; the teacher itself never runs during a trial.
    assert calls["build"] == 2, calls
    trainer_reads_cache = "make_teacher" in inspect.getsource(trainer)
    if trainer_reads_cache:
        assert calls["online"] == 0 and calls["cached"] > 0, calls
    best = json.loads((study_dir / "best_params.json").read_text())
    assert best["trial"] in (0, 3) and best["objective"] == "wer"
    ready = load_config(study_dir / "best_config.yaml")
    assert ready.optim.lr == pytest.approx(best["params"]["optim.lr"])
    assert ready.output.dir == str(study_dir / "best")
    for name in ("optimization_history", "parallel_coordinate", "intermediate_values"):
        assert (study_dir / "report" / f"{name}.png").is_file()
    if not trainer_reads_cache:
        pytest.xfail(f"the trainer does not read the teacher cache yet (it runs an OnlineTeacher): {calls}")
