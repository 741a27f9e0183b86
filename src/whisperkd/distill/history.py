"""training_history.json (every logged step and every evaluation) and TensorBoard scalars (tb/).

    {"steps":  [{"step": 10, "epoch": 0, "loss": .., "ce": .., "kl": .., "kl_weight": .., "lr": .., "grad_norm": ..,
                 "skipped": false[, "t": .. (TAID), "align": ..]}, ...],
     "evals":  [{"step": 0, "dev_loss": .., "dev_ce": .., "dev_kl": .., "wer": .., "utterances": .., "best": true}, ...],
     "events": [{"step": 7, "event": "non_finite_loss", ...}, {"step": 50, "event": "resumed"}, ...]}

The file is rewritten atomically after each record. Non-finite numbers are stored as null.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from whisperkd.data.atomic import atomic_write_text

HISTORY_FILE = "training_history.json"
TB_DIR = "tb"


def _clean(record: dict) -> dict:
    out = {}
    for key, value in record.items():
        if isinstance(value, float) and not math.isfinite(value):
            value = None
        out[key] = value
    return out


class History:
    """Appends records, rewrites the JSON file, mirrors numbers to TensorBoard (``train/*``, ``dev/*``)."""

    def __init__(self, run_dir: str | Path, tensorboard: bool = True, records: dict | None = None,
                 purge_step: int | None = None, write: bool = True) -> None:
        self.path = Path(run_dir) / HISTORY_FILE
        self.data = records if records is not None else {"steps": [], "evals": [], "events": []}
        for key in ("steps", "evals", "events"):
            self.data.setdefault(key, [])
        self.write = write
        self.writer = None
        if tensorboard and write:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(Path(run_dir) / TB_DIR), purge_step=purge_step)

    def _scalars(self, prefix: str, record: dict) -> None:
        if self.writer is None:
            return
        for key, value in record.items():
            if key != "step" and isinstance(value, (int, float)) and not isinstance(value, bool) and value is not None:
                self.writer.add_scalar(f"{prefix}/{key}", value, record["step"])

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
        if self.writer is not None:
            self.writer.flush()
            self.writer.close()
            self.writer = None


def read_history(run_dir: str | Path) -> dict:
    """The history of a run folder."""
    return json.loads((Path(run_dir) / HISTORY_FILE).read_text(encoding="utf-8"))
