"""``whisperkd label MODEL --data SRC --out MANIFEST [--max-wer 0.1]``: pseudo-label audio with a teacher."""

from __future__ import annotations

from pathlib import Path

from whisperkd.errors import UserError


def register(sub) -> None:
    p = sub.add_parser(
        "label", help="transcribe training audio with the teacher into a pseudo-labelled manifest",
        description="Transcribe every utterance of a data source with MODEL (greedy, batched, English) and write a "
                    "manifest whose text is the transcript; the ground truth is kept as text_original. With "
                    "--max-wer, utterances whose normalised WER against the ground truth is above the threshold are "
                    "dropped (distil-whisper's filter). See docs/cache.md.")
    p.add_argument("model", help="tiny.en, base, an HF Whisper directory, a run folder or a hub id")
    p.add_argument("--data", required=True, help="manifest (.jsonl/.csv), folder with manifest.jsonl, LibriSpeech "
                                                 "tree, Kaldi data folder (wav.scp + text) or HF datasets folder")
    p.add_argument("--out", type=Path, required=True, help="the pseudo-labelled manifest to write (.jsonl)")
    p.add_argument("--max-wer", type=float, default=None,
                   help="drop utterances whose normalised WER exceeds this fraction (e.g. 0.1); default: keep all")
    p.add_argument("--split", default=None, help="split of a Hugging Face DatasetDict folder")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--limit", type=int, default=None, help="only the first N utterances")
    p.add_argument("--device", default=None, help="cpu, cuda or cuda:N (default: cuda when available)")
    p.add_argument("--encoder-window", default=None, metavar="auto|SECONDS",
                   help="encoder window: seconds, auto (per utterance, the shortest multiple of 5 s that holds it) or off (30 s); "
                        "default: the window the model was trained for, else 30 s")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args) -> int:
    import torch

    from whisperkd.data.skiplog import SkipLog
    from whisperkd.data.sources import open_source
    from whisperkd.models.loading import load_model, load_processor
    from whisperkd.data.pseudo_label import pseudo_label, write_labelled_manifest
    from whisperkd.models.window import window_option

    if args.out.suffix.lower() != ".jsonl":
        raise UserError(f"--out {args.out}: write a .jsonl manifest (it keeps text_original and wer per line)")
    if args.max_wer is not None and args.max_wer < 0:
        raise UserError(f"--max-wer: got {args.max_wer}; use a fraction such as 0.1")
    if args.limit is not None and args.limit < 1:
        raise UserError("--limit must be at least 1")
    window = window_option(args.encoder_window)
    source = open_source(args.data, split=args.split)
    utterances = list(source.utterances[: args.limit] if args.limit else source.utterances)
    if not utterances:
        raise UserError(f"{args.data}: no utterances")
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    dtype = torch.float16 if torch.device(device).type == "cuda" else torch.float32
    model, processor = load_model(args.model, dtype=dtype, device=device), load_processor(args.model)
    out = args.out.absolute()
    skiplog = SkipLog(out.parent, reset=True, filename=f"{out.stem}.skipped.jsonl")
    report = pseudo_label(model, processor, utterances, batch_size=args.batch_size, max_wer=args.max_wer,
                          skiplog=skiplog, audio_dir=out.parent / f"{out.stem}_audio",
                          progress=not args.no_progress, model_name=str(args.model), window=window)
    report.out = write_labelled_manifest(out, report.rows)
    print(report.summary())
    if report.dropped_wer or report.dropped_empty or report.skipped_audio:
        print(f"details of dropped and skipped utterances: {skiplog.path}")
    if not report.rows:
        print("no utterance kept", flush=True)
        return 1
    return 0
