"""One way to load a Whisper model everywhere: an offline name (tiny.en, base), a local HF directory,
a run folder (its ``student_final/``) or a hub id (for users with a network)."""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import WhisperForConditionalGeneration, WhisperProcessor

from whisperkd.errors import UserError
from whisperkd.models.fetch import BROKEN_MODELS, OFFLINE_MODELS, ensure_model
from whisperkd.models.hf_dir import OFFLINE_HINT, load_hf_model, load_hf_processor
from whisperkd.models.run_folder import has_student, student_dir


def resolve(name_or_path: str | Path) -> str | Path:
    """A local HF Whisper directory for ``name_or_path``, or the hub id unchanged."""
    text = str(name_or_path)
    if text in OFFLINE_MODELS or text in BROKEN_MODELS:
        return ensure_model(text)
    path = Path(text).expanduser()
    if path.is_dir():
        if has_student(path):
            return student_dir(path)
        if (path / "config.json").is_file() and not (path / "model.bin").is_file():
            return path
        if (path / "model.bin").is_file() or any(path.glob("model.bin.part*")):
            raise UserError(f"{path}: a CTranslate2 model, not a Hugging Face one; convert it first with "
                            f"`whisperkd models import-ct2 {path} OUT_DIR`")
        raise UserError(f"{path}: no config.json; not a Hugging Face Whisper directory or run folder")
    if path.exists() or text.startswith((".", "/", "~")) or text.count("/") > 1:
        raise UserError(f"{text}: no such model directory; {OFFLINE_HINT}")
    return text  # a hub id such as openai/whisper-small


def load_model(name_or_path: str | Path, dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu"
               ) -> WhisperForConditionalGeneration:
    """A WhisperForConditionalGeneration in ``dtype`` (float32 unless asked) on ``device``, eval mode."""
    return load_hf_model(resolve(name_or_path), dtype=dtype, device=device)


def load_processor(name_or_path: str | Path) -> WhisperProcessor:
    """The WhisperProcessor (feature extractor + tokenizer) that belongs to a model."""
    return load_hf_processor(resolve(name_or_path))
