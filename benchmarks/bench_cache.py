"""Teacher cache figures: build speed, bytes per utterance, and seconds per training step online vs cached.

Teacher base, student derived from it with 2 decoder layers (encoder frozen and shared), batch 8. One training
step = teacher outputs for the batch + student forward/backward + AdamW step, with loss CE + 0.8 KL(T=2) +
0.5 geodesic alignment of the student's last layer. Online: the teacher runs (encoder once, reused by the
student) and the KL uses the full vocabulary. Cached: the teacher outputs are read from the cache (top-k KL
with the tail bucket, float16 encoder outputs) and nothing of the teacher runs. Data loading is timed apart:
audio decode + log-mel (what online needs) vs reading labels from the cache (what cached needs).
Online and cached steps alternate so that machine noise hits both; figures are medians.

Usage: python benchmarks/bench_cache.py --data CORPUS [--utterances 48] [--steps 6] [--k 64]
Prints Markdown (docs/cache.md).
"""

from __future__ import annotations

import argparse
import copy
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import torch

from whisperkd.config import CacheConfig
from whisperkd.data.loader import make_loader
from whisperkd.data.sources import open_source
from whisperkd.distill.cache import CachedTeacher, CachePlan, build_cache, cache_loader
from whisperkd.distill.losses import alignment_loss, cross_entropy, kl_divergence, kl_divergence_topk
from whisperkd.distill.teacher import OnlineTeacher
from whisperkd.distill.teacher_batch import TeacherNeeds
from whisperkd.models.loading import load_model, load_processor
from whisperkd.models.student import build_student_from_teacher, set_trainable

T = 2.0


def train_step(student, optimizer, batch, teacher_batch, layer: int) -> float:
    out = student(encoder_outputs=(teacher_batch.encoder_hidden_states,), decoder_input_ids=batch["decoder_input_ids"],
                  decoder_attention_mask=batch["decoder_attention_mask"], output_hidden_states=True)
    labels = batch["labels"]
    if teacher_batch.logits is not None:
        kd = kl_divergence(teacher_batch.logits, out.logits, labels, T)
    else:
        kd = kl_divergence_topk(teacher_batch.topk_logprobs, teacher_batch.topk_indices, out.logits, labels, T)
    align = alignment_loss(out.decoder_hidden_states[-1], teacher_batch.hidden_states[layer], labels)
    loss = cross_entropy(out.logits, labels) + 0.8 * kd + 0.5 * align
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return loss.item()


def timed(fn):
    start = time.perf_counter()
    value = fn()
    return time.perf_counter() - start, value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help="speech manifest or corpus folder")
    parser.add_argument("--teacher", default="base")
    parser.add_argument("--student-layers", type=int, default=2)
    parser.add_argument("--utterances", type=int, default=48)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--steps", type=int, default=6, help="timed steps of each kind (after one warm-up)")
    parser.add_argument("--k", type=int, default=0, help="top-k also stored (default 0: the default cache)")
    parser.add_argument("--cache-dir", type=Path, default=None, help="default: a temporary folder")
    args = parser.parse_args()
    torch.manual_seed(0)
    utts = list(open_source(args.data).utterances)[: args.utterances]
    teacher, processor = load_model(args.teacher), load_processor(args.teacher)
    teacher.requires_grad_(False)
    student = build_student_from_teacher(teacher, args.student_layers)
    set_trainable(student, train_decoder=True)
    layer = student.config.whisperkd["decoder_layers_kept"][-1]
    needs = TeacherNeeds(hidden_layers=(layer,), encoder=True)
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores (shared with other jobs), "
          f"torch {torch.__version__}, threads {torch.get_num_threads()}; teacher {args.teacher}, student "
          f"{args.student_layers} decoder layers {student.config.whisperkd['decoder_layers_kept']}, batch "
          f"{args.batch_size}, k {args.k}, T {T:g}; {len(utts)} utterances")

    with tempfile.TemporaryDirectory() as tmp:
        cache_dir = args.cache_dir or Path(tmp) / "cache"
        cache = CacheConfig(topk=args.k, batch_size=args.batch_size)
        plan = CachePlan(temperature=T)  # all decoder layers, encoder outputs, the default data filters
        seconds, report = timed(lambda: build_cache(teacher, processor, {"train": utts}, cache_dir, cache, plan,
                                                    on_stale="rebuild", progress=False))
        print(f"\ncache build: {report.summary()}")
        print(f"build speed: {report.utterances_per_second:.2f} utterances/s ({seconds:.1f} s with key hashing)")
        parts = ", ".join(f"{k} {v / 1e3:.1f} kB" for k, v in sorted(report.parts_bytes.items()))
        print(f"bytes per utterance: {report.bytes_per_utterance / 1e6:.3f} MB ({parts}); all {teacher.config.decoder_layers}"
              f" decoder layers stored")

        load_online, audio_batches = timed(lambda: list(make_loader(utts, processor, batch_size=args.batch_size,
                                                                    shuffle=False, num_workers=0)))
        load_cached, cached_batches = timed(lambda: list(cache_loader(cache_dir, utts, batch_size=args.batch_size,
                                                                      shuffle=False)))
        online_teacher = OnlineTeacher(teacher, TeacherNeeds(hidden_layers=(layer,), encoder=True))
        cached_teacher = CachedTeacher(cache_dir, "train", needs, temperature=T)
        students = {kind: copy.deepcopy(student).train() for kind in ("online", "cached")}
        optimizers = {kind: torch.optim.AdamW([p for p in s.parameters() if p.requires_grad], lr=1e-5)
                      for kind, s in students.items()}
        times: dict[str, list[float]] = {"online": [], "cached": [], "online teacher": [], "cache read": []}
        for i in range(args.steps + 1):
            b = i % len(audio_batches)
            for kind in ("online", "cached"):
                batch = audio_batches[b] if kind == "online" else cached_batches[b]
                source = online_teacher if kind == "online" else cached_teacher
                start = time.perf_counter()
                teacher_batch = source(batch)
                middle = time.perf_counter()
                train_step(students[kind], optimizers[kind], batch, teacher_batch, layer)
                end = time.perf_counter()
                if i:  # the first round warms up
                    times[kind].append(end - start)
                    times["online teacher" if kind == "online" else "cache read"].append(middle - start)
    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"\n| per training step (median of {args.steps}) | online | cached |")
    print("|---|---|---|")
    print(f"| teacher outputs (s) | {med['online teacher']:.3f} | {med['cache read']:.3f} |")
    print(f"| whole step (s) | {med['online']:.3f} | {med['cached']:.3f} |")
    print(f"| speed-up | | {med['online'] / med['cached']:.1f}x |")
    n_batches = len(audio_batches)
    print(f"| data loading per batch (s) | {load_online / n_batches:.3f} (audio + log-mel) | "
          f"{load_cached / n_batches:.4f} (labels from the cache) |")
    print(f"\nall step times (s): online {[round(t, 2) for t in times['online']]}, "
          f"cached {[round(t, 2) for t in times['cached']]}")


if __name__ == "__main__":
    main()
