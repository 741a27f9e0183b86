"""``whisperkd corpus synth``: build a synthetic speech corpus offline (see docs/data.md)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from whisperkd.errors import UserError

DEFAULT_VOICES = "espeak,flite,festival,piper"


def _positive(kind):
    def parse(value: str):
        number = kind(value)
        if number <= 0:
            raise argparse.ArgumentTypeError(f"must be positive, got {value}")
        return number
    return parse


def register(subparsers) -> None:
    """Add ``corpus`` (sub-commands ``synth`` and ``pack``) to the CLI."""
    corpus = subparsers.add_parser("corpus", help="build speech corpora")
    sub = corpus.add_subparsers(dest="corpus_command", metavar="SUBCOMMAND")
    sub.required = True
    synth = sub.add_parser("synth", help="synthesise a corpus from the built-in public-domain sentences",
                           description="Synthesise speech offline with espeak-ng, flite, festival and piper into "
                                       "a LibriSpeech-layout folder with manifest.jsonl.")
    synth.add_argument("--out", type=Path, required=True, help="output folder (created; existing audio is kept)")
    size = synth.add_mutually_exclusive_group(required=True)
    size.add_argument("--hours", type=_positive(float), help="about this many hours of audio")
    size.add_argument("--utterances", type=_positive(int), help="this many utterances")
    synth.add_argument("--voices", default=DEFAULT_VOICES,
                       help=f"comma-separated engine names and/or voice ids like espeak:en-gb+m3:s160:p40, "
                            f"flite:slt, festival:kal_diphone, piper:joe (default: {DEFAULT_VOICES})")
    synth.add_argument("--max-voices-per-engine", type=_positive(int), default=None,
                       help="use at most this many voices of each engine named in --voices")
    synth.add_argument("--sentences", default="austen,harvard",
                       help="built-in lists (austen, harvard) and/or text files, one sentence per line")
    synth.add_argument("--seed", type=int, default=0, help="decides voices, sentences and their pairing")
    synth.add_argument("--jobs", type=_positive(int), default=2, help="parallel synthesis processes (default 2)")
    synth.add_argument("--no-progress", action="store_true", help="no progress bar")
    synth.set_defaults(func=run_synth)
    pack = sub.add_parser("pack", help="pack short utterances into ~30-s windows (cuts the teacher's encoder cost)",
                          description="Concatenate utterances of a data source (seeded order) into windows of at most "
                                      "--max-seconds, transcripts joined by a space; writes OUT/manifest.jsonl.")
    pack.add_argument("manifest", type=Path, help="input data: manifest (.jsonl/.csv), folder with manifest.jsonl, "
                                                   "LibriSpeech tree, Kaldi data folder or HF datasets folder")
    pack.add_argument("--out", type=Path, required=True, help="output folder for the packed windows")
    pack.add_argument("--max-seconds", type=_positive(float), default=28.0, help="window length cap (default 28)")
    pack.add_argument("--gap-seconds", type=float, default=0.4, help="silence between utterances (default 0.4)")
    pack.add_argument("--seed", type=int, default=0, help="decides which utterances share a window")
    pack.add_argument("--full-windows", action="store_true",
                      help="fill every window to --max-seconds (default: a length target per window, uniform in "
                           "(0, max], so windows hold 1, 2, 3, ... utterances and the student learns to stop)")
    pack.set_defaults(func=run_pack)


def run_synth(args) -> int:
    """Synthesise the corpus and print where it is and how much was skipped."""
    from whisperkd.data.sentences import load_sentences
    from whisperkd.data.skiplog import SkipLog
    from whisperkd.data.synth import synthesize_corpus
    from whisperkd.data.voices import resolve_voices

    if args.out.exists() and not args.out.is_dir():
        raise UserError(f"--out {args.out}: exists and is not a folder")
    sentences = load_sentences(args.sentences)
    voices = resolve_voices(args.voices, seed=args.seed, max_per_engine=args.max_voices_per_engine)
    done = synthesize_corpus(args.out, sentences, voices, seed=args.seed, utterances=args.utterances,
                             hours=args.hours, jobs=args.jobs, progress=not args.no_progress)
    hours = sum(u.duration or 0 for u in done) / 3600
    speakers = len({u.speaker for u in done})
    print(f"{args.out / 'manifest.jsonl'}: {len(done)} utterances, {hours:.2f} h, {speakers} voices; "
          f"{SkipLog(args.out).summary()}")
    if not done:
        print("nothing was synthesised: see skipped.jsonl", file=sys.stderr)
        return 1
    return 0


def run_pack(args) -> int:
    """Pack the manifest and print how many windows were written."""
    from whisperkd.data.manifest import read_manifest
    from whisperkd.data.pack import pack_manifest
    from whisperkd.data.sources import open_source

    out = pack_manifest(args.manifest, args.out, args.max_seconds, args.gap_seconds, args.seed,
                        varied=not args.full_windows)
    windows = read_manifest(out)
    hours = sum(u.duration or 0 for u in windows) / 3600
    print(f"{out}: {len(windows)} windows from {len(open_source(args.manifest))} utterances, {hours:.2f} h")
    return 0
