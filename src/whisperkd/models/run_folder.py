"""A run folder seen as a model location: where its student is, and what its files say, read as plain files.

``whisperkd distill`` writes the folder (:mod:`whisperkd.distill.runfolder`); loading, evaluation and reports
only read it, and need no training code for that: ``student_final/`` is a plain HF Whisper directory,
``adapter_final/`` holds the trained tensors, ``training_config.json`` is JSON.
"""

from __future__ import annotations

import json
from pathlib import Path

CONFIG_FILE = "training_config.json"
HISTORY_FILE = "training_history.json"
STUDENT_DIR = "student_final"
ADAPTER_DIR = "adapter_final"


def student_dir(run: str | Path) -> Path:
    """Where a run folder keeps its merged student (it may not exist yet)."""
    return Path(run) / STUDENT_DIR


def has_student(run: str | Path) -> bool:
    """True when ``run`` holds a finished student (``student_final/config.json``)."""
    return (student_dir(run) / "config.json").is_file()


def run_folder(spec: str | Path) -> Path | None:
    """The run folder when ``spec`` is one (it has ``student_final/``), else None."""
    path = Path(spec).expanduser()
    return path if path.is_dir() and has_student(path) else None


def read_run_config(run: str | Path) -> dict:
    """``training_config.json`` of a run as a plain dict; ``{}`` when it is missing or not a JSON object."""
    path = Path(run) / CONFIG_FILE
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


def config_section(config: dict, name: str) -> dict:
    """One section of a config read by :func:`read_run_config` (``{}`` when absent or not a mapping)."""
    value = config.get(name)
    return value if isinstance(value, dict) else {}
