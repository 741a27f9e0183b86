"""Teacher against student on the same sets, measured side by side: speed-up and WER difference.

    python benchmarks/bench_teacher_vs_student.py --teacher base --student tiny.en \
        --data /work/shared/data/real-speech --repeats 3

Both models run in one process, interleaved batch by batch (whisperkd.evaluate.runner), so that a noisy
machine slows both alike. Prints one block per set and leaves metrics.json / metrics.md / utterances.jsonl
in --out. Figures measured this way are in docs/evaluation.md.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from whisperkd.cli import quiet_libraries, show_progress
from whisperkd.errors import UserError
from whisperkd.evaluate.runner import evaluate_models


def _fmt(value, spec: str, suffix: str = "") -> str:
    return "n/a" if value is None else format(value, spec) + suffix


def summary(metrics: dict) -> str:
    """Teacher-vs-student lines for every set of a two-model metrics dictionary."""
    lines = []
    by_set: dict[str, list[dict]] = {}
    for r in metrics["results"]:
        by_set.setdefault(r["set"], []).append(r)
    mach = metrics["machine"]
    lines.append(f"machine: {mach['cpu']}, {mach['usable_cpus']} usable CPUs, {mach['torch_threads']} torch threads, "
                 f"device {mach['device']}; batch size {metrics['settings']['batch_size']}, "
                 f"median of {metrics['settings']['repeats']} passes")
    for set_label, (teacher, student) in ((k, v[:2]) for k, v in by_set.items()):
        v, ts, ss = student["vs_reference"], teacher["speed"], student["speed"]
        lines += [
            f"{set_label}: {teacher['n']} utterances, {ts['audio_seconds']:.1f} s of audio",
            f"  teacher {teacher['model']:<12} WER {100 * teacher['wer']:6.2f} %  RTF {ts['rtf']:.3f}  "
            f"latency p50 {_fmt(ts['latency_p50_s'], '.3f', ' s')}",
            f"  student {student['model']:<12} WER {100 * student['wer']:6.2f} %  RTF {ss['rtf']:.3f}  "
            f"latency p50 {_fmt(ss['latency_p50_s'], '.3f', ' s')}",
            f"  speed-up (teacher time / student time): {_fmt(v['speedup'], '.2f', 'x')} at batch "
            f"{ss['batch_size']}, {_fmt(v['latency_speedup'], '.2f', 'x')} in latency (batch 1)",
            f"  WER difference (student - teacher): {100 * v['wer_difference']:+.2f} points; "
            f"WER ratio (student / teacher): {_fmt(v['wer_ratio'], '.2f')}",
        ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--teacher", default="base")
    p.add_argument("--student", default="tiny.en")
    p.add_argument("--data", nargs="+", default=[str(Path(__file__).resolve().parents[2] / "shared/data/real-speech")])
    p.add_argument("--out", type=Path, default=Path("bench-teacher-vs-student"))
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--limit", type=int, default=None)
    p.add_argument("--device", default=None)
    args = p.parse_args(argv)
    quiet_libraries()
    show_progress()  # evaluation progress (logging) on stderr, as the CLI shows it
    try:
        metrics = evaluate_models([args.teacher, args.student], args.data, args.out, batch_size=args.batch_size,
                                  repeats=args.repeats, limit=args.limit, device=args.device)
    except UserError as err:
        print(f"bench_teacher_vs_student: error: {err}", file=sys.stderr)
        return 2
    print(summary(metrics))
    print(f"details: {args.out / 'metrics.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
