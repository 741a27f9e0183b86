"""``whisperkd distill CONFIG [key=value ...]``: distil a Whisper teacher into a smaller student (docs/distill.md).

    whisperkd distill configs/tiny-en-2layer.yaml optim.lr=1e-4 student.decoder_layers=[0,3]
    whisperkd distill configs/large-v2-4layer-lora.yaml --dry-run
    whisperkd distill --resume runs/tiny-en-2layer
"""

from __future__ import annotations

import argparse
from pathlib import Path

from whisperkd.errors import UserError


def register(sub) -> None:
    p = sub.add_parser("distill", intermixed=True, help="distil a Whisper teacher into a smaller student",
                       description="Train a student from a frozen teacher as the YAML config says; dotted "
                                   "key=value overrides (e.g. optim.lr=1e-4) follow the config file. Options may "
                                   "come anywhere among them.",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dry-run", action="store_true",
                   help="size teacher and student on the meta device (no weights, no download) and exit")
    p.add_argument("--resume", type=Path, metavar="RUN_DIR",
                   help="continue the run in RUN_DIR from its last checkpoint (config from training_config.json)")
    p.add_argument("--print-config", action="store_true", help="print the resolved config as YAML and exit")
    p.add_argument("config", nargs="?", metavar="CONFIG", help="the YAML config")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                   help="overrides such as optim.lr=1e-4 student.decoder_layers=[0,3]")
    p.set_defaults(func=run)


def _parse_items(args) -> tuple[str | None, list[str]]:
    """(config path, overrides); a first item with ``=`` is an override (no config given)."""
    if args.config is not None and "=" in args.config:
        return None, [args.config, *args.overrides]
    return args.config, list(args.overrides)


def run(args) -> int:
    import yaml

    from whisperkd.config import load_config

    config_path, overrides = _parse_items(args)
    if args.resume is not None:
        if config_path is not None or overrides:
            raise UserError("--resume RUN_DIR takes no config or overrides: a resumed run continues exactly as it "
                            "started (edit nothing, or start a new run from RUN_DIR/training_config.json)")
        if args.dry_run:
            raise UserError("--resume and --dry-run do not go together")
        from whisperkd.distill.runfolder import load_run_config

        cfg = load_run_config(args.resume)
    else:
        if config_path is None:
            raise UserError("give a config file (e.g. configs/tiny-en-2layer.yaml) or --resume RUN_DIR")
        cfg = load_config(config_path, overrides)
    if args.print_config:
        print(yaml.safe_dump(cfg.to_dict(), sort_keys=False), end="")
        return 0
    if args.dry_run:
        from whisperkd.distill.dry_run import dry_run_report

        print(f"dry run of {config_path}{' ' + ' '.join(overrides) if overrides else ''} "
              "(meta device: no weights loaded, nothing downloaded)")
        print(dry_run_report(cfg))
        return 0
    from whisperkd.distill.trainer import train

    result = train(cfg, resume=args.resume is not None)
    evals = result.history.get("evals", [])
    if evals and "wer" in evals[-1]:
        first, last = evals[0], evals[-1]
        print(f"dev WER {100 * first['wer']:.1f}% at step {first['step']} -> {100 * last['wer']:.1f}% at step "
              f"{last['step']}; dev loss {first['dev_loss']:.4f} -> {last['dev_loss']:.4f}")
    if result.best:
        print(f"final student = best dev {result.best['kind']} ({result.best['metric']:.4f}) at step "
              f"{result.best['step']}")
    print(f"{result.run_dir}: student_final/ (plain HF Whisper), adapter_final/, checkpoint/, training_history.json")
    return 0
