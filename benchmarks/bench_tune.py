"""Wall time of an N-trial ``whisperkd tune`` study (one teacher cache) vs the same N runs trained online.

Both sides train the same N configurations, the ones the study sampled from the default search space
(KL weight, alignment weight, temperature, learning rate, batch size), for ``--steps`` optimizer steps with one
dev evaluation (greedy WER) at the end. The study builds the teacher cache once, before its first trial, and
every trial reads it (no pruning: ``tune.pruner.kind=none``, so the saving is the cache's alone). The online
runs are independent ``whisperkd distill`` runs with ``cache.enabled=false``: the teacher runs at every step and
evaluation, its outputs memoised within a run (``teacher.memo_size``), not across runs.
One process; a warm-up loads the models once before anything is timed. The study runs first.

Usage: python benchmarks/bench_tune.py [--trials 4] [--utterances 24] [--steps 8] [--out runs/bench-tune]
Prints Markdown (docs/tuning.md).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import time
from pathlib import Path

VOICES = "espeak:en-us,espeak:en-gb,flite:slt,flite:rms"


def corpus(out: Path, utterances: int) -> tuple[Path, Path]:
    """A synthetic corpus: the last voice's utterances are the dev set, the others train."""
    from whisperkd.data.manifest import write_manifest
    from whisperkd.data.sentences import load_sentences
    from whisperkd.data.synth import synthesize_corpus
    from whisperkd.data.voices import resolve_voices

    utts = synthesize_corpus(out / "speech", load_sentences("harvard"), resolve_voices(VOICES), seed=7,
                             utterances=utterances, jobs=1, progress=False)
    dev_speaker = utts[-1].speaker
    train = write_manifest(out / "train.jsonl", [u for u in utts if u.speaker != dev_speaker])
    dev = write_manifest(out / "dev.jsonl", [u for u in utts if u.speaker == dev_speaker])
    return train, dev


def counting(cls, calls: dict, name: str) -> None:
    original = cls.__call__

    def counted(self, *args, **kwargs):
        calls[name] += 1
        return original(self, *args, **kwargs)

    cls.__call__ = counted


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=4)
    parser.add_argument("--utterances", type=int, default=24)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--teacher", default="tiny.en")
    parser.add_argument("--student-layers", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path("runs/bench-tune"))
    args = parser.parse_args()

    import torch
    import yaml

    from whisperkd.config import apply_override, config_from_dict
    from whisperkd.distill import trainer
    from whisperkd.distill.cache import CachedTeacher
    from whisperkd.distill.teacher import OnlineTeacher
    from whisperkd.models.loading import load_model, resolve
    from whisperkd.tuning.tune import load_tune, trial_raw, tune

    shutil.rmtree(args.out / "study", ignore_errors=True)
    shutil.rmtree(args.out / "online", ignore_errors=True)
    train, dev = corpus(args.out / "corpus", args.utterances)
    raw = {
        "teacher": {"model": str(resolve(args.teacher)), "device": "cpu", "dtype": "float32", "memo_size": 1000},
        "student": {"decoder_layers": args.student_layers},
        "optim": {"warmup_steps": 1},
        "train": {"max_steps": args.steps, "batch_size": 8, "device": "cpu", "log_every": 1},
        "data": {"train": str(train), "dev": str(dev), "dev_fraction": 0.0},
        "eval": {"every": args.steps, "at_start": False, "max_utterances": 64, "batch_size": 8, "wer": True},
        "output": {"dir": str(args.out / "study"), "tensorboard": False, "checkpoint_every": 10_000},
        "tune": {"seed": 0, "startup_trials": args.trials, "pruner": {"kind": "none"}},
    }
    config = args.out / "tune.yaml"
    config.write_text(yaml.safe_dump(raw, sort_keys=False))
    load_model(args.teacher)  # warm-up: imports, first weight load
    calls = {"online": 0, "cached": 0}
    counting(OnlineTeacher, calls, "online")
    counting(CachedTeacher, calls, "cached")
    load_before = os.getloadavg()

    setup = load_tune(config, trials=args.trials, progress=False, log=lambda line: print("  " + line, file=sys.stderr))
    import whisperkd.tuning.tune as tune_module

    ensure, cache_seconds = tune_module.ensure_shared_cache, []

    def timed_ensure(*a, **k):
        start = time.perf_counter()
        ensure(*a, **k)
        cache_seconds.append(time.perf_counter() - start)

    tune_module.ensure_shared_cache = timed_ensure
    start = time.perf_counter()
    summary = tune(setup)
    study_seconds = time.perf_counter() - start
    study_calls = dict(calls)
    rows = json.loads((setup.spec.dir / "report" / "trials.json").read_text())

    online_seconds = []
    for row in rows:
        raw_trial = trial_raw(setup, row["params"], args.out / "online" / f"trial-{row['number']:04d}")
        for assignment in ("cache.enabled=false", "train.progress=false", "output.overwrite=true"):
            apply_override(raw_trial, assignment)
        start = time.perf_counter()
        trainer.train(config_from_dict(raw_trial))
        online_seconds.append(time.perf_counter() - start)
    online_calls = {k: calls[k] - study_calls[k] for k in calls}
    load_after = os.getloadavg()

    n = len(rows)
    print(f"Machine: {platform.machine()} {platform.processor() or ''}, {os.cpu_count()} CPUs "
          f"(torch threads {torch.get_num_threads()}), Python {platform.python_version()}, torch {torch.__version__}; "
          f"load average {load_before[0]:.1f} before, {load_after[0]:.1f} after (a shared, noisy machine)")
    print(f"Command: python benchmarks/bench_tune.py --trials {args.trials} --utterances {args.utterances} "
          f"--steps {args.steps} --teacher {args.teacher} --student-layers {args.student_layers}")
    print(f"Trials: {n} ({', '.join(f'{v} {k}' for k, v in summary['counts'].items())}); "
          f"teacher calls during trials: study {study_calls['online']} online / {study_calls['cached']} cached, "
          f"independent runs {online_calls['online']} online")
    print()
    print("| | wall s | per trial s |")
    print("|---|---|---|")
    cache = sum(cache_seconds)
    print(f"| study: {n} trials over one cache (incl. building it) | {study_seconds:.1f} | {study_seconds / n:.1f} |")
    print(f"| of which: teacher cache, built once | {cache:.1f} | |")
    print(f"| {n} independent online runs | {sum(online_seconds):.1f} | {sum(online_seconds) / n:.1f} |")
    print(f"| ratio online / study | {sum(online_seconds) / study_seconds:.2f} | |")


if __name__ == "__main__":
    main()
