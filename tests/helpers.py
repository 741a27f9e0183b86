"""Plain functions the tests share (fixtures live in conftest.py): ``from helpers import tone, write``.

Only functions that take arguments and are called from inside other helpers or fixtures of the test modules live
here; anything that is set up once and handed to a test is a fixture in conftest.py. No test module imports
another test module.
"""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import soundfile as sf
import torch


# ---------------------------------------------------------------- audio files

def tone(seconds: float, rate: int = 16_000, channels: int = 1, freq: float = 440.0) -> np.ndarray:
    """A 0.3-amplitude sine of ``seconds`` (frames, channels) or (frames,) for mono."""
    t = np.arange(int(seconds * rate)) / rate
    wave = 0.3 * np.sin(2 * np.pi * freq * t).astype(np.float32)
    return wave if channels == 1 else np.stack([wave * (c + 1) / channels for c in range(channels)], axis=1)


def write(path: Path, data: np.ndarray, rate: int = 16_000, **kwargs) -> Path:
    """Write ``data`` as an audio file at ``path`` (format from the extension), creating the folder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), data, rate, **kwargs)
    return path


# ---------------------------------------------------------------- tiny random Whisper models

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


# ---------------------------------------------------------------- short distillation runs on the ``tiny_setup`` fixture

def tiny_config(setup: dict, run_dir: Path, **sections) -> dict:
    """A raw config for a short CPU run on the tiny setup; ``sections`` update it (section -> {key: value})."""
    raw = {
        "teacher": {"model": setup["teacher"], "device": "cpu", "dtype": "float32", "memo_size": 64},
        "student": {"decoder_layers": 2},
        "loss": {"ce_weight": 1.0, "kl_weight": 0.8, "temperature": 2.0},
        "optim": {"lr": 1e-3, "warmup_steps": 2},
        "train": {"max_steps": 6, "batch_size": 4, "device": "cpu", "log_every": 1, "progress": False},
        "data": {"train": setup["manifest"], "dev_fraction": 0.25, "memo_size": 64},
        "eval": {"every": 3, "max_utterances": 4, "batch_size": 4, "wer": False, "at_start": False},
        "output": {"dir": str(run_dir), "checkpoint_every": 3, "keep_checkpoints": 5},
    }
    raw = copy.deepcopy(raw)
    for section, values in sections.items():
        raw.setdefault(section, {}).update(values)
    return raw


def logits_of(model, batch: dict) -> torch.Tensor:
    """A plain Whisper's logits on a batch (eval mode, no grad)."""
    model.eval()
    with torch.no_grad():
        return model(input_features=batch["input_features"], decoder_input_ids=batch["decoder_input_ids"],
                     decoder_attention_mask=batch["decoder_attention_mask"]).logits


def first_batch(setup: dict, n: int = 4) -> dict:
    """A batch of the tiny corpus (first ``n`` utterances)."""
    from whisperkd.data.loader import make_loader
    from whisperkd.data.sources import open_source
    from whisperkd.models.loading import load_processor

    utterances = list(open_source(setup["manifest"]))[:n]
    loader = make_loader(utterances, load_processor(setup["teacher"]), batch_size=n, shuffle=False, num_workers=0)
    return next(iter(loader))
