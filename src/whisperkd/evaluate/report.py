"""``RUN/report/report.md``: training curves, evaluation results and representation geometry of a run.

Reads only what the run folder holds (plus what it is given):

- ``RUN/training_history.json`` as ``whisperkd.distill.history`` writes it: ``{"steps": [...], "evals": [...],
  "events": [...]}``, each entry a dict with ``step`` and values (null for non-finite ones). Every numeric key
  is plotted: step entries in ``training.png``, eval entries in ``dev.png``; events are listed. A plain JSON
  list of entries is read too (keys starting with ``dev_``/``eval_`` are then the evaluation values).
- ``RUN/report/metrics.json`` (what ``whisperkd evaluate ... RUN`` writes) and any other metrics files:
  tables, ``wer_vs_rtf.png`` and ``wer_by_speaker.png``.
- geometry of the student against the teacher on a few dev utterances (``geometry.json``, ``geometry.png``),
  computed when a teacher and a dev set are known (arguments, else ``training_config.json``: ``teacher.model``
  and ``data.dev``, or the dev speakers held out of ``data.train`` as the caller's ``dev_split`` gives them),
  reused from ``geometry.json`` otherwise. "Before" rows come from the untrained student when given (a
  directory, or ``init``: the caller's ``init_student`` builds it from the teacher, as distillation starts).

Evaluation builds no students and reads no training config beyond plain JSON: what needs the training code
(``--before init``, the held-out dev speakers) is passed in by ``whisperkd report`` (whisperkd.commands.report).
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import math
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

from whisperkd.data.skiplog import SkipLog
from whisperkd.errors import UserError
from whisperkd.evaluate import plots
from whisperkd.evaluate.geometry import representation_geometry
from whisperkd.evaluate.runner import decode_utterances, load_set, read_metrics
from whisperkd.evaluate.tables import results_table
from whisperkd.models.loading import load_model, load_processor
from whisperkd.models.projector import FILENAME, Projector, load_projector
from whisperkd.models.run_folder import ADAPTER_DIR, HISTORY_FILE, config_section, has_student, read_run_config

logger = logging.getLogger(__name__)

HISTORY = HISTORY_FILE
STEP_KEYS = ("step", "global_step")
DEV_PREFIXES = ("dev_", "eval_")

# ``init_student(teacher, teacher_processor) -> (whisper, projector)``: the untrained student of a run.
InitStudent = Callable[[object, object], tuple]


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def read_history(path: str | Path) -> dict:
    """``{"steps": [...], "evals": [...], "events": [...]}`` from a training history file.

    Accepts the distill trainer's dict and a plain list of entries (split by ``dev_``/``eval_`` keys)."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as err:
        raise UserError(f"{path}: not valid JSON ({err})") from None
    if isinstance(data, dict) and any(isinstance(data.get(k), list) for k in ("steps", "evals")):
        return {k: [e for e in data.get(k) or [] if isinstance(e, dict)] for k in ("steps", "evals", "events")}
    if isinstance(data, dict):
        data = next((data[k] for k in ("history", "log_history", "entries") if isinstance(data.get(k), list)), None)
    if not isinstance(data, list):
        raise UserError(f"{path}: expected {{\"steps\": [...], \"evals\": [...]}} or a JSON list of entries such as "
                        f"{{\"step\": 10, \"loss\": 2.3}}")
    entries = [e for e in data if isinstance(e, dict)]
    steps, evals = [], []
    for entry in entries:
        dev = {k: v for k, v in entry.items() if k.startswith(DEV_PREFIXES)}
        rest = {k: v for k, v in entry.items() if not k.startswith(DEV_PREFIXES)}
        if dev:
            evals.append({**{k: v for k, v in entry.items() if k in STEP_KEYS}, **dev})
        if set(rest) - set(STEP_KEYS):
            steps.append(rest)
    return {"steps": steps, "evals": evals, "events": []}


def _key_order(key: str) -> tuple:
    """Total loss, its parts, WER, lr and TAID t, then the rest (alphabetical within each group)."""
    base = key.split("_", 1)[1] if key.startswith(DEV_PREFIXES) else key
    rank = 0 if base == "loss" else 1 if "loss" in base or base in ("ce", "kl", "align") else \
        2 if "wer" in base else 3 if base in ("lr", "t") else 4
    return rank, key


def series(entries: list[dict]) -> dict[str, list[tuple[float, float]]]:
    """Every finite numeric key of ``entries`` as (step, value) points, in a readable key order."""
    out: dict[str, list] = {}
    for index, entry in enumerate(entries):
        step = next((entry[k] for k in STEP_KEYS if _is_number(entry.get(k))), index)
        for key, value in entry.items():
            if key not in STEP_KEYS and _is_number(value):
                out.setdefault(key, []).append((step, float(value)))
    return {k: out[k] for k in sorted(out, key=_key_order)}


