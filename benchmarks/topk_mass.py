"""How much of the teacher's probability a top-k cache keeps, and how far the cached KL is from the full KL.

On real teacher outputs (default: base, teacher forcing on the labels of a speech manifest) with a student
derived from the teacher (2 decoder layers, maximally spaced, encoder shared), untrained and after a few
steps of decoder training, for T = 1 and 2 and k = 8 ... 256:

- the top-k mass: mean over tokens of sum_{v in top-k} softmax(z/T)_v (and its 10th percentile);
- KL from the top-k with the tail bucket (what training on the cache computes), with the tail dropped
  ("naive": sum over the top k only) and renormalised over the top k, each against the full-vocabulary KL
  (docs/losses.md), as a relative difference (KL_k - KL_full) / KL_full over all tokens of held-out utterances.

Usage: python benchmarks/topk_mass.py --data CORPUS [--teacher base] [--utterances 48] [--train-steps 40]
       [--json out.json]. Without --data a small espeak-ng/flite corpus is synthesised in a temporary folder.
Prints Markdown tables (docs/cache.md).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from whisperkd.data.collate import IGNORE_INDEX
from whisperkd.data.loader import make_loader
from whisperkd.data.sources import open_source
from whisperkd.distill.losses import cross_entropy, kl_divergence, kl_divergence_topk
from whisperkd.models.loading import load_model, load_processor
from whisperkd.models.student import build_student_from_teacher, set_trainable

KS = (8, 16, 32, 64, 128, 256, 1024, 4096, 16384)
TEMPERATURES = (1.0, 2.0)


def synth_corpus(out: Path, n: int) -> Path:
    from whisperkd.data.sentences import load_sentences
    from whisperkd.data.synth import synthesize_corpus
    from whisperkd.data.voices import resolve_voices

    voices = resolve_voices("espeak,flite", seed=3, max_per_engine=4)
    synthesize_corpus(out, load_sentences("austen,harvard"), voices, seed=3, utterances=n, jobs=1, progress=False)
    return out


@torch.no_grad()
def teacher_batches(teacher, loader) -> list[dict]:
    """Each batch with the teacher's encoder output and full logits (float32)."""
    out = []
    for batch in loader:
        encoded = teacher.model.encoder(batch["input_features"]).last_hidden_state
        result = teacher(encoder_outputs=(encoded,), decoder_input_ids=batch["decoder_input_ids"],
                         output_hidden_states=True)
        out.append({**batch, "encoded": encoded, "teacher_logits": result.logits.float(),
                    "final_state": result.decoder_hidden_states[-1].float()})
    return out


def student_logits(student, batch) -> torch.Tensor:
    return student(encoder_outputs=(batch["encoded"],), decoder_input_ids=batch["decoder_input_ids"]).logits


def light_training(student, batches: list[dict], steps: int, temperature: float, lr: float = 1e-4) -> list[float]:
    """A few AdamW steps on the student decoder (CE + KL at T, full logits); returns the losses."""
    set_trainable(student, train_encoder=False, train_decoder=True, train_embeddings=False)
    params = [p for p in student.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=lr)
    student.train()
    losses = []
    for step in range(steps):
        batch = batches[step % len(batches)]
        logits = student_logits(student, batch)
        loss = cross_entropy(logits, batch["labels"]) + kl_divergence(batch["teacher_logits"], logits, batch["labels"],
                                                                      temperature)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(loss.item())
    student.eval()
    return losses


@torch.no_grad()
def measure(student, batches: list[dict], temperature: float, projection: torch.Tensor) -> dict:
    """Top-k mass and the relative KL differences over all counted tokens of ``batches``; also the KL from
    logits rebuilt out of the teacher's final decoder state (what the cache stores) in float32 and float16."""
    masses: dict[int, list[torch.Tensor]] = {k: [] for k in KS}
    sums = {"full": 0.0, "state32": 0.0, "state16": 0.0,
            **{f"{kind}{k}": 0.0 for k in KS for kind in ("bucket", "naive", "renorm")}}
    tokens = 0
    for batch in batches:
        labels = batch["labels"]
        mask = labels != IGNORE_INDEX
        n = int(mask.sum())
        z, s = batch["teacher_logits"], student_logits(student, batch).float()
        log_p = F.log_softmax(z / temperature, dim=-1)
        sums["full"] += float(kl_divergence(z, s, labels, temperature)) * n
        for name, dtype in (("state32", torch.float32), ("state16", torch.float16)):
            rebuilt = batch["final_state"].to(dtype).float() @ projection.T
            sums[name] += float(kl_divergence(rebuilt, s, labels, temperature)) * n
        log_q = F.log_softmax(s / temperature, dim=-1)
        for k in KS:
            top_lp, top_i = log_p.topk(k, dim=-1)
            masses[k].append(top_lp.exp().sum(-1)[mask])
            sums[f"bucket{k}"] += float(kl_divergence_topk(top_lp, top_i, s, labels, temperature)) * n
            sums[f"renorm{k}"] += float(kl_divergence_topk(top_lp, top_i, s, labels, temperature,
                                                           tail="renormalize")) * n
            naive = (top_lp.exp() * (top_lp - log_q.gather(-1, top_i))).sum(-1)
            sums[f"naive{k}"] += float(naive[mask].sum()) * temperature**2
        tokens += n
    full = sums["full"] / tokens
    result = {"temperature": temperature, "tokens": tokens, "kl_full": full, "k": {},
              "state32_rel": (sums["state32"] / tokens - full) / full,
              "state16_rel": (sums["state16"] / tokens - full) / full}
    for k in KS:
        m = torch.cat(masses[k])
        result["k"][k] = {
            "mass_mean": float(m.mean()), "mass_p10": float(m.quantile(0.1)),
            **{f"{kind}_rel": (sums[f"{kind}{k}"] / tokens - full) / full for kind in ("bucket", "naive", "renorm")},
        }
    return result


