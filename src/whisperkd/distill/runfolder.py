"""The run folder: the only hand-over between ``whisperkd distill`` and later commands.

    runs/<name>/
      training_config.json   the resolved config, exactly as run (``--resume`` reads it)
      training_history.json  every logged step and every evaluation (history.py)
      tb/                    TensorBoard events
      checkpoint/            step-000500/ ... the last output.keep_checkpoints (checkpoint.py)
      best/                  trainable weights of the best dev WER so far (best.json says which step)
      adapter_final/         PEFT adapter (when LoRA) + projector.safetensors + whisperkd_adapter.json
      student_final/         the merged student: a plain HF Whisper directory with its processor
      skipped.jsonl          utterances that were refused, with the reason
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from whisperkd.config import Config, config_from_dict
from whisperkd.data.atomic import atomic_write_text
from whisperkd.distill.build import build_models
from whisperkd.distill.checkpoint import (CHECKPOINT_DIR, MODEL, atomic_dir, latest_checkpoint, load_trainable,
                                          save_trainable)
from whisperkd.distill.history import TB_DIR
from whisperkd.errors import UserError
from whisperkd.models.lora import merge_lora
from whisperkd.models.projector import save_projector
from whisperkd.models.run_folder import ADAPTER_DIR, CONFIG_FILE, HISTORY_FILE, STUDENT_DIR
from whisperkd.text import english_spelling_file

BEST_DIR = "best"
BEST_WEIGHTS = "trainable.safetensors"  # in best/
SKIPPED_FILE = "skipped.jsonl"
ARTEFACTS = (CONFIG_FILE, HISTORY_FILE, TB_DIR, CHECKPOINT_DIR, BEST_DIR, ADAPTER_DIR, STUDENT_DIR, SKIPPED_FILE)


def start_run_dir(cfg: Config) -> Path:
    """Create (or, with output.overwrite, clear) the run folder and write training_config.json."""
    run_dir = Path(cfg.output.dir)
    if run_dir.exists() and not run_dir.is_dir():
        raise UserError(f"config output.dir: {run_dir} exists and is not a folder")
    existing = [name for name in ARTEFACTS if (run_dir / name).exists()]
    if existing and not cfg.output.overwrite:
        raise UserError(f"config output.dir: {run_dir} already holds a run ({', '.join(existing)}); continue it with "
                        f"`whisperkd distill --resume {run_dir}`, or set output.overwrite=true or another output.dir")
    for name in existing:
        path = run_dir / name
        shutil.rmtree(path) if path.is_dir() else path.unlink()
    run_dir.mkdir(parents=True, exist_ok=True)
    save_config(run_dir, cfg)
    return run_dir


def save_config(run_dir: str | Path, cfg: Config) -> Path:
    return atomic_write_text(Path(run_dir) / CONFIG_FILE, json.dumps(cfg.to_dict(), indent=2) + "\n")


def load_run_config(run_dir: str | Path) -> Config:
    """The config a run was started with; ``output.dir`` is set to where the folder is now."""
    run_dir = Path(run_dir)
    path = run_dir / CONFIG_FILE
    if not path.is_file():
        raise UserError(f"{run_dir}: no {CONFIG_FILE}; not a whisperkd distill run folder")
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise UserError(f"{path}: not valid JSON ({err.msg})") from None
    raw.setdefault("output", {})["dir"] = str(run_dir.resolve())
    return config_from_dict(raw)


# ---------------------------------------------------------------- best and final students

def save_best(run_dir: str | Path, model, info: dict) -> None:
    """Keep the trainable weights (a model or a dict) of the best student so far in ``best/`` (atomically)."""
    with atomic_dir(Path(run_dir) / BEST_DIR) as tmp:
        save_trainable(model, tmp / BEST_WEIGHTS, {"step": info.get("step")})
        (tmp / "best.json").write_text(json.dumps(info, indent=1) + "\n", encoding="utf-8")


def load_best(run_dir: str | Path, model) -> dict | None:
    """Load ``best/`` into ``model``; returns its info (None when there is no best/)."""
    folder = Path(run_dir) / BEST_DIR
    if not (folder / BEST_WEIGHTS).is_file():
        return None
    load_trainable(model, folder / BEST_WEIGHTS)
    return json.loads((folder / "best.json").read_text(encoding="utf-8"))


def export_final(run_dir: str | Path, model, processor, uses_lora: bool, info: dict):
    """Write adapter_final/ and student_final/ from ``model`` (a DistillStudent); returns the merged Whisper.

    With LoRA the adapter is saved first, then merged into the student in place (the PEFT wrapper is not
    usable afterwards). student_final/ is a plain HF Whisper directory: ``WhisperForConditionalGeneration
    .from_pretrained`` and ``transformers.pipeline("automatic-speech-recognition", model=...)`` load it.
    """
    run_dir = Path(run_dir)
    with atomic_dir(run_dir / ADAPTER_DIR) as tmp:
        if uses_lora:
            model.student.save_pretrained(str(tmp))
        save_projector(model.projector, tmp)
        (tmp / "whisperkd_adapter.json").write_text(json.dumps(info, indent=1) + "\n", encoding="utf-8")
    whisper = merge_lora(model.student) if uses_lora else model.student
    whisper.config.use_cache = True  # training turned it off for gradient checkpointing
    with atomic_dir(run_dir / STUDENT_DIR) as tmp:
        whisper.save_pretrained(str(tmp))
        processor.save_pretrained(str(tmp))
        _write_spelling_map(processor, tmp)
    return whisper


def _write_spelling_map(processor, folder: Path) -> None:
    """transformers does not save the tokenizer's normalizer.json (Whisper's English spelling map): add it,
    so ``tokenizer.normalize`` works on the saved student."""
    if (folder / "normalizer.json").is_file():
        return
    mapping = getattr(processor.tokenizer, "english_spelling_normalizer", None)
    if mapping is None:
        mapping = json.loads(english_spelling_file().read_text(encoding="utf-8"))
    (folder / "normalizer.json").write_text(json.dumps(mapping, indent=2, sort_keys=True, ensure_ascii=False) + "\n",
                                            encoding="utf-8")


def restore_student(run_dir: str | Path, checkpoint: str | Path | None = None, source: str = "checkpoint"):
    """Rebuild a run's student (a DistillStudent) from training_config.json and load saved trainable weights.

    ``source="checkpoint"``: ``checkpoint`` (a step folder) or the latest one; ``source="best"``: best/.
    The teacher is loaded too (the student is pruned from it). For inference use student_final/ instead.
    """
    cfg = load_run_config(run_dir)
    built = build_models(cfg)
    if source == "best":
        if load_best(run_dir, built.model) is None:
            raise UserError(f"{run_dir}: no best/ folder (the run had no dev evaluation yet)")
        return built.model
    folder = Path(checkpoint) if checkpoint is not None else latest_checkpoint(run_dir)
    if folder is None:
        raise UserError(f"{run_dir}: no checkpoint yet")
    load_trainable(built.model, folder / MODEL)
    return built.model
