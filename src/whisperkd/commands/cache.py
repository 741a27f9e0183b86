"""``whisperkd cache CONFIG [KEY=VALUE...]``: compute the offline teacher cache of a distillation config."""

from __future__ import annotations

import sys

from whisperkd.errors import UserError


def register(sub) -> None:
    p = sub.add_parser(
        "cache", intermixed=True,
        help="run the frozen teacher once over the training and dev data and store its outputs",
        description="Build (or finish, or check) the teacher cache of a distillation config: the teacher decoder's "
                    "final states (full logits, exact), its hidden states, the frozen-encoder outputs and, with "
                    "cache.topk, top-k log-probabilities at the training temperature; memory-mapped shards under "
                    "cache.dir (default OUTPUT_DIR/teacher_cache). Resumable; a cache built from other inputs is "
                    "rebuilt or refused (cache.on_stale). See docs/cache.md. Options may come anywhere among "
                    "the config and the overrides.")
    stale = p.add_mutually_exclusive_group()
    stale.add_argument("--rebuild", dest="on_stale", action="store_const", const="rebuild",
                       help="rebuild a cache whose inputs changed (overrides cache.on_stale)")
    stale.add_argument("--refuse", dest="on_stale", action="store_const", const="refuse",
                       help="stop with an error when the inputs changed (overrides cache.on_stale)")
    p.add_argument("--check", action="store_true", help="only say whether the cache is complete and up to date "
                                                        "(exit 0 if so, 1 if not); computes nothing")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("config", nargs="?", metavar="CONFIG", help="the distillation config (YAML)")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="overrides such as cache.dir=/data/cache")
    p.set_defaults(func=run, on_stale=None)


def _parse_items(args) -> tuple[str, list[str]]:
    """(config path, overrides); UserError when no config comes first."""
    if args.config is None or "=" in args.config:
        raise UserError("give the distillation config first: whisperkd cache CONFIG [KEY=VALUE ...]")
    return args.config, list(args.overrides)


def run(args) -> int:
    from whisperkd.config import load_config, with_absolute_paths
    from whisperkd.distill import cache as cache_mod
    from whisperkd.distill.build import build_models, read_splits

    config_path, overrides = _parse_items(args)
    cfg = with_absolute_paths(load_config(config_path, overrides))
    if cfg.loss.kind == "taid" and cfg.cache.logits == "topk":
        print("note: loss.kind is taid, which needs full teacher logits; the cached top-k serves KL only",
              file=sys.stderr)
    built = build_models(cfg)
    train, dev = read_splits(cfg)
    splits = {"train": train, "dev": dev} if dev else {"train": train}
    cache_dir = cache_mod.cache_dir_of(cfg)
    if args.check:
        changes = cache_mod.check_cache(cache_dir, built.teacher, built.processor, splits, cfg.cache,
                                        cache_mod.cache_plan(cfg, built))
        if changes:
            print(f"{cache_dir}: not up to date: " + "; ".join(changes))
            return 1
        print(f"{cache_dir}: complete and up to date")
        return 0
    report = cache_mod.ensure_cache(cfg, built, splits, on_stale=args.on_stale, progress=not args.no_progress)
    print(report.summary())
    return 0
