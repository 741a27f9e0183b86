"""Shared pieces of the distillation tests: a tiny random teacher on disk and a tiny tone corpus.

Imported by the other test_distill_* / test_trainer* / test_checkpoint* modules (pytest puts tests/ on the path).
"""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from conftest import tiny_whisper_config

WORDS = "the quick brown fox jumps over a lazy dog while seven birds sing in the old green tree".split()


def _tone(seconds: float, freq: float, rate: int = 16_000) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return (0.3 * np.sin(2 * np.pi * freq * t) * (1 + 0.5 * np.sin(2 * np.pi * 3 * t))).astype(np.float32)


@pytest.fixture(scope="session")
def tiny_setup(tmp_path_factory) -> dict:
    """{teacher: dir of a random tiny Whisper (2 encoder, 3 decoder layers) with tiny.en's processor,
    manifest: 16 tone utterances from 4 speakers with short transcripts}."""
    from transformers import WhisperForConditionalGeneration

    from whisperkd.data.manifest import write_manifest
    from whisperkd.data.utterance import Utterance
    from whisperkd.models.loading import load_processor

    root = tmp_path_factory.mktemp("distill-tiny")
    torch.manual_seed(0)
    teacher = WhisperForConditionalGeneration(tiny_whisper_config(decoder_layers=3))
    teacher.generation_config.max_length = 448
    processor = load_processor("tiny.en")
    teacher.save_pretrained(root / "teacher")
    processor.save_pretrained(root / "teacher")
    utterances = []
    for i in range(16):
        seconds = 1.0 + 0.1 * (i % 5)
        path = root / "audio" / f"u{i:02d}.wav"
        path.parent.mkdir(parents=True, exist_ok=True)
        sf.write(str(path), _tone(seconds, 180 + 25 * i), 16_000)
        text = " ".join(WORDS[i % 7: i % 7 + 3 + i % 3])
        utterances.append(Utterance(f"u{i:02d}", path, text, seconds, f"spk{i % 4}"))
    write_manifest(root / "manifest.jsonl", utterances)
    return {"root": root, "teacher": str(root / "teacher"), "manifest": str(root / "manifest.jsonl")}


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
