"""What a study leaves in its folder:

    best_params.json     the best complete trial: value, parameters (dotted config keys), run folder
    best_config.yaml     the base config with the best parameters: ``whisperkd distill best_config.yaml``
    report/trials.json   every trial: state, value, parameters, duration, why it failed or where it was pruned
    report/report.md     the same as a table, and the plots:
    report/optimization_history.png, param_importances.png, parallel_coordinate.png, intermediate_values.png

Plots come from ``optuna.visualization.matplotlib`` on the Agg backend; one that cannot be drawn yet
(parameter importances need two complete trials with different values) is named in report.md with the reason.
"""

from __future__ import annotations

import json
import math
import warnings
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import matplotlib
import matplotlib.pyplot as plt
import optuna
from optuna.trial import FrozenTrial, TrialState
from optuna.visualization import matplotlib as optuna_plots

from whisperkd.data.atomic import atomic_write_text

PLOTS = {
    "optimization_history": "plot_optimization_history",
    "param_importances": "plot_param_importances",
    "parallel_coordinate": "plot_parallel_coordinate",
    "intermediate_values": "plot_intermediate_values",
}


def _number(value):
    return value if value is None or math.isfinite(value) else None


def trial_rows(study: optuna.Study) -> list[dict]:
    rows = []
    for t in study.get_trials(deepcopy=False):
        seconds = (t.datetime_complete - t.datetime_start).total_seconds() if t.datetime_complete and \
            t.datetime_start else None
        row = {"number": t.number, "state": t.state.name, "value": _number(t.value), "params": t.params,
               "seconds": None if seconds is None else round(seconds, 1), "run_dir": t.user_attrs.get("run_dir")}
        if t.state == TrialState.PRUNED and t.intermediate_values:
            row["pruned_at_step"] = max(t.intermediate_values)
        if t.user_attrs.get("fail_reason"):
            row["fail_reason"] = t.user_attrs["fail_reason"]
        rows.append(row)
    return rows


def counts(study: optuna.Study) -> dict[str, int]:
    return dict(Counter(t.state.name.lower() for t in study.get_trials(deepcopy=False)))


def best_trial(study: optuna.Study) -> FrozenTrial | None:
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    return min(complete, key=lambda t: (t.value, t.number)) if complete else None


def write_best(study: optuna.Study, study_dir: Path, objective: str,
               best_config: Callable[[FrozenTrial], str] | None = None) -> dict | None:
    """best_params.json (and best_config.yaml from ``best_config(trial) -> YAML text``); None without a
    complete trial."""
    best = best_trial(study)
    if best is None:
        return None
    info = {"study": study.study_name, "objective": objective, "value": best.value, "trial": best.number,
            "params": best.params, "run_dir": best.user_attrs.get("run_dir"), "trials": counts(study)}
    atomic_write_text(study_dir / "best_params.json", json.dumps(info, indent=2) + "\n")
    if best_config is not None:
        atomic_write_text(study_dir / "best_config.yaml", best_config(best))
    return info


def write_plots(study: optuna.Study, report_dir: Path) -> dict[str, str]:
    """The plots, as {name: file name, or why it was not drawn}."""
    matplotlib.use("Agg")
    drawn = {}
    complete = len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))
    for name, function in PLOTS.items():
        needed = 2 if name == "param_importances" else 1
        if complete < needed:
            drawn[name] = f"not drawn: needs {needed} complete trial{'s' * (needed > 1)} ({complete} so far)"
            continue
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                axes = getattr(optuna_plots, function)(study)
            figure = getattr(axes, "figure", None) or axes.flat[0].figure
            figure.set_size_inches(9, 5.5)
            figure.savefig(report_dir / f"{name}.png", dpi=100, bbox_inches="tight")  # rotated labels stay in
            plt.close(figure)
            drawn[name] = f"{name}.png"
        except Exception as err:  # too few trials, a constant parameter, ...
            plt.close("all")
            drawn[name] = "not drawn: " + (" ".join(str(err).split()) or type(err).__name__)
    return drawn


def _markdown(study: optuna.Study, objective: str, rows: list[dict], best: dict | None, plots: dict) -> str:
    lines = [f"# Study {study.study_name}", "",
             f"Objective: {objective} on the dev set (lower is better). Trials: " +
             ", ".join(f"{n} {state}" for state, n in sorted(counts(study).items())) + ".", ""]
    if best:
        lines += [f"Best: trial {best['trial']}, {objective} {best['value']:.4g}: " +
                  ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in best["params"].items()),
                  ""]
    keys = sorted({k for r in rows for k in r["params"]})
    lines += ["| trial | state | " + objective + " | seconds | " + " | ".join(keys) + " | note |",
              "|" + "---|" * (5 + len(keys))]
    for r in rows:
        values = [f"{r['params'][k]:.4g}" if isinstance(r["params"].get(k), float) else str(r["params"].get(k, ""))
                  for k in keys]
        note = r.get("fail_reason") or (f"pruned at step {r['pruned_at_step']}" if "pruned_at_step" in r else "")
        value = "" if r["value"] is None else f"{r['value']:.4g}"
        lines.append(f"| {r['number']} | {r['state']} | {value} | {r['seconds'] or ''} | " + " | ".join(values) +
                     f" | {note.replace('|', '/')} |")
    lines.append("")
    for name, what in plots.items():
        lines.append(f"![{name}]({what})" if what.endswith(".png") else f"- {name}: {what}")
    return "\n".join(lines) + "\n"


def write_report(study: optuna.Study, study_dir: str | Path, objective: str,
                 best_config: Callable[[FrozenTrial], str] | None = None, plots: bool = True) -> dict:
    """Write best_params.json, best_config.yaml and report/; returns {"best": .., "plots": .., "counts": ..}."""
    study_dir = Path(study_dir)
    report_dir = study_dir / "report"
    report_dir.mkdir(parents=True, exist_ok=True)
    best = write_best(study, study_dir, objective, best_config)
    rows = trial_rows(study)
    atomic_write_text(report_dir / "trials.json", json.dumps(rows, indent=1) + "\n")
    drawn = write_plots(study, report_dir) if plots else {}
    atomic_write_text(report_dir / "report.md", _markdown(study, objective, rows, best, drawn))
    return {"best": best, "plots": drawn, "counts": counts(study)}
