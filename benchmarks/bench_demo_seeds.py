"""The full demo's headline figures over several training seeds: mean and spread, so one run is not the headline.

    python benchmarks/bench_demo_seeds.py --workdir runs/demo/full --seeds 1 2

The demo run in WORKDIR/run is seed 0. Every other seed retrains it from its own training_config.json (same
corpus, same real-speech subset and labels, same teacher cache, same budget) with only ``train.seed`` changed
(the student's LoRA/projector initialisation and the order of the batches; the step-0 evaluation of the untrained
student, which never wins the selection, is skipped), into WORKDIR/variants/seed-N (skipped when already
trained, resumed when interrupted). With ``--name NAME --set KEY=VALUE ...`` every seed, 0 included, is trained
with those overrides into WORKDIR/variants/NAME-N (``--compare-demo``: the demo's own run is evaluated next to
them):

    python benchmarks/bench_demo_seeds.py --name augment --seeds 0 1 2 --set data.augment.copies=1

Then the teacher and every run are evaluated together, taking turns in one process, on the demo's three sets
(held-out synthetic voices, the six real clips, the 100-utterance real dev subset). Printed: one row per run as
the demo's table, then the mean, sample standard deviation and range over the seeds' runs, and the mean's
difference to the teacher. Figures in README and docs/demo.md come from this script.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

from bench_demo_variants import train_variant

from whisperkd.cli import quiet_libraries, show_progress
from whisperkd.demo import format_table, summary_rows
from whisperkd.demo_settings import REAL_SPEECH
from whisperkd.evaluate.runner import evaluate_models

COLUMNS = {"wer_held_out": "WER held-out voices", "wer_real": "WER real clips", "wer_real_dev": "WER real dev",
           "speedup": "speed-up vs teacher"}


def spread(rows: list[dict], teacher: dict) -> str:
    """The students' mean ± sample standard deviation [min, max] per column, and the mean minus the teacher."""
    lines = ["| over the students | " + " | ".join(COLUMNS.values()) + " |", "|---|" + "---|" * len(COLUMNS)]
    stats = {k: [r[k] for r in rows if r.get(k) is not None] for k in COLUMNS}
    cells = []
    for key, values in stats.items():
        if not values:
            cells.append("n/a")
            continue
        scale, unit = (1, "x") if key == "speedup" else (100, " %")
        sd = statistics.stdev(values) if len(values) > 1 else 0.0
        cells.append(f"{scale * statistics.mean(values):.2f}{unit} ± {scale * sd:.2f} "
                     f"[{scale * min(values):.2f}, {scale * max(values):.2f}]")
    lines.append(f"| mean ± sd [min, max] ({len(rows)} seeds) | " + " | ".join(cells) + " |")
    diffs = [f"{100 * (statistics.mean(v) - teacher[k]):+.2f} points" if v and k != "speedup" else ""
             for k, v in stats.items()]
    lines.append("| mean − teacher | " + " | ".join(diffs) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", type=Path, default=Path("runs/demo/full"), help="a finished demo's folder")
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2],
                        help="training seeds (without --set: besides the demo's 0)")
    parser.add_argument("--name", default="seed", help="the runs' name with --set")
    parser.add_argument("--set", nargs="+", default=[], metavar="KEY=VALUE", help="overrides for every seed")
    parser.add_argument("--compare-demo", action="store_true", help="with --set: evaluate the demo's run too")
    parser.add_argument("--real-speech", type=Path, default=REAL_SPEECH)
    parser.add_argument("--no-eval", action="store_true", help="only train the seeds")
    args = parser.parse_args(argv)
    quiet_libraries()
    show_progress()
    demo_run = args.workdir / "run"
    if not (demo_run / "student_final" / "config.json").is_file():
        print(f"{demo_run}: no finished demo run; run `whisperkd demo --workdir {args.workdir.parent}` first",
              file=sys.stderr)
        return 2
    cfg = json.loads((demo_run / "training_config.json").read_text())
    demo = {f"the demo (seed {cfg['train']['seed']})": demo_run}
    runs = {} if args.set else dict(demo)
    for seed in args.seeds:
        if not args.set and seed == cfg["train"]["seed"]:
            continue
        print(f"training {args.name} {seed} {' '.join(args.set)}", flush=True)
        runs[f"{args.name} {seed}"] = train_variant(demo_run, args.workdir / "variants" / f"{args.name}-{seed}",
                                                    [*args.set, f"train.seed={seed}", "eval.at_start=false"])
    if args.no_eval:
        return 0
    corpus = args.workdir / "corpus"
    sets = [str(corpus / "test" / "manifest.jsonl"), str(args.real_speech), str(corpus / "real-dev" / "manifest.jsonl")]
    missing = [s for s in sets if not (Path(s) / "manifest.jsonl" if Path(s).is_dir() else Path(s)).is_file()]
    if missing:
        print(f"missing evaluation set(s): {', '.join(missing)}", file=sys.stderr)
        return 2
    report = args.workdir / "variants" / f"{args.name}-report"
    compared = demo if args.set and args.compare_demo else {}
    models = {f"teacher ({cfg['teacher']['model']})": cfg["teacher"]["model"],
              **{k: str(v) for k, v in {**compared, **runs}.items()}}
    metrics = evaluate_models(list(models.values()), sets, report, batch_size=8, repeats=1, latency=False)
    rows = summary_rows(metrics, list(models))
    text = format_table(rows) + "\n\n" + spread(rows[-len(runs):], rows[0])
    (report / "summary.md").write_text(text + "\n")
    (report / "summary.json").write_text(json.dumps(rows, indent=2))
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
