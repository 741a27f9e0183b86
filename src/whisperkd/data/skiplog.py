"""Record of inputs that were skipped, one JSON line each in ``<run>/skipped.jsonl``."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

SKIPPED_FILE = "skipped.jsonl"


class SkipLog:
    """Appends one JSON line per skipped input; safe to share with DataLoader worker processes.

    Each ``add`` opens the file in append mode, writes one line and closes it, so lines from several
    processes never interleave. With ``run_dir=None`` records are kept in memory only.
    """

    def __init__(self, run_dir: str | Path | None = None, reset: bool = False, filename: str = SKIPPED_FILE):
        self.path = Path(run_dir) / filename if run_dir is not None else None
        self._memory: list[dict] = []
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            if reset and self.path.exists():
                self.path.unlink()

    def add(self, source: str, id: str, path: str | Path | None, reason: str, detail: str = "") -> None:
        """Record that utterance ``id`` from ``source`` (file ``path``) was skipped for ``reason``."""
        record = {"source": str(source), "id": str(id), "path": None if path is None else str(path),
                  "reason": reason, "detail": detail}
        if self.path is None:
            self._memory.append(record)
            return
        line = json.dumps(record, ensure_ascii=False) + "\n"
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(line)
            f.flush()

    def records(self) -> list[dict]:
        """All records so far (from the file when there is one, so workers' skips count too)."""
        if self.path is None:
            return list(self._memory)
        if not self.path.exists():
            return []
        with open(self.path, encoding="utf-8") as f:
            return [json.loads(line) for line in f if line.strip()]

    @property
    def count(self) -> int:
        """How many inputs were skipped."""
        return len(self.records())

    def summary(self) -> str:
        """One line: how many were skipped, by reason, and where the details are."""
        records = self.records()
        if not records:
            return "0 skipped"
        by_reason = Counter(r["reason"] for r in records)
        reasons = ", ".join(f"{n} {reason}" for reason, n in sorted(by_reason.items()))
        where = f"; details in {self.path}" if self.path is not None else ""
        return f"{len(records)} skipped ({reasons}){where}"
