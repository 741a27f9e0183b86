"""``whisperkd tune CONFIG --trials N``: an Optuna study of distillation runs that all read one teacher cache.

A trial is the base config (the file without its ``tune:`` section, plus the command-line overrides) with one
dotted override per searched parameter (:mod:`whisperkd.tuning.space`), trained by the ordinary trainer in its
own run folder ``<study folder>/trial-0003/``. The trainer reports each dev evaluation; the objective (dev WER
by default) goes to the MedianPruner, which may stop the trial there. Every trial reads the teacher cache of
the study (``<study folder>/teacher_cache``), which each worker builds or checks once, under a file lock, before
its first trial; trials open it with ``cache.on_stale=refuse`` so none can rebuild what the others read. Values
that change what the cache holds (``loss.temperature``, ``data.*``, ...) get one cache folder per value.

The study folder (``tune.dir``, default ``output.dir``) holds ``study.db`` (SQLite, unless ``--storage`` names
a shared database), the trial folders, ``best_params.json``, ``best_config.yaml`` and ``report/``
(:mod:`whisperkd.tuning.report`). Workers on other machines run the same command with the same ``--storage``.
"""

from __future__ import annotations

import copy
import gc
import hashlib
import json
import math
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import optuna
import yaml
from filelock import FileLock

from whisperkd.config import Config, apply_override, config_from_dict, read_config_file, with_absolute_paths
from whisperkd.data.atomic import atomic_write_text
from whisperkd.distill import cache as cache_mod
from whisperkd.distill.build import build_models, read_splits
from whisperkd.distill.trainer import train
from whisperkd.errors import UserError
from whisperkd.tuning.report import write_best, write_report
from whisperkd.tuning.space import TuneConfig, active_space, parse_tune
from whisperkd.tuning.study import StudySpec, default_storage, run_study, shown_url

__all__ = ["TuneSetup", "load_tune", "tune", "trial_config", "distill_trial", "run_study", "StudySpec"]

# Parameters that change what the teacher cache holds: each combination of their values gets its own cache.
# loss.temperature joins them when the cache stores top-k log-probabilities (taken at the training temperature),
# the student's aligned layers when it stores only the hidden states this student needs.
CACHE_KEYED = ("teacher.", "data.", "cache.", "student.init", "student.encoder_layers", "student.train_encoder",
               "lora.presets")


@dataclass
class TuneSetup:
    """A study ready to run: what every worker agrees on (``spec``) and the base config of the trials."""

    spec: StudySpec
    tune: TuneConfig
    base: dict  # the distillation config without ``tune:``, command-line overrides applied
    left_out: dict[str, str] = field(default_factory=dict)  # default parameters that do not apply, and why
    cache_root: Path | None = None  # None: trials run the teacher online (tune.cache: false)
    cache_keyed: tuple[str, ...] = CACHE_KEYED
    on_stale: str = "rebuild"  # what the once-per-worker cache check does with a stale cache
    progress: bool = True
    log: Callable[[str], None] = print
    ready_caches: set[Path] = field(default_factory=set)


# ---------------------------------------------------------------- configs

def _set(raw: dict, key: str, value) -> None:
    apply_override(raw, f"{key}={json.dumps(value)}")


def cache_dir_for(setup: TuneSetup, params: dict) -> Path:
    """The trial's teacher cache: the study's, or a folder of it per value of the cache-changing parameters."""
    keyed = {k: v for k, v in sorted(params.items()) if any(k == c or (c.endswith(".") and k.startswith(c))
                                                             for c in setup.cache_keyed)}
    if not keyed:
        return setup.cache_root
    name = "-".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={json.dumps(v)}" for k, v in keyed.items())
    name = re.sub(r"[^A-Za-z0-9._=+-]+", "_", name)
    if len(name) > 120:
        name = "params-" + hashlib.sha1(name.encode()).hexdigest()[:16]
    return setup.cache_root / name


def trial_raw(setup: TuneSetup, params: dict, run_dir: Path) -> dict:
    """The base config with the trial's parameters, its run folder and its teacher cache."""
    raw = copy.deepcopy(setup.base)
    for key, value in params.items():
        _set(raw, key, value)
    _set(raw, "output.dir", str(run_dir))
    if setup.cache_root is not None:
        _set(raw, "cache.enabled", True)
        _set(raw, "cache.dir", str(cache_dir_for(setup, params)))
    else:
        _set(raw, "cache.enabled", False)  # tune.cache: false; not a cache per trial folder either
    return raw


