"""``whisperkd evaluate MODEL... --data SET...``: WER/CER, speed and memory of models, measured side by side."""

from __future__ import annotations

from pathlib import Path

from whisperkd.errors import UserError
from whisperkd.models.run_folder import run_folder

DTYPES = ("float32", "float16", "bfloat16")


def register(sub) -> None:
    p = sub.add_parser("evaluate", help="WER/CER, speed (RTF, latency, throughput) and memory of Whisper models",
                       description="Evaluate one or more models on one or more data sets in one process, interleaved, "
                                   "so that speed ratios are fair. Writes metrics.json, metrics.md, utterances.jsonl.")
    p.add_argument("models", nargs="+", metavar="MODEL",
                   help="tiny.en, base, an HF Whisper directory, a run folder, a CTranslate2 directory (model.bin) "
                        "or a hub id; the first is the reference for speed-up and WER difference")
    p.add_argument("--data", nargs="+", required=True, metavar="SET",
                   help="manifest (.jsonl/.csv), folder with manifest.jsonl, LibriSpeech tree, Kaldi data folder "
                        "(wav.scp + text) or HF datasets folder")
    p.add_argument("--out", type=Path, default=None,
                   help="output folder (default: RUN/report of the first run folder among MODEL, else ./evaluation)")
    p.add_argument("--batch-size", type=int, default=8, help="batch size of the timed passes (default 8)")
    p.add_argument("--repeats", type=int, default=3, help="timed passes; speeds are their median (default 3)")
    p.add_argument("--limit", type=int, default=None, help="use only the first N usable utterances of each set")
    p.add_argument("--device", default=None, help="cpu, cuda or cuda:N (default: cuda when available)")
    p.add_argument("--dtype", choices=DTYPES, default=None,
                   help="weights of HF models (default: float32 on CPU, float16 on CUDA)")
    p.add_argument("--no-latency", dest="latency", action="store_false",
                   help="skip the batch-size-1 latency pass (it costs one more pass per repeat)")
    p.add_argument("--loop-guard", action="store_true",
                   help="cut a transcript where a word 4-gram starts for the 3rd time (repetition loops)")
    p.add_argument("--fallback", action="store_true",
                   help="HF models: Whisper's temperature fallback (decode again, sampling at 0.2 ... 1.0, the "
                        "utterances whose greedy decode compresses too well or is too unlikely); default: greedy")
    p.add_argument("--encoder-window", default=None, metavar="auto|SECONDS",
                   help="encoder window (HF and CTranslate2 models): seconds, auto (per utterance, the shortest multiple of 5 s that "
                        "holds it) or off (30 s); default: the window each model was trained for, else 30 s")
    p.set_defaults(func=run)


def default_out(models: list[str]) -> Path:
    for spec in models:
        run = run_folder(spec)
        if run is not None:
            return run / "report"
    return Path("evaluation")


def run(args) -> int:
    import torch

    from whisperkd.evaluate.runner import evaluate_models
    from whisperkd.evaluate.tables import metrics_markdown
    from whisperkd.models.decode import Fallback
    from whisperkd.models.window import window_option

    if args.batch_size < 1 or args.repeats < 1 or (args.limit is not None and args.limit < 1):
        raise UserError("--batch-size, --repeats and --limit must be at least 1")
    window = window_option(args.encoder_window)
    out = args.out or default_out(args.models)
    dtype = getattr(torch, args.dtype) if args.dtype else None
    metrics = evaluate_models(args.models, args.data, out, batch_size=args.batch_size, repeats=args.repeats,
                              limit=args.limit, device=args.device, dtype=dtype, latency=args.latency,
                              loop_guard=args.loop_guard, encoder_window=window,
                              fallback=Fallback() if args.fallback else None)
    print(metrics_markdown(metrics))
    print(f"wrote {out / 'metrics.json'}, {out / 'metrics.md'}, {out / 'utterances.jsonl'}")
    return 0
