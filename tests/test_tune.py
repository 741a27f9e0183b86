"""whisperkd tune: the tune: section and search space, trial configs, the study loop (budget, resume, failures,
pruning), the report, and a study of real distillation runs on the tiny random teacher over one cache."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import optuna
import pytest
import yaml

from helpers import tiny_config
from whisperkd.cli import main
from whisperkd.errors import UserError
from whisperkd.tuning.tune import cache_dir_for, load_tune, trial_config, tune
from whisperkd.tuning.space import DEFAULT_SPACE, active_space, parse_tune

QUIET = {"log": lambda line: None}


def _write(tmp_path: Path, raw: dict, name: str = "tune.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def _base(tmp_path: Path, **tune_section) -> dict:
    return {"teacher": {"model": "tiny.en", "device": "cpu"}, "student": {"decoder_layers": 2},
            "data": {"train": str(tmp_path / "train.jsonl"), "dev_fraction": 0.2},
            "output": {"dir": str(tmp_path / "study")}, "tune": tune_section}


# ---------------------------------------------------------------- the tune: section

def test_default_space_keeps_what_applies_to_the_config():
    tune_cfg = parse_tune(None)
    assert list(tune_cfg.space) == list(DEFAULT_SPACE)
    assert (tune_cfg.objective, tune_cfg.trials, tune_cfg.pruner.kind, tune_cfg.cache) == ("wer", 20, "median", True)
    from whisperkd.config import config_from_dict

    plain = config_from_dict({"student": {"decoder_layers": 2}}).to_dict()
    kept, left_out = active_space(tune_cfg, plain)
    assert [p.key for p in kept] == ["loss.kl_weight", "loss.align_weight", "loss.temperature", "optim.lr",
                                     "train.batch_size"]
    assert left_out == {"loss.taid.t_start": "loss.kind is 'kl'", "lora.rank": "lora.enabled is False",
                        "lora.dropout": "lora.enabled is False"}
    lora_taid = config_from_dict({"student": {"decoder_layers": 2}, "lora": {"enabled": True},
                                  "loss": {"kind": "taid"}}).to_dict()
    kept, left_out = active_space(tune_cfg, lora_taid)
    assert {p.key for p in kept} >= {"lora.rank", "lora.dropout", "loss.taid.t_start"}
    assert list(left_out) == ["loss.temperature"]


@pytest.mark.parametrize("section, message", [
    ({"trails": 3}, "config tune.trails: unknown key; valid keys: trials,"),
    ({"objective": "bleu"}, "config tune.objective: got 'bleu' (str); valid values: wer, dev_ce, dev_loss"),
    ({"space": {"optim.lr": {"type": "float", "low": 0, "high": 1, "log": True}}},
     "config tune.space.optim.lr: log: true needs low > 0 and no step"),
    ({"space": {"train.batch_size": {"type": "categorical"}}},
     "config tune.space.train.batch_size: a categorical parameter needs choices: [..]"),
    ({"space": {"lora.rank": {"type": "int", "low": 2.5, "high": 8}}},
     "config tune.space.lora.rank: an int parameter needs whole low, high and step"),
    ({"space": {"optim.lr": {"type": "float", "low": 1, "high": 2, "typo": 1}}},
     "config tune.space.optim.lr.typo: unknown key"),
    ({"space": {}}, "config tune.space: empty"),
    ({"trials": 0}, "config tune.trials: must be at least 1"),
])
def test_bad_tune_sections_say_what_to_fix(section, message):
    with pytest.raises(UserError, match=re.escape(message)):
        parse_tune(section)


def test_space_keys_and_enqueued_trials_are_checked_against_the_config(tmp_path):
    bad_key = _base(tmp_path, space={"optim.lrr": {"type": "float", "low": 1e-5, "high": 1e-3}})
    with pytest.raises(UserError, match=r"config tune\.space\.optim\.lrr: optim\.lrr is not a config key"):
        load_tune(_write(tmp_path, bad_key), **QUIET)
    bad_enqueue = _base(tmp_path, space={"optim.lr": {"type": "float", "low": 1e-5, "high": 1e-3}},
                        enqueue=[{"optim.lr": 1e-4, "loss.kl_weight": 1.0}])
    with pytest.raises(UserError, match=r"tune\.enqueue\[0\]: loss\.kl_weight is not a searched parameter"):
        load_tune(_write(tmp_path, bad_enqueue), **QUIET)
    with pytest.raises(UserError, match="wer needs eval.wer=true"):
        load_tune(_write(tmp_path, _base(tmp_path)), ["eval.wer=false"], **QUIET)


def test_a_trial_is_the_base_config_plus_its_parameters(tmp_path):
    path = _write(tmp_path, _base(tmp_path, trials=7, space={
        "optim.lr": {"type": "float", "low": 1e-5, "high": 1e-3, "log": True},
        "train.batch_size": {"type": "categorical", "choices": [4, 8]},
        "lora.rank": {"type": "int", "low": 4, "high": 32, "step": 4},
        "loss.temperature": {"type": "float", "low": 1, "high": 5}}))
    setup = load_tune(path, ["train.max_steps=300", "tune.objective=dev_ce", "lora.enabled=true"], study="s1", **QUIET)
    assert (setup.tune.trials, setup.spec.objective, setup.spec.name) == (7, "dev_ce", "s1")
    assert setup.spec.dir == (tmp_path / "study").resolve()
    assert setup.spec.storage == f"sqlite:///{(tmp_path / 'study' / 'study.db').resolve()}"
    trial = optuna.trial.FixedTrial({"optim.lr": 2e-4, "train.batch_size": 8, "lora.rank": 12,
                                     "loss.temperature": 3.5})
    params = {p.key: p.suggest(trial) for p in setup.spec.params}
    cfg = trial_config(setup, params, setup.spec.dir / "trial-0002")
    assert (cfg.optim.lr, cfg.train.batch_size, cfg.lora.rank, cfg.loss.temperature) == (2e-4, 8, 12, 3.5)
    assert (cfg.train.max_steps, cfg.lora.enabled, cfg.train.progress) == (300, True, False)
    assert cfg.output.dir == str(setup.spec.dir / "trial-0002") and cfg.output.overwrite
    assert (cfg.cache.enabled, cfg.cache.on_stale) == (True, "refuse")
    # Full logits serve any temperature: one cache for every trial.
    assert Path(cfg.cache.dir) == setup.spec.dir / "teacher_cache"


def test_values_that_change_the_cache_get_a_cache_each(tmp_path):
    raw = _base(tmp_path, space={"loss.temperature": {"type": "float", "low": 1, "high": 5, "step": 1},
                                 "data.max_label_tokens": {"type": "categorical", "choices": [200, 448]},
                                 "optim.lr": {"type": "float", "low": 1e-5, "high": 1e-3}})
    raw["cache"] = {"logits": "topk", "topk": 16, "dir": str(tmp_path / "shared-cache")}
    setup = load_tune(_write(tmp_path, raw), **QUIET)
    root = (tmp_path / "shared-cache").resolve()
    assert cache_dir_for(setup, {"optim.lr": 1e-4, "loss.temperature": 2.0, "data.max_label_tokens": 448}) == \
        root / "data.max_label_tokens=448-loss.temperature=2"
    assert cache_dir_for(setup, {"optim.lr": 3e-4, "loss.temperature": 2.0, "data.max_label_tokens": 448}) == \
        root / "data.max_label_tokens=448-loss.temperature=2"
    full = load_tune(_write(tmp_path, _base(tmp_path), "full.yaml"), **QUIET)
    assert cache_dir_for(full, {"loss.temperature": 2.7, "optim.lr": 1e-4}) == full.spec.dir / "teacher_cache"


# ---------------------------------------------------------------- the study loop, with a cheap objective

def _quadratic(trial, params, run_dir, report):
    """Stand-in for a run: a huge lr is "destructive" (pruned at step 1), a negative kl_weight "crashes"."""
    run_dir.mkdir(parents=True)
    if params["loss.kl_weight"] < 0:
        raise RuntimeError("CUDA out of memory (pretend)")
    x = math.log10(params["optim.lr"]) + 4
    for step in (1, 2):
        report(step, x * x + 1 / step)
    return x * x


def _cheap_setup(tmp_path, trials, **tune_section):
    section = {"startup_trials": 2, "pruner": {"startup_trials": 1},
               "space": {"optim.lr": {"type": "float", "low": 1e-6, "high": 10, "log": True},
                         "loss.kl_weight": {"type": "float", "low": 0.0, "high": 2.0}}, **tune_section}
    return load_tune(_write(tmp_path, _base(tmp_path, **section)), trials=trials, **QUIET)


def test_study_records_failures_prunes_resumes_and_reports(tmp_path):
    enqueue = [{"optim.lr": 1e-4}, {"optim.lr": 5.0}, {"loss.kl_weight": -1.0}]
    setup = _cheap_setup(tmp_path, 5, enqueue=enqueue)
    with pytest.warns(UserWarning, match="out of range"):
        summary = tune(setup, trial_fn=_quadratic)
    study = optuna.load_study(study_name="study", storage=setup.spec.storage)
    trials = study.get_trials()
    assert [t.state.name for t in trials[:3]] == ["COMPLETE", "PRUNED", "FAIL"]
    assert trials[2].user_attrs["fail_reason"] == "RuntimeError: CUDA out of memory (pretend)"
    assert "Traceback" in (setup.spec.dir / "trial-0002" / "error.txt").read_text()
    # the destructive lr is pruned at its first report
    assert trials[1].intermediate_values == {1: pytest.approx((math.log10(5) + 4) ** 2 + 1)}
    assert len(trials) == 5 and all(t.state.is_finished() for t in trials)
    assert trials[3].params != trials[4].params  # each trial samples with its own seed
    best = json.loads((setup.spec.dir / "best_params.json").read_text())
    assert best == summary["best"] and best["value"] == min(t.value for t in trials if t.state.name == "COMPLETE")
    assert set(best["params"]) == {"optim.lr", "loss.kl_weight"}
    assert best["run_dir"].endswith(f"trial-{best['trial']:04d}")
    rows = json.loads((setup.spec.dir / "report" / "trials.json").read_text())
    assert rows[1]["pruned_at_step"] == 1 and rows[2]["fail_reason"].startswith("RuntimeError")
    report = (setup.spec.dir / "report" / "report.md").read_text()
    assert "| 2 | FAIL |" in report and "pruned at step 1" in report
    for name in ("optimization_history", "parallel_coordinate", "intermediate_values"):
        assert (setup.spec.dir / "report" / f"{name}.png").stat().st_size > 1000, summary["plots"]
    # Resume: the same study asked for 7 adds 2 trials, and the enqueued ones are not queued again.
    tune(_cheap_setup(tmp_path, 7, enqueue=enqueue), trial_fn=_quadratic)
    assert [t.number for t in study.get_trials()] == list(range(7))


def test_importances_need_two_complete_trials(tmp_path):
    setup = _cheap_setup(tmp_path, 2, enqueue=[{"optim.lr": 1e-4}, {"loss.kl_weight": -1.0}])
    with pytest.warns(UserWarning, match="out of range"):
        summary = tune(setup, trial_fn=_quadratic)
    assert summary["counts"] == {"complete": 1, "fail": 1}
    assert summary["plots"]["param_importances"] == "not drawn: needs 2 complete trials (1 so far)"
    assert summary["plots"]["optimization_history"] == "optimization_history.png"
    assert "- param_importances: not drawn" in (setup.spec.dir / "report" / "report.md").read_text()


def test_a_worker_stops_when_every_trial_fails_the_same_way(tmp_path):
    def broken(trial, params, run_dir, report):
        raise UserError("config data.train: /nowhere holds no utterances")

    setup = _cheap_setup(tmp_path, 10)
    with pytest.raises(UserError, match="last 3 trials failed with the same error: config data.train: /nowhere"):
        tune(setup, trial_fn=broken)
    rows = json.loads((setup.spec.dir / "report" / "trials.json").read_text()) if \
        (setup.spec.dir / "report" / "trials.json").exists() else None
    assert rows is None  # stopped before the report; the study holds the 3 failures
    study = optuna.load_study(study_name="study", storage=setup.spec.storage)
    assert [t.state.name for t in study.get_trials()] == ["FAIL"] * 3


def test_a_study_keeps_its_objective_and_its_folder(tmp_path):
    tune(_cheap_setup(tmp_path, 1), trial_fn=_quadratic)
    with pytest.raises(UserError, match="minimises wer, not dev_ce; set tune.objective=wer or start another study"):
        tune(_cheap_setup(tmp_path, 2, objective="dev_ce"), trial_fn=_quadratic)
    with pytest.raises(UserError, match="holds study 'study', not 'other'; give --study study"):
        tune(_cheap_setup(tmp_path, 2, study="other"), trial_fn=_quadratic)


def test_cli_needs_a_config_and_a_storage_it_can_open(tmp_path, capsys):
    assert main(["tune", "--trials", "2"]) == 2
    assert "give a config file first" in capsys.readouterr().err
    path = _write(tmp_path, _base(tmp_path))
    assert main(["tune", str(path), "--trials", "0"]) == 2
    assert "--trials: must be at least 1" in capsys.readouterr().err
    assert main(["tune", str(path), "--storage", "postgresql+psycopg2://nobody@127.0.0.1:1/none", "--trials", "1"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("whisperkd tune: error: tune storage postgresql+psycopg2://nobody@127.0.0.1:1/none: "
                          "cannot open it") and "\n" == err[-1] and err.count("\n") == 1


# ---------------------------------------------------------------- real distillation runs (tiny random teacher)

def test_tune_runs_distillations_over_one_teacher_cache(tiny_setup, tmp_path, monkeypatch):
    """Two short runs of the real trainer; the teacher cache is computed once, before the first trial."""
    import whisperkd.distill.cache.build as cache_mod

    calls = {"teacher_forward": 0}
    original = cache_mod.teacher_forward

    def counting(*args, **kwargs):
        calls["teacher_forward"] += 1
        return original(*args, **kwargs)

    monkeypatch.setattr(cache_mod, "teacher_forward", counting)
    raw = tiny_config(tiny_setup, tmp_path / "study", train={"max_steps": 4, "batch_size": 4, "log_every": 1,
                                                             "progress": False},
                      eval={"every": 2, "wer": False, "at_start": False, "max_utterances": 4, "batch_size": 4})
    raw["tune"] = {"objective": "dev_ce", "startup_trials": 1, "pruner": {"startup_trials": 1},
                   "enqueue": [{"optim.lr": 1e-3}, {"optim.lr": 50.0}],
                   "space": {"optim.lr": {"type": "float", "low": 1e-5, "high": 100, "log": True},
                             "loss.kl_weight": {"type": "float", "low": 0.1, "high": 2.0}}}
    lines = []
    setup = load_tune(_write(tmp_path, raw), trials=2, progress=False, log=lines.append)
    summary = tune(setup)
    study = optuna.load_study(study_name="study", storage=setup.spec.storage)
    trials = study.get_trials()
    assert [t.state.name for t in trials] == ["COMPLETE", "PRUNED"], lines
    history = json.loads((setup.spec.dir / "trial-0000" / "training_history.json").read_text())
    assert trials[0].intermediate_values == {e["step"]: pytest.approx(e["dev_ce"]) for e in history["evals"]}
    assert trials[0].value == pytest.approx(min(e["dev_ce"] for e in history["evals"]))
    assert json.loads((setup.spec.dir / "trial-0001" / "training_history.json").read_text())["evals"][-1]["step"] == 2
    # One cache, computed once: 12 training + 4 dev utterances in batches of 8 (cache.batch_size).
    assert calls["teacher_forward"] == 2 + 1
    assert (setup.spec.dir / "teacher_cache" / "cache.json").is_file()
    best = yaml.safe_load((setup.spec.dir / "best_config.yaml").read_text())
    assert best["optim"]["lr"] == summary["best"]["params"]["optim.lr"]
    assert best["output"]["dir"] == str(setup.spec.dir / "best") and not best["output"]["overwrite"]
    assert best["train"]["progress"] is False  # as in the base config here
