"""The demo's distillation with other losses and levers, side by side on the demo's held-out sets.

    python benchmarks/bench_demo_variants.py --workdir runs/demo/full \
        --variant taid loss.kind=taid --variant geodesic loss.align_weight=1.0 loss.align_kind=geodesic

Every variant starts from the demo run's own training_config.json (same corpus, same teacher cache, same
budget) with the given overrides, and trains into WORKDIR/variants/NAME (skipped when already trained).
Then the teacher, the demo's distilled student (``ce+kl``) and every variant are evaluated together on the
demo's held-out test set and the real clips, and one table is printed: WER on both sets (as decoded, and with
repetition loops cut by whisperkd.evaluate.loops), best dev WER, latency p50 at batch 1 and speed-up vs the
teacher. Figures measured this way are in docs/demo.md.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from whisperkd.cli import quiet_libraries, show_progress
from whisperkd.config import load_config
from whisperkd.demo_settings import REAL_SPEECH
from whisperkd.distill.trainer import train
from whisperkd.evaluate.loops import wer_with_guard
from whisperkd.evaluate.runner import evaluate_models


def parse_variants(items: list[list[str]]) -> dict[str, list[str]]:
    """``--variant NAME KEY=VALUE ...`` groups into {name: overrides}."""
    variants = {}
    for name, *overrides in items:
        if "=" in name or not overrides:
            raise SystemExit(f"--variant {' '.join([name, *overrides])}: give a name, then KEY=VALUE overrides")
        variants[name] = overrides
    return variants


def train_variant(demo_run: Path, out: Path, overrides: list[str]) -> Path:
    """Train one variant (resuming an interrupted one); returns its run folder."""
    if (out / "student_final" / "config.json").is_file():
        return out
    resume = (out / "checkpoint").is_dir()
    cfg = load_config(demo_run / "training_config.json",
                      overrides + [f"output.dir={out}", f"output.overwrite={'false' if resume else 'true'}"])
    train(cfg, resume=resume)
    return out


def best_dev_wer(run: Path) -> float | None:
    """The lowest dev WER in the run's training_history.json."""
    history = json.loads((run / "training_history.json").read_text())
    wers = [e["wer"] for e in history.get("evals", []) if e.get("wer") is not None]
    return min(wers) if wers else None


def table(metrics: dict, names: list[str], runs: dict[str, Path], utterances: list[dict]) -> str:
    """One row per model: WER on each set (and after the loop guard), best dev WER, latency, speed-up."""
    sets = [s["label"] for s in metrics["sets"]]
    lines = ["| run | " + " | ".join(f"WER {s} | WER {s}, loop guard" for s in sets)
             + " | best dev WER | latency p50 (batch 1) | speed-up vs teacher |",
             "|---|" + "---|---|" * len(sets) + "---|---|---|"]
    for name, model in zip(names, metrics["models"]):
        res = {r["set"]: r for r in metrics["results"] if r["model"] == model["label"]}
        held = res[sets[0]]
        dev = best_dev_wer(runs[name]) if name in runs else None
        cells = [name]
        for s in sets:
            rows = [u for u in utterances if u["model"] == model["label"] and u["set"] == s]
            cells += [f"{100 * res[s]['wer']:.1f} %", f"{100 * wer_with_guard(rows):.1f} %"]
        lat = held["speed"]["latency_p50_s"]
        speedup = held["vs_reference"]["latency_speedup"]
        cells += ["n/a" if dev is None else f"{100 * dev:.1f} %", "n/a" if lat is None else f"{lat:.3f} s",
                  "n/a" if speedup is None else f"{speedup:.2f}x"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", type=Path, default=Path("runs/demo/full"), help="a finished demo's folder")
    parser.add_argument("--variant", nargs="+", action="append", default=[], metavar="NAME KEY=VALUE",
                        help="a name and its config overrides (repeatable)")
    parser.add_argument("--real-speech", type=Path, default=REAL_SPEECH)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--no-eval", action="store_true", help="only train the variants")
    parser.add_argument("--no-latency", action="store_true", help="skip the batch-1 latency pass")
    args = parser.parse_args(argv)
    quiet_libraries()
    show_progress()  # evaluation progress (logging) on stderr, as the CLI shows it
    demo_run = args.workdir / "run"
    if not (demo_run / "student_final" / "config.json").is_file():
        print(f"{demo_run}: no finished demo run; run `whisperkd demo --workdir {args.workdir.parent}` first",
              file=sys.stderr)
        return 2
    runs = {"ce+kl (the demo)": demo_run}
    for name, overrides in parse_variants(args.variant).items():
        print(f"variant {name}: {' '.join(overrides)}", flush=True)
        runs[name] = train_variant(demo_run, args.workdir / "variants" / name, overrides)
    if args.no_eval:
        return 0
    cfg = json.loads((demo_run / "training_config.json").read_text())
    test = args.workdir / "corpus" / "test" / "manifest.jsonl"
    sets = [str(test)] + ([str(args.real_speech)] if (args.real_speech / "manifest.jsonl").is_file() else [])
    names = ["teacher"] + list(runs)
    metrics = evaluate_models([cfg["teacher"]["model"]] + [str(p) for p in runs.values()], sets,
                              args.workdir / "variants" / "report", batch_size=8, repeats=args.repeats,
                              latency=not args.no_latency)
    report = args.workdir / "variants" / "report"
    utterances = [json.loads(line) for line in (report / "utterances.jsonl").read_text().splitlines() if line]
    print(table(metrics, names, runs, utterances))
    return 0


if __name__ == "__main__":
    sys.exit(main())
