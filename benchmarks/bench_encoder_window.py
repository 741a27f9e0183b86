"""How much a shorter encoder window would save, and what it costs a frozen teacher that never saw one.

    python benchmarks/bench_encoder_window.py --model base --data runs/demo/full/corpus/test --windows 30 20 15 10

Whisper's encoder always runs on 30 s (1,500 positions), whatever the length of the speech: on CPU it is
half of the teacher's time for a short utterance (benchmarks/bench_time_split.py). A model whose config says
``max_source_positions = 50 * W`` (the first 50·W rows of the position table kept) and whose feature extractor
pads to ``chunk_length = W`` is a plain HF Whisper with a W-second window. For every W this prints the encoder
seconds of one window (batch 1, median of --repeats) and the untrained model's greedy WER on the utterances
that fit in the smallest window: the price of the shorter window before any training.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import time
from pathlib import Path

import torch
from transformers import WhisperFeatureExtractor

from whisperkd.cli import quiet_libraries
from whisperkd.data.skiplog import SkipLog
from whisperkd.text import wer
from whisperkd.text import normalize
from whisperkd.evaluate.runner import load_set
from whisperkd.models.loading import load_model, load_processor
from whisperkd.models.decode import SAMPLE_RATE, transcribe_arrays


def with_window(model, processor, seconds: int):
    """A copy of ``model`` and ``processor`` whose encoder window is ``seconds`` long (at most 30)."""
    positions = 50 * seconds
    short = copy.deepcopy(model)
    encoder = short.model.encoder
    if positions > encoder.embed_positions.num_embeddings:
        raise SystemExit(f"--windows: {seconds} s is longer than the model's {encoder.embed_positions.num_embeddings // 50} s")
    table = encoder.embed_positions.weight.data[:positions].clone()
    encoder.embed_positions = torch.nn.Embedding(positions, table.shape[1])
    encoder.embed_positions.weight.data.copy_(table)
    encoder.embed_positions.requires_grad_(False)
    short.config.max_source_positions = encoder.config.max_source_positions = positions
    proc = copy.deepcopy(processor)
    proc.feature_extractor = WhisperFeatureExtractor(feature_size=model.config.num_mel_bins, chunk_length=seconds)
    return short, proc


@torch.inference_mode()
def encoder_seconds(model, processor, audio, repeats: int) -> float:
    feats = processor.feature_extractor([audio], sampling_rate=SAMPLE_RATE, return_tensors="pt").input_features
    model.model.encoder(feats)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        model.model.encoder(feats)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="base")
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--windows", type=int, nargs="+", default=[30, 20, 15, 10])
    parser.add_argument("--limit", type=int, default=40)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    quiet_libraries()
    model, processor = load_model(args.model), load_processor(args.model)
    ev = load_set(args.data, None, SkipLog(None))
    fits = min(args.windows) - 0.5
    pairs = [(u, a) for u, a in zip(ev.utterances, ev.audios) if len(a) / SAMPLE_RATE <= fits][: args.limit]
    refs = [normalize(u.text) for u, _ in pairs]
    audios = [a for _, a in pairs]
    print(f"{args.model}: {len(audios)} utterances of {args.data} no longer than {fits:g} s; "
          f"{torch.get_num_threads()} torch threads")
    print(f"| window | encoder, one window (batch 1) | vs {args.windows[0]} s | WER, no training |")
    print("|---|---|---|---|")
    base_time = None
    for seconds in args.windows:
        short, proc = with_window(model, processor, seconds)
        enc = encoder_seconds(short, proc, audios[0], args.repeats)
        base_time = base_time or enc
        hyps = transcribe_arrays(short, proc, audios, batch_size=8)
        print(f"| {seconds} s | {enc:.3f} s | {base_time / enc:.2f}x | {100 * wer(refs, [normalize(h) for h in hyps]):.1f} % |",
              flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
