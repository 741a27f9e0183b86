"""Where the time of one transcription goes, teacher against student: features, encoder, decoding.

    python benchmarks/bench_time_split.py --models base runs/demo/full/run --data runs/demo/full/corpus/test

Batch size 1, greedy, the same token cap as ``whisperkd evaluate``; per utterance the median of --repeats
timed calls after one untimed warm-up. Decoding = generate() on precomputed features minus the encoder pass.
Prints seconds per utterance of each part and tokens per second of the decoder; speed-ups are against the first
model at 30 s. ``--encoder-window auto`` adds every model again with a shorter encoder window.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

from whisperkd.cli import quiet_libraries
from whisperkd.evaluate.runner import load_set
from whisperkd.models.loading import load_model, load_processor
from whisperkd.models.window import encoder_window, resolve_window
from whisperkd.models.decode import SAMPLE_RATE, generate_kwargs, max_new_tokens_for


def _median_seconds(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


@torch.inference_mode()
def split(spec: str, audios: list, repeats: int, window: str | None = None) -> dict:
    """Mean seconds per utterance of features, encoder and decoding, and decoded tokens per utterance;
    ``window="auto"``: the encoder runs on the shortest multiple of 5 s holding the audio."""
    model, processor = load_model(spec), load_processor(spec)
    kwargs = generate_kwargs(model)
    parts = {"features": [], "encoder": [], "decoding": [], "tokens": []}
    for n, audio in enumerate(audios):
        feats = lambda: processor.feature_extractor([audio], sampling_rate=SAMPLE_RATE, return_tensors="pt").input_features  # noqa: E731
        cap = max_new_tokens_for(len(audio) / SAMPLE_RATE)
        with encoder_window(model, resolve_window(model, window).for_audio(len(audio) / SAMPLE_RATE)) as frames:
            x = feats()[..., :frames]
            gen = lambda: model.generate(x, max_new_tokens=cap, **kwargs)  # noqa: E731
            if n == 0:
                gen()
            parts["features"].append(_median_seconds(feats, repeats))
            parts["encoder"].append(_median_seconds(lambda: model.model.encoder(x), repeats))
            total = _median_seconds(gen, repeats)
            parts["decoding"].append(max(0.0, total - parts["encoder"][-1]))
            parts["tokens"].append(int(gen().shape[-1]))
    out = {k: statistics.mean(v) for k, v in parts.items()}
    out["decoder_layers"] = model.config.decoder_layers
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", required=True, help="teacher first, then students")
    parser.add_argument("--data", type=Path, required=True, help="a manifest or folder whisperkd evaluate reads")
    parser.add_argument("--limit", type=int, default=12, help="utterances to time")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--encoder-window", choices=["auto"], default=None,
                        help="also time every model with the encoder on the shortest multiple of 5 s")
    args = parser.parse_args(argv)
    quiet_libraries()
    from whisperkd.data.skiplog import SkipLog

    ev = load_set(args.data, args.limit, SkipLog(None))
    print(f"{len(ev.audios)} utterances of {args.data}, batch size 1, {torch.get_num_threads()} torch threads")
    print("| model | decoder layers | features | encoder | decoding | tokens/utt | decoder ms/token | total | speed-up |")
    print("|---|---|---|---|---|---|---|---|---|")
    reference = None
    windows = [None] + ([args.encoder_window] if args.encoder_window else [])
    for window, spec in ((w, m) for w in windows for m in args.models):
        s = split(spec, ev.audios, args.repeats, window)
        total = s["features"] + s["encoder"] + s["decoding"]
        reference = reference or total
        name = spec + (f", window {window}" if window else "")
        print(f"| {name} | {s['decoder_layers']} | {s['features']:.3f} s | {s['encoder']:.3f} s | {s['decoding']:.3f} s "
              f"| {s['tokens']:.1f} | {1000 * s['decoding'] / max(s['tokens'], 1):.1f} | {total:.3f} s "
              f"| {reference / total:.2f}x |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
