"""Several workers, one study: two processes run N trials in all (no trial lost, none run twice), then resume.

The workers run the real ``whisperkd.tuning.tune.tune`` loop (storage, trial lock, counting, pruning, report) with a
cheap objective in place of distillation; once against the default SQLite storage in the study folder and
once against a real PostgreSQL server (tests/postgres.py).
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import yaml

TESTS = Path(__file__).resolve().parent
SRC = TESTS.parent / "src"


def _first_trial_barrier() -> None:
    """In worker processes: the first trial of each worker waits until every worker has begun one, so that
    all of them run trials however unevenly the machine schedules them."""
    folder = os.environ.get("TUNE_TEST_BARRIER")
    if not folder or os.environ.get("TUNE_TEST_BARRIER_PASSED"):
        return
    os.environ["TUNE_TEST_BARRIER_PASSED"] = "1"
    (Path(folder) / f"began-{os.getpid()}").touch()
    deadline = time.monotonic() + 120
    while len(list(Path(folder).glob("began-*"))) < int(os.environ["TUNE_TEST_WORKERS"]):
        if time.monotonic() > deadline:
            raise TimeoutError("the other workers never began a trial")
        time.sleep(0.05)


def cheap_objective(trial, params: dict, run_dir: Path, report) -> float:
    """A pure-Python stand-in for a distillation run: marks its folder (exclusively), reports two steps."""
    run_dir.mkdir(parents=True)  # fails if a trial number were ever handed out twice
    (run_dir / f"worker-{os.getpid()}").touch()
    _first_trial_barrier()
    x = math.log10(params["optim.lr"]) + 4
    for step in (1, 2):
        time.sleep(0.1)
        report(step, x * x + params["loss.kl_weight"] / step)
    return x * x + params["loss.kl_weight"] / 2


def worker(config: str, storage: str, trials: str, ready: str, go: str) -> None:
    """One worker process: load the study, say it is ready, wait for the others, run its share."""
    from whisperkd.tuning.tune import load_tune, tune

    setup = load_tune(config, storage=storage or None, trials=int(trials), progress=False)
    Path(ready).touch()
    deadline = time.monotonic() + 120
    while not Path(go).exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    tune(setup, trial_fn=cheap_objective)


def _config(tmp_path: Path) -> Path:
    raw = {
        "teacher": {"model": "tiny.en", "device": "cpu"},
        "student": {"decoder_layers": 2},
        "data": {"train": str(tmp_path / "train.jsonl"), "dev_fraction": 0.2},
        "output": {"dir": str(tmp_path / "study")},
        "tune": {"seed": 3, "startup_trials": 3, "pruner": {"startup_trials": 2},
                 "space": {"optim.lr": {"type": "float", "low": 1e-6, "high": 1e-2, "log": True},
                           "loss.kl_weight": {"type": "float", "low": 0.0, "high": 2.0}}},
    }
    path = tmp_path / "tune.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def _start(tmp_path: Path, config: Path, storage: str, trials: int, name: str, workers: int):
    barrier = tmp_path / "barrier"
    barrier.mkdir(exist_ok=True)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS), str(SRC), os.environ.get("PYTHONPATH", "")]),
           "TUNE_TEST_BARRIER": str(barrier), "TUNE_TEST_WORKERS": str(workers)}
    code = "import sys; from test_tune_workers import worker; worker(*sys.argv[1:])"
    ready = tmp_path / f"ready-{name}"
    return ready, subprocess.Popen([sys.executable, "-c", code, str(config), storage, str(trials), str(ready),
                                    str(tmp_path / "go")], env=env, stdout=subprocess.PIPE,
                                   stderr=subprocess.STDOUT, text=True)


def _run_workers(tmp_path: Path, config: Path, storage: str, trials: int, names: list[str]) -> list[str]:
    started = [_start(tmp_path, config, storage, trials, name, len(names)) for name in names]
    deadline = time.monotonic() + 120
    while not all(ready.exists() for ready, _ in started) and time.monotonic() < deadline:
        time.sleep(0.05)
        assert all(p.poll() is None for _, p in started), [p.communicate()[0] for _, p in started]
    (tmp_path / "go").touch()
    outputs = []
    for _, process in started:
        out, _ = process.communicate(timeout=300)
        assert process.returncode == 0, out
        outputs.append(out)
    (tmp_path / "go").unlink()
    return outputs


def _check_study(storage: str, study_dir: Path, n: int) -> list[str]:
    import optuna

    study = optuna.load_study(study_name="study", storage=storage)
    trials = study.get_trials(deepcopy=False)
    assert [t.number for t in trials] == list(range(n))
    assert all(t.state.is_finished() for t in trials), [t.state for t in trials]
    markers = sorted(p.name for p in study_dir.glob("trial-*/worker-*"))
    folders = sorted(p.name for p in study_dir.glob("trial-*"))
    assert folders == [f"trial-{i:04d}" for i in range(n)]
    assert len(markers) == n  # each trial ran exactly once
    best = json.loads((study_dir / "best_params.json").read_text())
    assert best["trials"] == {state.name.lower(): sum(t.state == state for t in trials)
                              for state in {t.state for t in trials}}
    assert best["value"] == min(t.value for t in trials if t.state.name == "COMPLETE")
    return markers


def _two_workers_then_resume(tmp_path: Path, storage: str) -> None:
    from whisperkd.tuning.tune import load_tune, tune

    config = _config(tmp_path)
    study_dir = tmp_path / "study"
    url = storage or f"sqlite:///{study_dir / 'study.db'}"
    _run_workers(tmp_path, config, storage, 6, ["a", "b"])
    markers = _check_study(url, study_dir, 6)
    assert len({m.split("-")[1] for m in markers}) == 2  # both workers ran trials
    assert (study_dir / "report" / "optimization_history.png").is_file()
    # Resume (here, in this process): a study of 6 asked for 8 adds exactly 2 trials; asked again, none.
    for _ in range(2):
        tune(load_tune(config, storage=storage or None, trials=8, log=lambda line: None), trial_fn=cheap_objective)
        _check_study(url, study_dir, 8)


def test_two_workers_share_a_sqlite_study(tmp_path):
    _two_workers_then_resume(tmp_path, "")


def test_two_workers_share_a_postgresql_study(tmp_path, postgres_url):
    _two_workers_then_resume(tmp_path, postgres_url)
