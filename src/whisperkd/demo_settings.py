"""What the offline demo runs on, without importing it: its sizes and its packaged config and real clips.

Kept apart from :mod:`whisperkd.demo` (which imports the whole pipeline) so that ``whisperkd --help`` and
argument parsing stay instant. Both files ship inside the package (``whisperkd/resources/``), so an installed
whisperkd runs the demo from any directory:

- ``resources/demo.yaml``: the demo's config (``configs/demo.yaml`` in the repository is the same file);
- ``resources/real-speech/``: six public-domain recordings with ``manifest.jsonl`` (its README says where
  they come from).
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from pathlib import Path

RESOURCES = Path(str(resources.files("whisperkd") / "resources"))
DEFAULT_CONFIG = RESOURCES / "demo.yaml"
REAL_SPEECH = RESOURCES / "real-speech"


@dataclass
class DemoSize:
    """How much of everything: the full demo and the CI-sized ``quick`` one."""

    train_utterances: int
    dev_utterances: int
    test_utterances: int
    eval_repeats: int
    latency: bool  # also time every utterance alone (batch 1)
    overrides: tuple[str, ...]
    pack_seconds: float | None = 28.0  # pack training utterances into windows of this length (None: do not)
    real_train_utterances: int = 0  # of the real corpus's train/, pseudo-labelled by the teacher (whisperkd.demo_real)
    real_dev_select: int = 0  # real dev utterances in the dev set that chooses the best checkpoint
    real_dev_report: int = 0  # other real dev utterances, evaluated for the table


# Real training speech: the teacher's transcripts, an utterance dropped when they are more than 20 % off the corpus
# text (distil-whisper's filter; docs/demo.md, "Real speech").
REAL_LABELS = "pseudo"
REAL_MAX_WER = 0.2

SIZES = {
    "full": DemoSize(1600, 48, 80, 1, False, (), real_train_utterances=600, real_dev_select=48, real_dev_report=100),
    "quick": DemoSize(240, 16, 24, 1, False, ("train.max_steps=120", "train.batch_size=2", "optim.warmup_steps=10",
                                              "eval.every=60", "eval.max_utterances=32",
                                              "output.checkpoint_every=60"),
                      real_train_utterances=80, real_dev_select=16, real_dev_report=24),
    # the quality benchmark's larger budget: every training sentence once, twice the steps (docs/demo.md)
    "large": DemoSize(3300, 48, 80, 1, False, ("train.max_steps=1200", "optim.warmup_steps=80", "eval.every=200",
                                              "output.checkpoint_every=200"),
                      real_train_utterances=2500, real_dev_select=48, real_dev_report=100),
}
