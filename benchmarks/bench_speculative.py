"""Speculative decoding against the teacher's own greedy decoding, at batch 1, on the six real clips.

    python benchmarks/bench_speculative.py --teacher base --student pruned --student runs/demo/full/run

``pruned`` is an untrained student cut from the teacher (decoder layers [0, last], the teacher's encoder), saved
in a temporary folder: a draft that shares the encoder but was never trained, so few of its tokens are accepted.
Any other ``--student`` is a run folder or HF directory (:func:`whisperkd.deploy.speculative.open_speculative`).

Each clip is decoded alone, in turns: the teacher greedy (:func:`whisperkd.models.decode.transcribe_arrays`, batch 1,
30 s, the engine's own teacher) and speculative, ``--repeats`` times after one warm-up clip. A model's time is the
sum over clips of each clip's fastest repeat (on a shared machine the fastest is the least disturbed one); the
median is printed too. Printed per student: both times, the teacher's speed-up, whether all transcripts are
identical, and the drafted / accepted tokens with the tokens per teacher decoder pass.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch
from transformers.utils import logging as hf_logging

from whisperkd.cli import quiet_libraries
from whisperkd.data.audio import load_utterance
from whisperkd.data.manifest import read_manifest
from whisperkd.demo_settings import REAL_SPEECH
from whisperkd.deploy.speculative import open_speculative
from whisperkd.models.decode import transcribe_arrays
from whisperkd.models.loading import load_model, load_processor
from whisperkd.models.student import build_student_from_teacher


def pruned_student(teacher: str, out: Path) -> str:
    """The teacher's first and last decoder layers and its whole encoder, untrained, saved in ``out``."""
    model = load_model(teacher)
    build_student_from_teacher(model, [0, model.config.decoder_layers - 1]).save_pretrained(out)
    load_processor(teacher).save_pretrained(out)
    return str(out)


def timed(fn, audio) -> tuple[float, str]:
    start = time.perf_counter()
    text = fn([audio])[0]
    return time.perf_counter() - start, text


def measure(teacher: str, student: str, audios: list, repeats: int) -> dict:
    engine = open_speculative(teacher, student)
    greedy = lambda batch: transcribe_arrays(engine.model, engine.processor, batch, batch_size=1, window=30)  # noqa: E731
    for fn in (greedy, engine.transcribe):  # warm-up
        timed(fn, audios[0])
    times = {"greedy": [[] for _ in audios], "speculative": [[] for _ in audios]}
    texts, stats = {"greedy": [], "speculative": []}, []
    for r in range(repeats):
        for i, audio in enumerate(audios):
            for name, fn in (("greedy", greedy), ("speculative", engine.transcribe)):
                seconds, text = timed(fn, audio)
                times[name][i].append(seconds)
                if r == 0:
                    texts[name].append(text)
            if r == 0:
                stats += engine.last_stats
    out = {"student": student, "shares_encoder": engine.shares_encoder,
           "identical": texts["greedy"] == texts["speculative"],
           "tokens": sum(s.tokens for s in stats), "rounds": sum(s.rounds for s in stats),
           "drafted": sum(s.drafted for s in stats), "accepted": sum(s.accepted for s in stats)}
    for name, per_clip in times.items():
        out[f"{name}_min_s"] = sum(min(t) for t in per_clip)
        out[f"{name}_median_s"] = sum(statistics.median(t) for t in per_clip)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--teacher", default="base")
    parser.add_argument("--student", action="append", default=None,
                        help="'pruned' (untrained, built here) or a run folder / HF directory; repeatable")
    parser.add_argument("--clips", type=Path, default=REAL_SPEECH, help="a folder with manifest.jsonl")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own choice)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    quiet_libraries()
    hf_logging.set_verbosity_error()  # transformers is imported already: its environment variable came too late
    audios = [load_utterance(u) for u in read_manifest(args.clips / "manifest.jsonl")]
    print(f"{len(audios)} clips, {sum(len(a) for a in audios) / 16_000:.1f} s of audio; teacher {args.teacher}; "
          f"torch threads {torch.get_num_threads()}; {args.repeats} repeats")
    print("| draft | shares encoder | teacher greedy, s | speculative, s | speed-up | identical | "
          "accepted / drafted | tokens per teacher pass |")
    print("|---|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for student in args.student or ["pruned"]:
            spec = pruned_student(args.teacher, Path(tmp) / "pruned") if student == "pruned" else student
            m = measure(args.teacher, spec, audios, args.repeats)
            print(f"| {student} | {'yes' if m['shares_encoder'] else 'no'} | {m['greedy_min_s']:.2f} "
                  f"(median {m['greedy_median_s']:.2f}) | {m['speculative_min_s']:.2f} "
                  f"(median {m['speculative_median_s']:.2f}) | {m['greedy_min_s'] / m['speculative_min_s']:.2f}x | "
                  f"{'yes' if m['identical'] else 'NO'} | {m['accepted']} / {m['drafted']} | "
                  f"{m['tokens'] / m['rounds']:.2f} |", flush=True)


if __name__ == "__main__":
    main()
