"""The ``tune:`` section of a distillation config: the study settings and the search space.

    tune:
      trials: 20                  # finished trials (complete + pruned + failed) the study should hold
      objective: wer              # wer | dev_ce | dev_loss (lower is better)
      pruner: {kind: median, startup_trials: 5, warmup_steps: 0}
      space:                      # replaces the default space below when given
        loss.kl_weight: {type: float, low: 1.0e-3, high: 10, log: true}
        train.batch_size: {type: categorical, choices: [4, 8, 16, 32]}
        lora.rank: {type: int, low: 4, high: 64, log: true, when: {lora.enabled: true}}

Each parameter is named by the dotted config key it sets, so a trial is the base config plus one override
per parameter. ``when`` keeps a parameter only if the base config has those values (a LoRA rank means
nothing when LoRA is off); the command says which parameters it left out and why.
"""

from __future__ import annotations

import copy
from dataclasses import field
from typing import Any, Literal

from pydantic import StrictBool, StrictFloat, StrictInt, StrictStr
from pydantic.dataclasses import dataclass

from whisperkd.config_schema import SCHEMA, Section, validate
from whisperkd.errors import UserError

# The default space (docs/tuning.md). Parameters whose ``when`` the base config does not meet are left out.
DEFAULT_SPACE: dict[str, dict] = {
    "loss.kl_weight": {"type": "float", "low": 1e-3, "high": 10.0, "log": True},
    "loss.align_weight": {"type": "float", "low": 1e-3, "high": 10.0, "log": True},
    "loss.temperature": {"type": "float", "low": 1.0, "high": 5.0, "when": {"loss.kind": "kl"}},
    "loss.taid.t_start": {"type": "float", "low": 0.0, "high": 0.8, "when": {"loss.kind": "taid"}},
    "optim.lr": {"type": "float", "low": 1e-5, "high": 1e-3, "log": True},
    "train.batch_size": {"type": "categorical", "choices": [4, 8, 16, 32]},
    "lora.rank": {"type": "int", "low": 4, "high": 64, "log": True, "when": {"lora.enabled": True}},
    "lora.dropout": {"type": "float", "low": 0.0, "high": 0.5, "when": {"lora.enabled": True}},
}


@dataclass(config=SCHEMA)
class Param:
    """One searched value: ``key`` is the dotted config key it sets (and its name in the Optuna study)."""

    type: Literal["float", "int", "categorical"] = "float"
    low: StrictFloat | None = None
    high: StrictFloat | None = None
    log: StrictBool = False
    step: StrictFloat | None = None  # float/int: the grid spacing (no step: continuous float, int step 1)
    choices: list[StrictBool | StrictInt | StrictFloat | StrictStr | None] | None = None
    when: dict[str, Any] = field(default_factory=dict)  # {config key: value or [values]} the base config must have
    key: StrictStr = ""

    def check(self) -> None:
        where = f"config tune.space.{self.key}"
        if self.type == "categorical":
            if not self.choices:
                raise UserError(f"{where}: a categorical parameter needs choices: [..]")
            if self.low is not None or self.high is not None or self.step is not None or self.log:
                raise UserError(f"{where}: a categorical parameter takes choices only (no low/high/step/log)")
            return
        if self.choices is not None:
            raise UserError(f"{where}: choices are for type: categorical; {self.type} takes low and high")
        if self.low is None or self.high is None or not self.low < self.high:
            raise UserError(f"{where}: give low < high")
        if self.log and (self.low <= 0 or self.step is not None):
            raise UserError(f"{where}: log: true needs low > 0 and no step")
        if self.step is not None and self.step <= 0:
            raise UserError(f"{where}: step must be positive")
        if self.type == "int" and any(v is not None and v != int(v) for v in (self.low, self.high, self.step)):
            raise UserError(f"{where}: an int parameter needs whole low, high and step")

    def suggest(self, trial):
        """This parameter's value for ``trial`` (an optuna Trial or FixedTrial)."""
        if self.type == "categorical":
            return trial.suggest_categorical(self.key, self.choices)
        if self.type == "int":
            return trial.suggest_int(self.key, int(self.low), int(self.high), step=int(self.step or 1), log=self.log)
        return trial.suggest_float(self.key, self.low, self.high, step=self.step, log=self.log)

    def applies(self, config: dict) -> str | None:
        """None when the parameter applies to ``config`` (a nested dict), else why it does not."""
        for key, wanted in self.when.items():
            value = lookup(config, key, f"tune.space.{self.key}.when")
            allowed = wanted if isinstance(wanted, list) else [wanted]
            if value not in allowed:
                return f"{key} is {value!r}"
        return None


