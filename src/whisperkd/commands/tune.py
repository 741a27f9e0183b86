"""``whisperkd tune CONFIG --trials N [--storage URL] [--study NAME] [KEY=VALUE ...]`` (docs/tuning.md).

    whisperkd tune configs/tiny-en-2layer.yaml --trials 20
    whisperkd tune configs/tiny-en-2layer.yaml --trials 40 --storage postgresql://tune@db-host/whisperkd  # each machine
    whisperkd tune configs/tiny-en-2layer.yaml --trials 20 tune.objective=dev_ce train.max_steps=200
"""

from __future__ import annotations

from whisperkd.errors import UserError


def register(sub) -> None:
    p = sub.add_parser("tune", intermixed=True,
                       help="search distillation hyperparameters with Optuna over one teacher cache",
                       description="Run an Optuna study (TPE, median pruning on the dev metric) of distillation "
                                   "runs: the base config plus one dotted override per parameter of its tune.space. "
                                   "Several workers (machines) share a study by running the same command with the "
                                   "same --storage; the study stops at N finished trials in all and resumes when "
                                   "started again. See docs/tuning.md. Options may come anywhere among the "
                                   "config and the overrides.")
    p.add_argument("--trials", type=int, metavar="N",
                   help="finished trials (complete, pruned or failed) the study should hold, counted over every "
                        "worker and earlier session (default: tune.trials)")
    p.add_argument("--storage", metavar="URL",
                   help="Optuna RDB storage shared by the workers, e.g. postgresql://user@host/db "
                        "(default: sqlite:///STUDY_DIR/study.db)")
    p.add_argument("--study", metavar="NAME", help="study name (default: the study folder's name)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar while the teacher cache is built")
    p.add_argument("config", nargs="?", metavar="CONFIG", help="the YAML config (with an optional tune: section)")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                   help="overrides such as train.max_steps=200 or tune.objective=dev_ce")
    p.set_defaults(func=run)


def _parse_items(args) -> tuple[str, list[str]]:
    """(config path, overrides); UserError when no config comes first."""
    if args.config is None or "=" in args.config:
        raise UserError("give a config file first (e.g. configs/tiny-en-2layer.yaml), then KEY=VALUE overrides")
    return args.config, list(args.overrides)


def run(args) -> int:
    from whisperkd.tuning.tune import load_tune, tune

    config_path, overrides = _parse_items(args)
    if args.trials is not None and args.trials < 1:
        raise UserError("--trials: must be at least 1")
    setup = load_tune(config_path, overrides, trials=args.trials, storage=args.storage, study=args.study,
                      progress=not args.no_progress)
    summary = tune(setup)
    return 0 if summary["best"] else 1
