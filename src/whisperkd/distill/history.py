"""training_history.json (every logged step and every evaluation) and TensorBoard scalars (tb/).

    {"steps":  [{"step": 10, "epoch": 0, "loss": .., "ce": .., "kl": .., "kl_weight": .., "lr": .., "grad_norm": ..,
                 "skipped": false[, "t": .. (TAID), "align": ..]}, ...],
     "evals":  [{"step": 0, "dev_loss": .., "dev_ce": .., "dev_kl": .., "wer": .., "utterances": .., "best": true}, ...],
     "events": [{"step": 7, "event": "non_finite_loss", ...}, {"step": 50, "event": "resumed"}, ...]}

The file is rewritten atomically after each record. Non-finite numbers are stored as null. The numbers also go
to accelerate's TensorBoard tracker (``tb/``) when the run's Accelerator has one.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from whisperkd.data.atomic import atomic_write_text
from whisperkd.models.run_folder import HISTORY_FILE

TB_DIR = "tb"


def _clean(record: dict) -> dict:
    out = {}
    for key, value in record.items():
        if isinstance(value, float) and not math.isfinite(value):
            value = None
        out[key] = value
    return out


class History:
    """Appends records, rewrites the JSON file, mirrors numbers to the accelerator's trackers (``train/*``,
    ``dev/*``). ``accelerator``: an ``accelerate.Accelerator`` whose trackers were initialised (or None)."""

    def __init__(self, run_dir: str | Path, records: dict | None = None, write: bool = True,
                 accelerator=None) -> None:
        self.path = Path(run_dir) / HISTORY_FILE
        self.data = records if records is not None else {"steps": [], "evals": [], "events": []}
        for key in ("steps", "evals", "events"):
            self.data.setdefault(key, [])
        self.write = write
        self.accelerator = accelerator if accelerator is not None and accelerator.trackers else None

    def _scalars(self, prefix: str, record: dict) -> None:
        if self.accelerator is None:
            return
        numbers = {f"{prefix}/{key}": value for key, value in record.items() if key != "step" and
                   isinstance(value, (int, float)) and not isinstance(value, bool)}
        self.accelerator.log(numbers, step=record["step"])

    def log_step(self, record: dict) -> None:
        self.data["steps"].append(_clean(record))
        self._scalars("train", record)
        self.save()

    def log_eval(self, record: dict) -> None:
        self.data["evals"].append(_clean(record))
        self._scalars("dev", record)
        self.save()

    def log_event(self, record: dict) -> None:
        self.data["events"].append(_clean(record))
        self.save()

    def save(self) -> None:
        if self.write:
            atomic_write_text(self.path, json.dumps(self.data, indent=1) + "\n")

    def close(self) -> None:
        if self.accelerator is not None:
            self.accelerator.end_training()
            self.accelerator = None


def read_history(run_dir: str | Path) -> dict:
    """The history of a run folder."""
    return json.loads((Path(run_dir) / HISTORY_FILE).read_text(encoding="utf-8"))