def history_series(history: dict) -> tuple[dict, dict]:
    """``(training, dev)`` series of a history read by :func:`read_history`."""
    return series(history["steps"]), series(history["evals"])


def _events_line(events: list[dict]) -> str:
    by_kind: dict[str, list] = {}
    for e in events:
        by_kind.setdefault(str(e.get("event", "event")), []).append(e.get("step"))
    listed = "; ".join(f"{kind} at step{'s' if len(steps) > 1 else ''} {', '.join(str(x) for x in steps[:10])}"
                       + (" ..." if len(steps) > 10 else "") for kind, steps in by_kind.items())
    return f"Events: {listed}.\n"


def _summary_table(series: dict) -> str:
    lines = ["| value | first | last | min | max | points |", "|---|---|---|---|---|---|"]
    for key, points in series.items():
        values = [v for _, v in points]
        lines.append(f"| {key} | {values[0]:.4g} | {values[-1]:.4g} | {min(values):.4g} | {max(values):.4g} | "
                     f"{len(values)} |")
    return "\n".join(lines) + "\n"


def compute_geometry(run: Path, teacher: str, data, before: str | None = None, n_utterances: int = 16,
                     device: str | None = None, init_student: InitStudent | None = None) -> dict:
    """Geometry of the run's student (and of the untrained one, ``before``: a model or ``"init"``) against
    ``teacher`` on the first ``n_utterances`` usable utterances of ``data`` (a path or a list of utterances).
    ``before="init"`` needs ``init_student``, which builds the untrained student from the loaded teacher."""
    if before == "init" and init_student is None:
        raise UserError("--before init: the untrained student is rebuilt by `whisperkd report` from the run's "
                        "training_config.json; pass a model directory here instead")
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    if isinstance(data, (str, Path)):
        ev, where = load_set(data, n_utterances, SkipLog(None)), str(data)
    else:
        ev, where = decode_utterances(data, "dev", run, n_utterances, SkipLog(None)), "the run's dev split"
    texts = [u.text for u in ev.utterances]
    logger.info(f"geometry: {len(texts)} utterances of {where}, teacher {teacher}")
    t_model, t_proc = load_model(teacher, device=device), load_processor(teacher)
    rows = []
    for name, spec in ([("before", before)] if before else []) + [("after", str(run))]:
        if spec == "init":
            s_model, projector = init_student(t_model, t_proc)
            s_model, s_proc, how = s_model.to(device), t_proc, "initial (as built by distill)"
        else:
            s_model, s_proc = load_model(spec, device=device), load_processor(spec)
            s_dim, t_dim = s_model.config.d_model, t_model.config.d_model
            saved = run / ADAPTER_DIR / FILENAME
            if name == "after" and saved.is_file():
                projector, how = load_projector(saved.parent), f"run's {saved.relative_to(run)}"
            elif s_dim == t_dim:
                projector, how = None, "identity"
            else:
                torch.manual_seed(0)
                projector, how = Projector(s_dim, t_dim), "fresh orthogonal (seed 0)"
        result = representation_geometry(t_model, t_proc, s_model, s_proc, ev.audios, texts, projector=projector)
        rows.append({"student": name, "model": spec, "projector": how, **result})
        del s_model
    return {"teacher": teacher, "data": where, "rows": rows}


def _geometry_section(geometry: dict | None, note: str, out: Path) -> list[str]:
    parts = ["## Representation geometry\n"]
    if not geometry:
        return parts + [note + "\n"]
    rows = geometry["rows"]
    parts.append(f"Last decoder hidden state of the student (through its projector) against the teacher "
                 f"`{geometry['teacher']}`, teacher-forced on reference transcripts of `{geometry['data']}`. "
                 f"Geodesic: mean acos(cos) per token (0 = same direction); linear CKA: 1 = same geometry up to "
                 f"rotation and scale.\n")
    lines = ["| student | model | utterances | tokens | mean geodesic (rad) | (degrees) | linear CKA | projector |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['student']} | {r['model']} | {r['utterances']} | {r['tokens']} | {r['mean_geodesic']:.4f} | "
                     f"{r['mean_geodesic_degrees']:.2f} | {r['linear_cka']:.4f} | {r['projector']} |")
    parts.append("\n".join(lines) + "\n")
    plots.plot_geometry(rows, out / "geometry.png")
    parts.append("![geometry](geometry.png)\n")
    return parts


