"""Load a Hugging Face Whisper directory (or hub id) exactly as given: no offline-name or run-folder resolution.

:mod:`whisperkd.models.loading` resolves names to directories and then loads through here;
:mod:`whisperkd.models.verify` loads a freshly converted directory through here directly, so fetching a
model (which verifies it) does not depend on the name resolution that fetches models.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from huggingface_hub import constants
from transformers import WhisperForConditionalGeneration, WhisperProcessor

from whisperkd.errors import UserError

OFFLINE_HINT = (
    "run `whisperkd models fetch tiny.en` (or base) and pass that name, or convert a faster-whisper model with "
    "`whisperkd models import-ct2 CT2_DIR OUT_DIR` and pass OUT_DIR"
)


def hub_error(text: str, err: Exception) -> UserError:
    """The one-line error for a hub id that could not be loaded."""
    offline = bool(constants.HF_HUB_OFFLINE) or os.environ.get("HF_HUB_OFFLINE") == "1"
    why = "the hub is offline (HF_HUB_OFFLINE=1)" if offline else f"it could not be downloaded ({type(err).__name__})"
    return UserError(f"model {text!r}: {why}; {OFFLINE_HINT}")


def load_hf_model(source: str | Path, dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu"
                  ) -> WhisperForConditionalGeneration:
    """A WhisperForConditionalGeneration from a directory (Path) or hub id (str), in eval mode."""
    try:
        model = WhisperForConditionalGeneration.from_pretrained(source, dtype=dtype)
    except OSError as err:
        if isinstance(source, Path):
            raise UserError(f"{source}: cannot load Whisper weights ({err})") from None
        raise hub_error(str(source), err) from None
    return model.to(device).eval()


def load_hf_processor(source: str | Path) -> WhisperProcessor:
    """The WhisperProcessor of a directory (Path) or hub id (str)."""
    try:
        return WhisperProcessor.from_pretrained(source)
    except OSError as err:
        if isinstance(source, Path):
            raise UserError(f"{source}: cannot load the tokenizer/feature extractor ({err})") from None
        raise hub_error(str(source), err) from None