def trial_config(setup: TuneSetup, params: dict, run_dir: Path) -> Config:
    """The Config one trial trains with: quiet, its own folder, and a cache it may read but never rebuild."""
    raw = trial_raw(setup, params, run_dir)
    _set(raw, "output.overwrite", True)  # trial numbers are never reused: a folder there is a dead trial's
    _set(raw, "train.progress", False)
    if setup.cache_root is not None:
        _set(raw, "cache.on_stale", "refuse")
    return config_from_dict(raw)


def best_config_yaml(setup: TuneSetup, trial) -> str:
    """``best_config.yaml``: the best trial's config in full, training into ``<study folder>/best``."""
    cfg = config_from_dict(trial_raw(setup, trial.params, setup.spec.dir / "best"))
    out = with_absolute_paths(cfg).to_dict()
    head = (f"# Best trial {trial.number} of study {setup.spec.name}: {setup.spec.objective} {trial.value:.6g}\n"
            f"# ({trial.user_attrs.get('run_dir')}). Train it (longer if you like):\n"
            f"#   whisperkd distill {setup.spec.dir / 'best_config.yaml'} train.max_steps=...\n")
    return head + yaml.safe_dump(out, sort_keys=False)


def load_tune(config_path: str | Path, overrides: list[str] | tuple[str, ...] = (), trials: int | None = None,
              storage: str | None = None, study: str | None = None, progress: bool = True,
              log: Callable[[str], None] = print) -> TuneSetup:
    """Read CONFIG (its ``tune:`` section apart), apply overrides (``tune.*`` ones to that section) and the
    command-line options, check the space against the base config; nothing runs yet."""
    raw = read_config_file(config_path)
    holder = {"tune": raw.pop("tune", None) or {}}
    for assignment in overrides:
        apply_override(holder if assignment.strip().startswith("tune.") else raw, assignment)
    if not isinstance(holder["tune"], dict):
        raise UserError("config tune: expected a mapping of keys (trials, objective, space, ...)")
    for key, value in (("trials", trials), ("storage", storage), ("study", study)):
        if value is not None:
            holder["tune"][key] = value
    tune_cfg = parse_tune(holder["tune"])
    base_cfg = config_from_dict(raw)
    params, left_out = active_space(tune_cfg, base_cfg.to_dict())
    if tune_cfg.objective == "wer" and not base_cfg.eval.wer:
        raise UserError("config tune.objective: wer needs eval.wer=true (or minimise tune.objective=dev_ce)")
    if base_cfg.data.dev is None and base_cfg.data.dev_fraction == 0:
        raise UserError("config data.dev: tuning needs dev evaluations; give data.dev or data.dev_fraction > 0")
    study_dir = Path(tune_cfg.dir or base_cfg.output.dir).expanduser().resolve()
    name = tune_cfg.study or study_dir.name
    spec = StudySpec(name=name, storage=tune_cfg.storage or default_storage(study_dir), dir=study_dir, params=params,
                     objective=tune_cfg.objective, seed=tune_cfg.seed, startup_trials=tune_cfg.startup_trials,
                     pruner=tune_cfg.pruner, enqueue=tune_cfg.enqueue)
    setup = TuneSetup(spec=spec, tune=tune_cfg, base=raw, left_out=left_out, progress=progress, log=log)
    if tune_cfg.cache:
        section = base_cfg.cache
        setup.cache_root = Path(section.dir).expanduser().resolve() if section.dir else study_dir / "teacher_cache"
        setup.on_stale = section.on_stale
        keyed = CACHE_KEYED
        if section.k > 0:  # top-k log-probs, taken at the training temperature
            keyed += ("loss.temperature",)
        if section.hidden_layers == "needed":  # the layers this student aligns
            keyed += ("student.decoder_layers", "loss.align_layers", "loss.align_weight")
        setup.cache_keyed = keyed
    return setup


# ---------------------------------------------------------------- one trial

def ensure_shared_cache(setup: TuneSetup, cfg: Config) -> None:
    """Build, finish or check the trial's teacher cache once per worker, under a lock other workers respect."""
    folder = cache_mod.cache_dir_of(cfg)
    if folder in setup.ready_caches:
        return
    folder.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(folder) + ".lock"):
        report = cache_mod.ensure_cache(cfg, build_models(cfg), cache_mod.run_splits(*read_splits(cfg)),
                                        on_stale=setup.on_stale, progress=setup.progress)
    if sum(report.computed.values()):
        setup.log(report.summary())
    setup.ready_caches.add(folder)


