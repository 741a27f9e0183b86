"""``whisperkd export SOURCE --format hf|ct2 --out DIR``: a student (or any Whisper) as a verified Hugging Face or
CTranslate2 (faster-whisper) folder with a model card."""

from __future__ import annotations

import sys
from pathlib import Path

QUANTIZATION_CHOICES = ("float32", "float16", "int8", "int8_float32")


def register(sub) -> None:
    p = sub.add_parser("export", help="export a student to Hugging Face or CTranslate2 (faster-whisper), verified",
                       description="Export a run's student (LoRA merged, projector left out), an HF Whisper directory "
                                   "or an offline name to a folder in the Hugging Face or CTranslate2 format, with its "
                                   "processor, its encoder window and a model card (README.md). The export is "
                                   "verified on sample clips (whisperkd_export.json): transcripts identical to the "
                                   "source's for float32, the WER difference reported for quantised weights.")
    p.add_argument("source", metavar="SOURCE", help="a run folder, an HF Whisper directory or tiny.en / base")
    p.add_argument("--format", dest="fmt", choices=("hf", "ct2"), required=True,
                   help="hf: transformers (pipeline, from_pretrained); ct2: CTranslate2 (faster-whisper)")
    p.add_argument("--out", type=Path, required=True, help="the output folder (written atomically)")
    p.add_argument("--quantization", choices=QUANTIZATION_CHOICES, default=None,
                   help="weights: hf float32 (default) or float16; ct2 int8 (default), int8_float32, float16 or "
                        "float32")
    p.add_argument("--verify-clips", default=None, metavar="DIR|none",
                   help="clips to verify the export on: a folder with manifest.jsonl (or any data source "
                        "`whisperkd evaluate` reads); default: the six real recordings shipped with whisperkd; "
                        "none: no verification")
    p.add_argument("--force", action="store_true", help="replace a non-empty --out")
    p.set_defaults(func=run)


def run(args) -> int:
    from transformers.utils import logging as transformers_logging

    from whisperkd.deploy.export import VerificationFailed, export_model

    transformers_logging.disable_progress_bar()  # not a bar per weight load and save: our progress lines suffice
    skip = args.verify_clips is not None and args.verify_clips.lower() == "none"
    try:
        report = export_model(args.source, args.fmt, args.out, quantization=args.quantization,
                              verify_clips=None if skip else args.verify_clips, verify_export=not skip,
                              force=args.force)
    except VerificationFailed as err:
        print(f"whisperkd export: error: {err}", file=sys.stderr)
        return 1
    export, v = report["export"], report["verification"]
    size = sum(export["files"].values()) / 2**20
    print(f"wrote {args.out} ({export['format']} {export['quantization']}, {size:.1f} MB): model, processor, "
          f"whisperkd_export.json, README.md")
    if v is None:
        print("not verified (--verify-clips none)")
    else:
        print(f"verified on {v['utterances']} clips: {v['identical']}/{v['utterances']} transcripts identical to the "
              f"source's; WER {100 * v['source_wer']:.2f} % -> {100 * v['export_wer']:.2f} % "
              f"({100 * v['wer_difference']:+.2f} points)" + ("" if v["lossless"] else " (quantised: reported)"))
    return 0
