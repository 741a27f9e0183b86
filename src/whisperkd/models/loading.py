"""One way to load a Whisper model everywhere: an offline name (tiny.en, base), a local HF directory,
a run folder (its ``student_final/``) or a hub id (for users with a network)."""

from __future__ import annotations

import os
from pathlib import Path

import torch
from transformers import WhisperForConditionalGeneration, WhisperProcessor

from whisperkd.errors import UserError
from whisperkd.models.fetch import BROKEN_MODELS, OFFLINE_MODELS, ensure_model

_OFFLINE_HINT = (
    "run `whisperkd models fetch tiny.en` (or base) and pass that name, or convert a faster-whisper model with "
    "`whisperkd models import-ct2 CT2_DIR OUT_DIR` and pass OUT_DIR"
)


def resolve(name_or_path: str | Path) -> str | Path:
    """A local HF Whisper directory for ``name_or_path``, or the hub id unchanged."""
    text = str(name_or_path)
    if text in OFFLINE_MODELS or text in BROKEN_MODELS:
        return ensure_model(text)
    path = Path(text).expanduser()
    if path.is_dir():
        if (path / "student_final" / "config.json").is_file():
            return path / "student_final"
        if (path / "config.json").is_file() and not (path / "model.bin").is_file():
            return path
        if (path / "model.bin").is_file() or any(path.glob("model.bin.part*")):
            raise UserError(f"{path}: a CTranslate2 model, not a Hugging Face one; convert it first with "
                            f"`whisperkd models import-ct2 {path} OUT_DIR`")
        raise UserError(f"{path}: no config.json; not a Hugging Face Whisper directory or run folder")
    if path.exists() or text.startswith((".", "/", "~")) or text.count("/") > 1:
        raise UserError(f"{text}: no such model directory; {_OFFLINE_HINT}")
    return text  # a hub id such as openai/whisper-small


def _hub_error(text: str, err: Exception) -> UserError:
    from huggingface_hub import constants

    offline = bool(constants.HF_HUB_OFFLINE) or os.environ.get("HF_HUB_OFFLINE") == "1"
    why = "the hub is offline (HF_HUB_OFFLINE=1)" if offline else f"it could not be downloaded ({type(err).__name__})"
    return UserError(f"model {text!r}: {why}; {_OFFLINE_HINT}")


def load_model(name_or_path: str | Path, dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu"
               ) -> WhisperForConditionalGeneration:
    """A WhisperForConditionalGeneration in ``dtype`` (float32 unless asked) on ``device``, eval mode."""
    source = resolve(name_or_path)
    try:
        model = WhisperForConditionalGeneration.from_pretrained(source, dtype=dtype)
    except OSError as err:
        if isinstance(source, Path):
            raise UserError(f"{source}: cannot load Whisper weights ({err})") from None
        raise _hub_error(str(source), err) from None
    return model.to(device).eval()


def load_processor(name_or_path: str | Path) -> WhisperProcessor:
    """The WhisperProcessor (feature extractor + tokenizer) that belongs to a model."""
    source = resolve(name_or_path)
    try:
        return WhisperProcessor.from_pretrained(source)
    except OSError as err:
        if isinstance(source, Path):
            raise UserError(f"{source}: cannot load the tokenizer/feature extractor ({err})") from None
        raise _hub_error(str(source), err) from None