def table(results: list[dict], label: str) -> str:
    lines = [f"\n**{label}**\n",
             "| T | k | top-k mass (mean) | mass (10th pct) | bucket KL vs full | naive top-k KL vs full | renormalised vs full |",
             "|---|---|---|---|---|---|---|"]
    for r in results:
        for k, v in r["k"].items():
            lines.append(f"| {r['temperature']:g} | {k} | {100 * v['mass_mean']:.1f}% | {100 * v['mass_p10']:.1f}% | "
                         f"{100 * v['bucket_rel']:+.3f}% | {100 * v['naive_rel']:+.1f}% | {100 * v['renorm_rel']:+.1f}% |")
        lines.append(f"| {r['temperature']:g} | full KL | {r['kl_full']:.4f} over {r['tokens']} tokens | | | | |")
        lines.append(f"| {r['temperature']:g} | all (logits = final state x output projection) | 100% | 100% | "
                     f"float32 state {100 * r['state32_rel']:+.5f}%, float16 state {100 * r['state16_rel']:+.4f}% | | |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=None, help="speech manifest or corpus folder")
    parser.add_argument("--teacher", default="base")
    parser.add_argument("--student-layers", type=int, default=2)
    parser.add_argument("--utterances", type=int, default=48, help="measured (held-out) utterances")
    parser.add_argument("--train-utterances", type=int, default=64)
    parser.add_argument("--train-steps", type=int, default=40)
    parser.add_argument("--train-temperature", type=float, default=2.0)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    torch.manual_seed(0)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        data = args.data or synth_corpus(Path(tmp) / "corpus", args.utterances + args.train_utterances)
        utterances = list(open_source(data).utterances)
        held_out = utterances[: args.utterances]
        train = utterances[args.utterances: args.utterances + args.train_utterances]
        teacher, processor = load_model(args.teacher), load_processor(args.teacher)
        teacher.requires_grad_(False)
        loader = lambda utts: make_loader(utts, processor, batch_size=args.batch_size, shuffle=False,  # noqa: E731
                                          num_workers=0)
        measured = teacher_batches(teacher, loader(held_out))
        student = build_student_from_teacher(teacher, args.student_layers).eval()
        projection = teacher.proj_out.weight.detach().float()
        untrained = [measure(student, measured, t, projection) for t in TEMPERATURES]
        trained, losses = None, []
        if args.train_steps and train:
            losses = light_training(student, teacher_batches(teacher, loader(train)), args.train_steps,
                                    args.train_temperature)
            trained = [measure(student, measured, t, projection) for t in TEMPERATURES]
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch threads "
          f"{torch.get_num_threads()}; teacher {args.teacher}, student {args.student_layers} decoder layers "
          f"{student.config.whisperkd['decoder_layers_kept']}; {len(held_out)} held-out utterances "
          f"({untrained[0]['tokens']} tokens); {time.perf_counter() - start:.0f} s")
    print(table(untrained, "untrained student"))
    if trained:
        print(f"\nlight training: {args.train_steps} steps, batch {args.batch_size}, CE + KL(T="
              f"{args.train_temperature:g}), lr 1e-4, on {len(train)} other utterances; loss "
              f"{losses[0]:.3f} -> {losses[-1]:.3f}")
        print(table(trained, "lightly trained student"))
    if args.json:
        args.json.write_text(json.dumps({"untrained": untrained, "trained": trained, "losses": losses}, indent=1))


if __name__ == "__main__":
    main()