def write_report(run_dir: str | Path, metrics_files: Sequence[str | Path] = (), teacher: str | None = None,
                 before: str | None = None, data: str | None = None, geometry: bool = True,
                 geometry_utterances: int = 16, device: str | None = None,
                 dev_split: Callable[[], list] | None = None, init_student: InitStudent | None = None) -> Path:
    """Write ``RUN/report/report.md`` and its PNGs; returns the path of report.md.

    ``dev_split()``: the run's dev utterances when the config names no ``data.dev`` (the held-out speakers of
    ``data.train``; UserError when they cannot be read); ``init_student``: see :func:`compute_geometry`."""
    run = Path(run_dir)
    if not run.is_dir():
        raise UserError(f"{run}: no such run folder")
    if geometry_utterances < 1:
        raise UserError(f"--geometry-utterances must be at least 1, got {geometry_utterances}")
    out = run / "report"
    out.mkdir(parents=True, exist_ok=True)
    parts = [f"# Report: {run.resolve().name}\n",
             f"Run folder `{run}`; written {_dt.datetime.now(_dt.timezone.utc).isoformat(timespec='seconds')}.\n"]

    # Training curves.
    parts.append("## Training\n")
    if (run / HISTORY).is_file():
        history = read_history(run / HISTORY)
        train, dev = history_series(history)
        if train:
            plots.plot_series(train, out / "training.png", "training (per logged step)")
            parts += [_summary_table(train), "![training curves](training.png)\n"]
        if dev:
            plots.plot_series(dev, out / "dev.png", "dev evaluations")
            parts += [_summary_table(dev), "![dev curves](dev.png)\n"]
            wer_key = next((k for k in dev if k == "wer" or k.endswith("_wer")), None)
            if wer_key:
                step, best = min(dev[wer_key], key=lambda p: p[1])
                parts.append(f"Best {wer_key}: {100 * best:.2f} % at step {step:g}.\n")
        if history["events"]:
            parts.append(_events_line(history["events"]))
        if not train and not dev:
            parts.append(f"`{HISTORY}` holds no numeric values yet.\n")
    else:
        parts.append(f"No `{HISTORY}` in the run folder.\n")

    # Evaluation results.
    parts.append("## Evaluation\n")
    own = out / "metrics.json"
    files = ([own] if own.is_file() else []) + [Path(p) for p in metrics_files]
    results = []
    for file in files:
        metrics = read_metrics(file)
        mach = metrics["machine"]
        parts.append(f"From `{file}` (measured {metrics['created']} on {mach['cpu']}, device {mach['device']}; "
                     f"batch size {metrics['settings']['batch_size']}, median of {metrics['settings']['repeats']}):\n")
        for entry in metrics["sets"]:
            parts += [f"### {entry['label']} ({entry['utterances']} utterances, {entry['audio_seconds']:.1f} s)\n",
                      results_table(metrics, entry["label"])]
        results += metrics["results"]
    if results:
        plots.plot_wer_vs_rtf(results, out / "wer_vs_rtf.png")
        plots.plot_wer_by_speaker(results, out / "wer_by_speaker.png")
        parts += ["![WER vs RTF](wer_vs_rtf.png)\n", "![WER per speaker](wer_by_speaker.png)\n"]
    else:
        parts.append(f"No metrics yet: `whisperkd evaluate TEACHER {run} --data DEV` writes `{own}`.\n")

    # Representation geometry.
    config = read_run_config(run)
    teacher = teacher or config_section(config, "teacher").get("model")
    data_cfg = config_section(config, "data")
    result, note = None, "Not computed: pass `--teacher` and `--data` (a dev set) to `whisperkd report`."
    if geometry and teacher and has_student(run):
        if data is None and data_cfg.get("dev"):
            data = data_cfg["dev"]
        elif data is None and data_cfg.get("train") and dev_split is not None:
            try:
                data = dev_split()
            except UserError as err:
                note = f"Not computed: the run's dev split cannot be read ({err}); pass `--data`."
        if data is not None and (isinstance(data, (str, Path)) or len(data)):
            result = compute_geometry(run, teacher, data, before, geometry_utterances, device, init_student)
            (out / "geometry.json").write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    if result is None and (out / "geometry.json").is_file():
        result = json.loads((out / "geometry.json").read_text(encoding="utf-8"))
    elif result is None and geometry and teacher and not has_student(run):
        note = "Not computed: the run folder has no `student_final/` yet."
    parts += _geometry_section(result, note, out)

    path = out / "report.md"
    path.write_text("\n".join(parts), encoding="utf-8")
    return path
