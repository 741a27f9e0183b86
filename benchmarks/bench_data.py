#!/usr/bin/env python3
"""Speech-data figures: synthesis speed per engine (audio seconds per CPU second) and loader throughput
(utterances per second turned into padded log-mel + label batches).

Usage: python benchmarks/bench_data.py [--utterances 40] [--piper-utterances 12] [--repeats 3]
Needs the speech engines (Makefile system-packages, piper extra) and the tiny.en model (fetched on first use).
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from whisperkd.data.sentences import load_sentences  # noqa: E402
from whisperkd.data.synth import synthesize_corpus  # noqa: E402
from whisperkd.data.voices import resolve_voices  # noqa: E402


def cpu_seconds() -> float:
    """CPU time of this process and its finished children (user + system)."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def bench_engine(engine: str, n: int, root: Path, sentences: list[str]) -> tuple[float, float, float]:
    """(audio seconds, CPU seconds, wall seconds) to synthesise ``n`` utterances in one process."""
    voices = resolve_voices(engine, seed=0, max_per_engine=4)
    out = root / engine
    cpu0, wall0 = cpu_seconds(), time.perf_counter()
    done = synthesize_corpus(out, sentences, voices, seed=0, utterances=n, jobs=1, progress=False)
    cpu, wall = cpu_seconds() - cpu0, time.perf_counter() - wall0
    return sum(u.duration for u in done), cpu, wall


def bench_loader(root: Path, workers: int, repeats: int) -> float:
    """Median utterances per second over ``repeats`` passes of the loader (batch 8)."""
    from whisperkd.data.sources import open_source
    from whisperkd.data.loader import make_loader
    from whisperkd.models.loading import load_processor

    processor = load_processor("tiny.en")
    utts = [u for engine in ("espeak", "flite", "festival") for u in open_source(root / engine)]
    rates = []
    for _ in range(repeats):
        loader = make_loader(utts, processor, batch_size=8, num_workers=workers)
        start = time.perf_counter()
        count = sum(len(batch["ids"]) for batch in loader)
        rates.append(count / (time.perf_counter() - start))
    return statistics.median(rates)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--utterances", type=int, default=40)
    parser.add_argument("--piper-utterances", type=int, default=12)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    print(f"machine: {platform.platform()}, {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
          f"Python {platform.python_version()}")
    sentences = load_sentences("austen")
    with tempfile.TemporaryDirectory(prefix="bench-data-") as tmp:
        root = Path(tmp)
        print("| engine | utterances | audio s | CPU s | audio s per CPU s | wall s |")
        print("|---|---|---|---|---|---|")
        for engine in ("espeak", "flite", "festival", "piper"):
            n = args.piper_utterances if engine == "piper" else args.utterances
            audio, cpu, wall = bench_engine(engine, n, root, sentences)
            print(f"| {engine} | {n} | {audio:.1f} | {cpu:.2f} | {audio / cpu:.0f} | {wall:.2f} |", flush=True)
        print()
        print("| loader (tiny.en features + labels, batch 8) | utterances/s (median of %d) |" % args.repeats)
        print("|---|---|")
        for workers in (0, 2):
            print(f"| num_workers={workers} | {bench_loader(root, workers, args.repeats):.1f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