@dataclass(config=SCHEMA)
class PrunerConfig:
    """Optuna's MedianPruner on the objective measured at each dev evaluation (or none)."""

    kind: Literal["median", "none"] = "median"
    startup_trials: StrictInt = 5  # trials that must finish before any is pruned
    warmup_steps: StrictInt = 0  # optimizer steps a trial runs before it can be pruned


@dataclass(config=SCHEMA)
class TuneConfig:
    trials: StrictInt = 20  # finished trials the study should hold, counted over every worker and session
    objective: Literal["wer", "dev_ce", "dev_loss"] = "wer"  # minimised; dev_ce: the student's dev cross-entropy
    study: StrictStr | None = None  # null: the study folder's name
    storage: StrictStr | None = None  # null: sqlite:///<study folder>/study.db; postgresql://... for several machines
    dir: StrictStr | None = None  # the study folder; null: output.dir
    seed: StrictInt = 0  # sampler seed (trial n samples with seed + n, so workers never repeat each other)
    startup_trials: StrictInt = 10  # random trials before TPE models the space
    cache: StrictBool = True  # every trial reads one teacher cache (built once); false: each trial runs the teacher
    pruner: Section[PrunerConfig] = field(default_factory=PrunerConfig)
    enqueue: list[dict] = field(default_factory=list)  # trials to run first: [{config key: value}, ...]
    space: dict[str, Param] = field(default_factory=dict)

    def check(self) -> None:
        if self.trials < 1:
            raise UserError("config tune.trials: must be at least 1")
        if self.startup_trials < 0 or self.pruner.startup_trials < 0 or self.pruner.warmup_steps < 0:
            raise UserError("config tune.startup_trials, tune.pruner.startup_trials, tune.pruner.warmup_steps: "
                            "must be 0 or positive")
        if not self.space:
            raise UserError("config tune.space: empty; give at least one parameter (or leave it out for the defaults)")


def lookup(config: dict, key: str, where: str):
    """The value at dotted ``key`` in a nested dict; UserError naming ``where`` when there is none."""
    node = config
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            raise UserError(f"config {where}: {key} is not a config key")
        node = node[part]
    return node


def parse_param(key: str, raw) -> Param:
    where = f"tune.space.{key}"
    if not isinstance(raw, dict):
        raise UserError(f"config {where}: expected a mapping such as {{type: float, low: 0.1, high: 1}}")
    raw = dict(raw)
    when = raw.pop("when", None) or {}
    if not isinstance(when, dict):
        raise UserError(f"config {where}.when: expected a mapping {{config key: value}}")
    if "key" in raw:
        raise UserError(f"config {where}.key: unknown key; the parameter's key is its name in tune.space")
    param = validate(Param, raw, where)
    param.when, param.key = when, key
    param.check()
    return param


def parse_tune(raw: dict | None) -> TuneConfig:
    """The ``tune:`` mapping as a checked :class:`TuneConfig` (the default space when it has no ``space``)."""
    raw = copy.deepcopy(raw) if raw else {}
    if not isinstance(raw, dict):
        raise UserError("config tune: expected a mapping of keys (trials, objective, space, ...)")
    space = raw.pop("space", None)
    enqueue = raw.pop("enqueue", None) or []
    if space is not None and not isinstance(space, dict):
        raise UserError("config tune.space: expected a mapping {config key: {type: .., low: .., high: ..}}")
    if not isinstance(enqueue, list) or not all(isinstance(e, dict) for e in enqueue):
        raise UserError("config tune.enqueue: expected a list of mappings [{config key: value}, ...]")
    tune = validate(TuneConfig, raw, "tune")
    tune.space = {key: parse_param(key, value) for key, value in (DEFAULT_SPACE if space is None else space).items()}
    tune.enqueue = enqueue
    tune.check()
    return tune


def active_space(tune: TuneConfig, config: dict) -> tuple[list[Param], dict[str, str]]:
    """The parameters that apply to the base ``config`` (a nested dict) and, for the others, why not."""
    kept, left_out = [], {}
    for key, param in tune.space.items():
        lookup(config, key, f"tune.space.{key}")
        why = param.applies(config)
        if why is None:
            kept.append(param)
        else:
            left_out[key] = why
    if not kept:
        raise UserError("config tune.space: no parameter applies to this config (" +
                        "; ".join(f"{k}: {w}" for k, w in left_out.items()) + ")")
    for i, entry in enumerate(tune.enqueue):
        unknown = [k for k in entry if k not in {p.key for p in kept}]
        if unknown:
            raise UserError(f"config tune.enqueue[{i}]: {unknown[0]} is not a searched parameter; "
                            f"searched: {', '.join(p.key for p in kept)}")
    return kept, left_out