def trial_value(evals: list[dict], objective: str, keep_best: bool) -> float:
    """The trial's result: the best dev value after training started (the student keep_best keeps), or the
    last one (keep_best false). Non-finite values are stored as null in the history."""
    if not evals:
        raise UserError("no dev evaluation ran; give data.dev or data.dev_fraction > 0, and eval.every")
    trained = [e for e in evals if e["step"] > 0] or evals
    values = [e.get(objective) for e in trained]
    if keep_best:
        finite = [v for v in values if v is not None and math.isfinite(v)]
        return min(finite) if finite else math.nan
    return math.nan if values[-1] is None else float(values[-1])


def distill_trial(setup: TuneSetup):
    """The objective of ``whisperkd tune``: one distillation run per trial (see :data:`study.TrialFn`)."""
    objective = setup.spec.objective

    def run(trial, params: dict, run_dir: Path, report) -> float:
        cfg = trial_config(setup, params, run_dir)
        if setup.cache_root is not None:
            ensure_shared_cache(setup, cfg)

        def on_eval(step: int, metrics: dict) -> None:
            value = metrics.get(objective)
            report(step, math.nan if value is None else float(value))

        try:
            result = train(cfg, on_eval=on_eval)  # on_eval raising optuna.TrialPruned stops the run
        finally:
            gc.collect()  # free this trial's models (and their cycles) before the next one loads
        return trial_value(result.history.get("evals", []), objective, cfg.eval.keep_best)
    return run


# ---------------------------------------------------------------- the study

def _describe(value) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _check_study_folder(setup: TuneSetup) -> None:
    """One folder, one study: trial folders are named by number only."""
    marker = setup.spec.dir / "study.json"
    if marker.is_file():
        recorded = json.loads(marker.read_text(encoding="utf-8")).get("study")
        if recorded != setup.spec.name:
            raise UserError(f"{setup.spec.dir}: holds study {recorded!r}, not {setup.spec.name!r}; give "
                            f"--study {recorded} to continue it, or another folder (tune.dir=...)")
        return
    setup.spec.dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(marker, json.dumps({"study": setup.spec.name, "storage": shown_url(setup.spec.storage),
                                          "objective": setup.spec.objective}, indent=1) + "\n")


def tune(setup: TuneSetup, trial_fn=None) -> dict:
    """Run this worker's share of the study, then write best_params.json, best_config.yaml and report/.

    ``trial_fn`` replaces the distillation (tests and benchmarks); returns the report summary.
    """
    spec, log = setup.spec, setup.log
    _check_study_folder(setup)
    searched = ", ".join(p.key for p in spec.params)
    log(f"study {spec.name} ({shown_url(spec.storage)}): {setup.tune.trials} trials minimising dev "
        f"{spec.objective.removeprefix('dev_')}; searching {searched}")
    if setup.left_out:
        log("left out: " + "; ".join(f"{k} ({why})" for k, why in setup.left_out.items()))
    continuous = [p.key for p in spec.params if p.type == "float" and p.step is None and p.key in setup.cache_keyed]
    if continuous and setup.cache_root is not None:
        log(f"note: {', '.join(continuous)} change(s) the teacher cache and vary continuously: nearly every trial "
            "builds its own cache; give a step or choices (or cache.logits=full for the temperature)")
    best_config = (lambda trial: best_config_yaml(setup, trial)) if trial_fn is None else None

    def announce(study: optuna.Study, trial) -> None:
        value = "" if trial.value is None else f" {spec.objective} {trial.value:.4g}"
        params = " ".join(f"{k}={_describe(v)}" for k, v in trial.params.items())
        note = trial.user_attrs.get("fail_reason") or ""
        if trial.state.name == "PRUNED" and trial.intermediate_values:
            note = f"at step {max(trial.intermediate_values)}"
        log(f"trial {trial.number} {trial.state.name}{value}{': ' + note if note else ''} [{params}]")
        write_best(study, spec.dir, spec.objective, best_config)
        _free_accelerator_memory()

    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.ERROR)  # our own line per trial instead of Optuna's tracebacks
    try:
        study = run_study(spec, trial_fn or distill_trial(setup), setup.tune.trials, callbacks=[announce])
    finally:
        optuna.logging.set_verbosity(verbosity)
    summary = write_report(study, spec.dir, spec.objective, best_config)
    best = summary["best"]
    counted = ", ".join(f"{n} {state}" for state, n in sorted(summary["counts"].items()))
    if best:
        log(f"best: trial {best['trial']}, {spec.objective} {best['value']:.4g} ({counted}); "
            f"{spec.dir / 'best_params.json'}, {spec.dir / 'best_config.yaml'}, {spec.dir / 'report'}/")
    else:
        log(f"no trial completed ({counted}); the reasons are in {spec.dir / 'report' / 'trials.json'}")
    return summary


def _free_accelerator_memory() -> None:
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        torch.cuda.empty_cache()
