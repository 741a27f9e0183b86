"""Figures for the offline models: conversion time, sizes, and transcription speed (RTF) on the real clips.

Usage: python benchmarks/bench_models.py [--repeats 3] [--clips ../shared/data/real-speech]
Prints a Markdown table. Timing on shared machines is noisy: medians of repeats.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import torch

from whisperkd.data.audio import load_audio
from whisperkd.models.fetch import ct2_dir_of, ensure_model
from whisperkd.models.import_ct2 import import_ct2
from whisperkd.models.loading import load_model, load_processor
from whisperkd.models.decode import transcribe_arrays


def size_mb(path: Path) -> float:
    """Size of a file, or of all files under a folder, in MiB."""
    path = Path(path)
    files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
    return sum(p.stat().st_size for p in files) / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--clips", type=Path, default=Path(__file__).resolve().parents[2] / "shared/data/real-speech")
    parser.add_argument("--batch-size", type=int, default=1)
    args = parser.parse_args()
    rows = [json.loads(x) for x in (args.clips / "manifest.jsonl").read_text().splitlines() if x.strip()]
    audios = [load_audio(args.clips / r["audio"]) for r in rows]
    audio_s = sum(len(a) for a in audios) / 16000
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch threads "
          f"{torch.get_num_threads()}; clips: {len(audios)} ({audio_s:.1f} s); batch size {args.batch_size}")
    print("| model | params | CT2 model.bin (MB) | HF dir (MB) | conversion (s) | transcribe (s) | RTF |")
    print("|---|---|---|---|---|---|---|")
    for name in ("tiny.en", "base"):
        path = ensure_model(name)
        conv = []
        for _ in range(args.repeats):
            with tempfile.TemporaryDirectory() as tmp:
                start = time.perf_counter()
                import_ct2(ct2_dir_of(name), Path(tmp) / "out")
                conv.append(time.perf_counter() - start)
        model, processor = load_model(path), load_processor(path)
        transcribe_arrays(model, processor, audios[:1])  # warm-up
        times = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            transcribe_arrays(model, processor, audios, batch_size=args.batch_size)
            times.append(time.perf_counter() - start)
        t = statistics.median(times)
        print(f"| {name} | {model.num_parameters() / 1e6:.1f} M | {size_mb(ct2_dir_of(name) / 'model.bin'):.1f} | "
              f"{size_mb(path):.1f} | {statistics.median(conv):.1f} | {t:.2f} | {t / audio_s:.3f} |")


if __name__ == "__main__":
    main()
