"""The fast student against its teacher as shipped: latency at batch 1, RTF at batch 8, WER, in one process.

    python benchmarks/bench_fast_student.py --workdir runs/demo/full \
        --student window=runs/demo/full/variants/window5-0 --student 30s=runs/demo/full/variants/augment-0 --int8 window

The teacher runs as users run it today (HF ``generate``, the 30-s encoder window, float32). Every student runs
as it was saved: a student trained for a short encoder window (``student.encoder_window``) decodes with that
window without being told, one trained at 30 s at 30 s. With ``--int8 [NAME ...]`` the named students (all when none is named) are also evaluated with its
output layer in int8 (:mod:`whisperkd.models.output_layer`; a copy of its ``student_final/`` whose config asks for
it, under the report folder). All models are loaded into one process and take turns batch by batch
(:func:`whisperkd.evaluate.runner.evaluate_models`) on the demo's held-out synthetic voices, the six real clips and
the real dev subset: WER after Whisper's English normaliser, RTF at batch 8 and latency p50 at batch 1 (each
utterance alone, ``--repeats`` times). Printed: one row per model with both speed-ups over the teacher.
Figures in docs/demo.md ("The fast student") come from this script.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

from whisperkd.cli import quiet_libraries, show_progress
from whisperkd.demo_settings import REAL_SPEECH
from whisperkd.evaluate.runner import evaluate_models
from whisperkd.evaluate.tables import overall_speed
from whisperkd.models.loading import resolve
from whisperkd.models.output_layer import CONFIG_KEY


def int8_copy(run: Path, out: Path) -> Path:
    """A copy of the run's saved student whose config asks for the int8 output layer."""
    source = Path(resolve(run))
    if not (out / "config.json").is_file():
        tmp = out.with_name(out.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.copytree(source, tmp)
        config = json.loads((tmp / "config.json").read_text())
        config[CONFIG_KEY] = "int8"
        (tmp / "config.json").write_text(json.dumps(config, indent=2) + "\n")
        tmp.rename(out)
    return out


def table(metrics: dict, names: list[str]) -> str:
    sets = [s["label"] for s in metrics["sets"]]
    head = "| model | " + " | ".join(f"WER {s}" for s in sets) + " | latency p50, batch 1 | RTF, batch 8 | " \
        "speed-up, batch 1 | speed-up, batch 8 |"
    lines = [head, "|---|" + "---|" * (len(sets) + 4)]
    speed = overall_speed(metrics)
    teacher_rtf, teacher_latency = speed[metrics["models"][0]["label"]]
    for name, model in zip(names, metrics["models"]):
        res = {r["set"]: r for r in metrics["results"] if r["model"] == model["label"]}
        rtf, latency = speed[model["label"]]
        wers = " | ".join(f"{100 * res[s]['wer']:.1f} %" for s in sets)
        lat = "n/a" if latency is None else f"{1000 * latency:.0f} ms"
        up1 = "n/a" if latency is None or teacher_latency is None else f"{teacher_latency / latency:.2f}x"
        lines.append(f"| {name} | {wers} | {lat} | {rtf:.3f} | {up1} | {teacher_rtf / rtf:.2f}x |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", type=Path, default=Path("runs/demo/full"), help="a finished full demo's folder")
    parser.add_argument("--student", action="append", default=[], metavar="NAME=RUN", help="a student to compare")
    parser.add_argument("--int8", nargs="*", default=None, metavar="NAME",
                        help="also these students (none named: every student) with the output layer in int8")
    parser.add_argument("--real-speech", type=Path, default=REAL_SPEECH)
    parser.add_argument("--repeats", type=int, default=1, help="latency repeats per utterance")
    parser.add_argument("--limit", type=int, default=None, help="only the first N utterances of each set (a quick check)")
    parser.add_argument("--out", type=Path, default=None, help="report folder (default WORKDIR/variants/fast-report)")
    args = parser.parse_args(argv)
    quiet_libraries()
    show_progress()
    out = args.out or args.workdir / "variants" / "fast-report"
    cfg = json.loads((args.workdir / "run" / "training_config.json").read_text())
    models = {f"teacher ({cfg['teacher']['model']}, as shipped)": cfg["teacher"]["model"]}
    for item in args.student:
        name, _, run = item.partition("=")
        if not run:
            print(f"--student {item}: give NAME=RUN", file=sys.stderr)
            return 2
        models[name] = run
        if args.int8 is not None and (not args.int8 or name in args.int8):
            models[f"{name} + int8 output layer"] = str(int8_copy(Path(run), out / "int8" / name))
    corpus = args.workdir / "corpus"
    sets = [str(corpus / "test" / "manifest.jsonl"), str(args.real_speech), str(corpus / "real-dev" / "manifest.jsonl")]
    metrics = evaluate_models(list(models.values()), sets, out, batch_size=8, repeats=args.repeats, latency=True,
                              limit=args.limit)
    text = table(metrics, list(models))
    (out / "summary.md").write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
