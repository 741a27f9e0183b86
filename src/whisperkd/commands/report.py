"""``whisperkd report RUN``: RUN/report/report.md with training curves, evaluation plots and geometry.

What needs the training code lives here, not in whisperkd.evaluate: the run's dev split (the speakers held
out of ``data.train``) and, for ``--before init``, the untrained student rebuilt from training_config.json.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path


def register(sub) -> None:
    p = sub.add_parser("report", help="write RUN/report/report.md: training curves, WER vs RTF, WER per speaker, geometry",
                       description="Render the report of a run folder. Training curves come from "
                                   "RUN/training_history.json, evaluation plots from RUN/report/metrics.json (and any "
                                   "--metrics), representation geometry from --teacher and --data (or the run's config).")
    p.add_argument("run", type=Path, metavar="RUN", help="run folder")
    p.add_argument("--metrics", nargs="*", type=Path, default=[],
                   help="more metrics.json files (or folders holding one) to plot with the run's own")
    p.add_argument("--teacher", default=None, help="teacher model for the geometry (default: from training_config.json)")
    p.add_argument("--before", default=None, help="the untrained student for the geometry before distillation: a model, or `init` to rebuild it "
                        "from the run's training_config.json as distill does")
    p.add_argument("--data", default=None, help="dev set for the geometry (default: from training_config.json)")
    p.add_argument("--geometry-utterances", type=int, default=16, help="dev utterances for the geometry (default 16)")
    p.add_argument("--no-geometry", dest="geometry", action="store_false", help="do not compute the geometry")
    p.add_argument("--device", default=None, help="cpu, cuda or cuda:N for the geometry (default: cuda when available)")
    p.set_defaults(func=run)


def run_dev_utterances(run: Path) -> list:
    """The dev utterances of a run, as distillation chose them (``data.dev``, or the held-out speakers)."""
    from whisperkd.distill.build import read_splits
    from whisperkd.distill.runfolder import load_run_config

    return read_splits(load_run_config(run))[1]


def untrained_student(run: Path, teacher, teacher_processor) -> tuple:
    """The student exactly as distillation builds it before the first step (pruned teacher or
    ``student.init``, LoRA with zero updates, fresh projector): ``(whisper, projector)``."""
    import torch

    from whisperkd.distill.build import build_models
    from whisperkd.distill.runfolder import load_run_config

    cfg = load_run_config(run)
    torch.manual_seed(int(getattr(cfg.train, "seed", 0) or 0))
    built = build_models(cfg, teacher=teacher, processor=teacher_processor)
    return built.model.whisper.eval(), built.model.projector.eval()


def run(args) -> int:
    from whisperkd.evaluate.report import write_report

    path = write_report(args.run, metrics_files=args.metrics, teacher=args.teacher, before=args.before,
                        data=args.data, geometry=args.geometry, geometry_utterances=args.geometry_utterances,
                        device=args.device, dev_split=partial(run_dev_utterances, args.run),
                        init_student=partial(untrained_student, args.run))
    print(f"wrote {path}")
    return 0
