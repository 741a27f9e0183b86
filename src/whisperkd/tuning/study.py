"""One Optuna study run by any number of workers (processes, machines) that share its storage.

Every worker runs the same loop: take the study's trial lock, count the trials that are finished or running,
stop if they reach the budget, else create the next trial, release the lock and run it. Counting running trials
under a lock is what makes two workers run N trials in all, never N + 1 (Optuna's MaxTrialsCallback counts after
a trial ends, so each extra worker can add one). The lock is a file beside a SQLite database, an advisory lock
in PostgreSQL (GET_LOCK in MySQL). A worker that dies leaves a RUNNING trial; the storage heartbeat marks it
failed after ``GRACE_SECONDS`` (it counts as finished: the study does not wait for it).

Trial ``n`` samples with seed ``seed + n`` (TPE, multivariate): a study is reproducible on one worker, and
workers that start together do not propose the same parameters.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import random
import time
import traceback
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import optuna
from filelock import FileLock
from optuna.trial import TrialState
from sqlalchemy import text as sql_text
from sqlalchemy.engine import make_url

from whisperkd.errors import UserError
from whisperkd.tuning.space import Param, PrunerConfig

TAKEN = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL, TrialState.RUNNING)
HEARTBEAT_SECONDS = 60
GRACE_SECONDS = 600
SAME_FAILURES_TO_STOP = 3  # a worker stops when its last trials all failed with this same UserError

# trial_fn(trial, params, run_dir, report) -> objective value; report(step, value) may raise optuna.TrialPruned
TrialFn = Callable[[optuna.Trial, dict, Path, Callable[[int, float], None]], float]


@dataclass
class StudySpec:
    """What every worker of a study must agree on (the search itself; the folder is this worker's)."""

    name: str
    storage: str  # an SQLAlchemy URL (sqlite:///..., postgresql://user@host/db)
    dir: Path  # this worker's study folder: trial-NNNN/ run folders, report
    params: list[Param]
    objective: str = "wer"
    seed: int = 0
    startup_trials: int = 10
    pruner: PrunerConfig = field(default_factory=PrunerConfig)
    enqueue: list[dict] = field(default_factory=list)


def default_storage(study_dir: str | Path) -> str:
    return f"sqlite:///{Path(study_dir).resolve() / 'study.db'}"


def shown_url(url: str) -> str:
    """The storage URL without its password."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return url.split("@")[-1]


def make_storage(url: str, attempts: int = 5) -> optuna.storages.RDBStorage:
    """An RDB storage with a heartbeat (a dead worker's trial becomes FAIL); UserError when it cannot be opened.

    Workers that start together race to create the tables: the losers try again (SQLite ones wait on a file lock).
    """
    engine_kwargs = {"connect_args": {"timeout": 120}} if url.startswith("sqlite") else {"pool_pre_ping": True}
    lock = contextlib.nullcontext()
    if url.startswith("sqlite:///"):
        database = Path(url.removeprefix("sqlite:///"))
        database.parent.mkdir(parents=True, exist_ok=True)
        lock = FileLock(str(database) + ".lock")
    for attempt in range(attempts):
        try:
            with lock, warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                return optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs,
                                                  heartbeat_interval=HEARTBEAT_SECONDS, grace_period=GRACE_SECONDS)
        except Exception as err:  # driver missing, server down, bad URL, or another worker creating the tables
            if attempt + 1 < attempts and not isinstance(err, (ImportError, ValueError)):
                time.sleep(0.5 + random.random())
                continue
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise UserError(f"tune storage {shown_url(url)}: cannot open it ({first})") from None


def make_sampler(spec: StudySpec, seed: int) -> optuna.samplers.TPESampler:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.samplers.TPESampler(multivariate=True, seed=seed, n_startup_trials=spec.startup_trials)


def make_pruner(config: PrunerConfig) -> optuna.pruners.BasePruner:
    if config.kind == "none":
        return optuna.pruners.NopPruner()
    return optuna.pruners.MedianPruner(n_startup_trials=config.startup_trials, n_warmup_steps=config.warmup_steps)


class TrialLock:
    """Makes "count the study's trials, then create one" atomic across every worker of the study."""

    def __init__(self, storage: optuna.storages.RDBStorage, study_name: str):
        url = make_url(storage.url)
        self.engine, self.dialect = storage.engine, url.get_backend_name()
        self.name = f"whisperkd-tune:{study_name}"
        self.key = int.from_bytes(hashlib.sha1(self.name.encode()).digest()[:8], "big", signed=True)
        self.file = None
        if self.dialect == "sqlite" and url.database and url.database != ":memory:":
            self.file = FileLock(url.database + ".lock")
        self.conn = None

    def acquire(self) -> None:
        if self.file is not None:
            self.file.acquire()
        elif self.dialect in ("postgresql", "mysql", "mariadb"):
            self.conn = self.engine.connect()
            query = "SELECT pg_advisory_lock(:k)" if self.dialect == "postgresql" else "SELECT GET_LOCK(:n, -1)"
            self.conn.execute(sql_text(query), {"k": self.key, "n": self.name})

    def release(self) -> None:
        """Idempotent: the trial releases it as soon as it exists, the loop once more in any case."""
        if self.file is not None and self.file.is_locked:
            self.file.release()
        if self.conn is not None:
            conn, self.conn = self.conn, None
            query = "SELECT pg_advisory_unlock(:k)" if self.dialect == "postgresql" else "SELECT RELEASE_LOCK(:n)"
            try:
                conn.execute(sql_text(query), {"k": self.key, "n": self.name})
                conn.rollback()
            finally:
                conn.close()

    def __enter__(self) -> TrialLock:
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def open_study(spec: StudySpec) -> tuple[optuna.Study, optuna.storages.RDBStorage]:
    """Create the study or load it (a study resumes; every worker runs this); refuse another objective."""
    storage = make_storage(spec.storage)
    study = optuna.create_study(storage=storage, study_name=spec.name, direction="minimize", load_if_exists=True,
                                sampler=make_sampler(spec, spec.seed), pruner=make_pruner(spec.pruner))
    recorded = study.user_attrs.get("objective")
    if recorded is None:
        study.set_user_attr("objective", spec.objective)
    elif recorded != spec.objective:
        raise UserError(f"study {spec.name!r} in {shown_url(spec.storage)} minimises {recorded}, not "
                        f"{spec.objective}; set tune.objective={recorded} or start another study (--study NAME)")
    return study, storage


def fail_reason(err: BaseException) -> str:
    if isinstance(err, KeyboardInterrupt):
        return "interrupted"
    text = " ".join(str(err).split())
    return f"{type(err).__name__}: {text}" if text else type(err).__name__


def _objective(spec: StudySpec, trial_fn: TrialFn, lock: TrialLock):
    def objective(trial: optuna.Trial) -> float:
        lock.release()  # the trial exists (RUNNING): other workers may count it and go on
        run_dir = spec.dir / f"trial-{trial.number:04d}"
        trial.set_user_attr("run_dir", str(run_dir))

        def report(step: int, value: float) -> None:
            if not math.isfinite(value):
                raise RuntimeError(f"{spec.objective} is {value} at step {step}")
            trial.report(float(value), step)
            if trial.should_prune():
                raise optuna.TrialPruned(f"pruned at step {step}: {spec.objective} {value:.4g}")

        try:
            params = {p.key: p.suggest(trial) for p in spec.params}
            value = float(trial_fn(trial, params, run_dir, report))
            if not math.isfinite(value):
                raise RuntimeError(f"the objective ({spec.objective}) is {value}")
            return value
        except optuna.TrialPruned:
            raise
        except BaseException as err:
            trial.set_user_attr("fail_reason", fail_reason(err))
            if not isinstance(err, (UserError, KeyboardInterrupt)):
                run_dir.mkdir(parents=True, exist_ok=True)
                (run_dir / "error.txt").write_text(traceback.format_exc(), encoding="utf-8")
            raise
    return objective


def _same_failures(frozen: list[optuna.trial.FrozenTrial]) -> str | None:
    """The UserError message shared by the last trials of this worker, when they all failed with it."""
    last = frozen[-SAME_FAILURES_TO_STOP:]
    reasons = {t.user_attrs.get("fail_reason") for t in last}
    if len(last) == SAME_FAILURES_TO_STOP and all(t.state == TrialState.FAIL for t in last) and len(reasons) == 1:
        reason = reasons.pop()
        if reason and reason.startswith("UserError: "):
            return reason.removeprefix("UserError: ")
    return None


def run_study(spec: StudySpec, trial_fn: TrialFn, trials: int,
              callbacks: list[Callable[[optuna.Study, optuna.trial.FrozenTrial], None]] = ()) -> optuna.Study:
    """Run trials until the study holds ``trials`` finished or running ones (over every worker and session).

    A trial that raises is recorded as FAIL with ``user_attrs["fail_reason"]`` (and ``error.txt`` with the
    traceback in its folder, unless it was a UserError) and the study goes on; but a worker whose last
    ``SAME_FAILURES_TO_STOP`` trials failed with one and the same UserError stops with it (a broken config).
    """
    study, storage = open_study(spec)
    lock = TrialLock(storage, spec.name)
    with lock:
        for params in spec.enqueue:
            study.enqueue_trial(params, skip_if_exists=True)
    mine: list[optuna.trial.FrozenTrial] = []
    callbacks = [*callbacks, lambda _study, frozen: mine.append(frozen)]
    objective = _objective(spec, trial_fn, lock)
    while True:
        lock.acquire()
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                optuna.storages.fail_stale_trials(study)
            existing = study.get_trials(deepcopy=False)
            if sum(t.state in TAKEN for t in existing) >= trials:
                break
            waiting = [t.number for t in existing if t.state == TrialState.WAITING]
            next_number = min(waiting) if waiting else len(existing)  # ask() takes the first enqueued trial
            study.sampler = make_sampler(spec, spec.seed + next_number)
            study.optimize(objective, n_trials=1, catch=(Exception,), callbacks=callbacks)
        finally:
            lock.release()
        repeated = _same_failures(mine)
        if repeated is not None:
            raise UserError(f"stopped: the last {SAME_FAILURES_TO_STOP} trials failed with the same error: {repeated}")
    return study

