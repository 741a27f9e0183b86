"""``whisperkd demo [--size full|quick|large | --quick]``: the offline demo end to end (see whisperkd.demo)."""

from __future__ import annotations

from pathlib import Path

from whisperkd.demo_settings import DEFAULT_CONFIG, REAL_SPEECH, SIZES


def register(sub) -> None:
    p = sub.add_parser("demo", help="offline demo: corpus, teacher cache, distillation, evaluation, report")
    p.add_argument("--config", type=Path, default=None,
                   help="default: the packaged demo config (the same as the repository's configs/demo.yaml)")
    p.add_argument("--size", choices=tuple(SIZES), default="full",
                   help="full (default, < 1 h), quick (CI, a few minutes) or large (the quality benchmark, ~70 min)")
    p.add_argument("--quick", dest="size", action="store_const", const="quick", help="= --size quick")
    p.add_argument("--workdir", type=Path, default=Path("runs/demo"))
    p.add_argument("--real-speech", type=Path, default=None,
                   help="folder with manifest.jsonl of real clips (default: the six packaged public-domain clips)")
    p.add_argument("--real-corpus", default=None, metavar="DIR|none",
                   help="real speech for training and dev: a folder with train/ and dev/ data sources (default: "
                        "$WHISPERKD_REAL_CORPUS, else ../shared/data/speechocean762 when present); none: synthetic only")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("overrides", nargs="*", help="dotted config overrides, e.g. train.max_steps=400")
    p.set_defaults(func=run)


def run(args) -> int:
    from whisperkd.demo import run_demo  # the whole pipeline: imported only when the demo runs

    run_demo(args.config or DEFAULT_CONFIG, args.size, args.workdir, args.seed,
             args.real_speech or REAL_SPEECH, tuple(args.overrides), args.real_corpus)
    return 0
