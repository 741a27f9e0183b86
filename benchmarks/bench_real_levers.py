"""Levers for real speech at a small budget, each alone, same seed, same dev sets (docs/demo.md, "Real speech").

    python benchmarks/bench_real_levers.py --workdir runs/levers \
        --variant synthetic none \
        --variant pseudo pseudo \
        --variant pseudo-wer0.5 pseudo:0.5 \
        --variant original original \
        --variant both both \
        --variant noise pseudo data.augment.copies=1 data.augment.noise_prob=1.0

Every variant trains the demo's config (``resources/demo.yaml``) at a smaller budget: ``--synthetic`` synthetic
training utterances (the full demo's corpus recipe, same seed) plus ``--real`` utterances of the real corpus's
train split with the variant's labels (``none``: synthetic only; ``pseudo[:MAX_WER]``, ``original``, ``both``:
see whisperkd.demo_real), packed; ``--steps`` steps of 4 windows; the best checkpoint on the demo's mixed dev
set (48 synthetic + 48 real dev utterances). Each variant has its own teacher cache (the labels and augmentation
change the teacher's inputs). Then the teacher and every variant are evaluated together on the synthetic dev
set, the demo's 100-utterance real dev subset and the six real clips (dev sets only choose; the clips are only
reported). Printed: WER on each set, the share of real-dev hypotheses written in capitals, best dev WER.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from whisperkd.cli import quiet_libraries, show_progress
from whisperkd.config import load_config
from whisperkd.data.manifest import read_manifest
from whisperkd.demo import build_corpus
from whisperkd.demo_real import find_real_corpus, mix_manifests, prepare_real_train, real_dev_subsets
from whisperkd.demo_settings import DEFAULT_CONFIG, REAL_SPEECH, DemoSize
from whisperkd.distill.history import read_history
from whisperkd.distill.trainer import train
from whisperkd.evaluate.runner import evaluate_models


def parse_variants(items: list[list[str]]) -> dict[str, tuple[str, float | None, list[str]]]:
    """``--variant NAME LABELS[:MAX_WER] [KEY=VALUE ...]`` -> {name: (labels, max_wer, overrides)}."""
    variants = {}
    for name, labels, *overrides in items:
        kind, _, wer = labels.partition(":")
        if kind not in ("none", "pseudo", "original", "both") or any("=" not in o for o in overrides):
            raise SystemExit(f"--variant {name} {labels}: give NAME none|pseudo[:MAX_WER]|original|both KEY=VALUE...")
        variants[name] = (kind, float(wer) if wer else None, overrides)
    return variants


def capitals_share(rows: list[dict]) -> float:
    """Share of hypotheses with two or more words written entirely in capitals."""
    shouting = [r for r in rows if len(r["hypothesis"].split()) > 1 and r["hypothesis"] == r["hypothesis"].upper()
                and any(c.isalpha() for c in r["hypothesis"])]
    return len(shouting) / max(len(rows), 1)


def best_dev_wer(run: Path) -> tuple[float | None, int | None]:
    evals = [e for e in read_history(run).get("evals", []) if e.get("wer") is not None]
    best = min(evals, key=lambda e: e["wer"]) if evals else None
    return (best["wer"], best["step"]) if best else (None, None)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", type=Path, default=Path("runs/levers"))
    parser.add_argument("--variant", nargs="+", action="append", default=[], metavar="NAME LABELS KEY=VALUE")
    parser.add_argument("--synthetic", type=int, default=400, help="synthetic training utterances")
    parser.add_argument("--real", type=int, default=400, help="real training utterances")
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--real-corpus", default=None)
    parser.add_argument("--no-eval", action="store_true")
    args = parser.parse_args(argv)
    quiet_libraries()
    show_progress()
    corpus = find_real_corpus(args.real_corpus)
    if corpus is None:
        print("no real corpus: give --real-corpus DIR", file=sys.stderr)
        return 2
    work = args.workdir.absolute()
    size = DemoSize(args.synthetic, 48, 8, 1, False, ())
    manifests = build_corpus(work / "corpus", size, args.seed, REAL_SPEECH, engines=("espeak", "flite", "festival"))
    select, report = real_dev_subsets(corpus, work / "corpus", 48, 100)
    dev = mix_manifests({"synthetic": manifests["dev"], "real": select}, work / "corpus" / "dev-mixed" / "manifest.jsonl")
    cfg0 = load_config(DEFAULT_CONFIG)
    runs = {}
    for name, (labels, max_wer, overrides) in parse_variants(args.variant).items():
        out = work / "variants" / name
        runs[name] = out
        if (out / "student_final" / "config.json").is_file():
            continue
        parts = {"synthetic": manifests["train"]}
        if labels != "none":
            real = prepare_real_train(corpus, work / "corpus", args.real, args.seed, cfg0.teacher.model, labels,
                                      max_wer)
            parts["real"] = real.manifest
        mixed = mix_manifests(parts, work / "corpus" / f"train-{name}" / "manifest.jsonl")
        windows = len(read_manifest(mixed))
        print(f"variant {name}: {windows} windows ({labels}, max_wer {max_wer}); {' '.join(overrides)}", flush=True)
        resume = (out / "checkpoint").is_dir()
        cfg = load_config(DEFAULT_CONFIG, [
            f"train.max_steps={args.steps}", f"optim.warmup_steps={max(1, args.steps // 15)}",
            f"eval.every={args.steps // 2}", f"output.checkpoint_every={args.steps // 2}", f"train.seed={args.seed}",
            f"data.train={mixed}", f"data.dev={dev}", f"output.dir={out}", f"cache.dir={work / 'cache' / name}",
            f"output.overwrite={'false' if resume else 'true'}", "train.progress=false", *overrides])
        train(cfg, resume=resume)
    if args.no_eval:
        return 0
    sets = [str(manifests["dev"]), str(report), str(REAL_SPEECH)]
    metrics = evaluate_models([cfg0.teacher.model] + [str(p) for p in runs.values()], sets, work / "report",
                              batch_size=8, repeats=1, latency=False)
    utterances = [json.loads(line) for line in (work / "report" / "utterances.jsonl").read_text().splitlines() if line]
    labels = [s["label"] for s in metrics["sets"]]
    lines = ["| run | dev WER synthetic | dev WER real | capitals on real dev | six real clips | best dev WER (step) |",
             "|---|---|---|---|---|---|"]
    for name, model in zip(["teacher"] + list(runs), metrics["models"]):
        res = {r["set"]: r["wer"] for r in metrics["results"] if r["model"] == model["label"]}
        caps = capitals_share([u for u in utterances if u["model"] == model["label"] and u["set"] == labels[1]])
        best, step = best_dev_wer(runs[name]) if name in runs else (None, None)
        lines.append(f"| {name} | {100 * res[labels[0]]:.1f} % | {100 * res[labels[1]]:.1f} % | {100 * caps:.0f} % | "
                     f"{100 * res[labels[2]]:.1f} % | " + ("" if best is None else f"{100 * best:.1f} % ({step})") + " |")
    table = "\n".join(lines)
    (work / "report" / "levers.md").write_text(table + "\n")
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
