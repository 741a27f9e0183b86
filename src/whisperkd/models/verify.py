"""Checks that a converted Whisper directory loads and behaves: tokenizer repairs, ids, a finite forward pass."""

from __future__ import annotations

from pathlib import Path

import torch

from whisperkd.errors import UserError
from whisperkd.models.hf_dir import load_hf_model, load_hf_processor
from whisperkd.models.tokenizer import special_ids


def verify_hf_dir(path: Path) -> dict:
    """Load ``path`` and check it; returns a small report, raises :class:`UserError` on the first failure."""
    path = Path(path)
    model = load_hf_model(path)
    processor = load_hf_processor(path)
    tok = processor.tokenizer
    ids = special_ids(tok)
    problems = []
    if len(tok) != model.config.vocab_size:
        problems.append(f"tokenizer has {len(tok)} tokens, model vocab_size {model.config.vocab_size}")
    n_test = len(tok(" this is a test", add_special_tokens=False).input_ids)
    if n_test != 4:
        problems.append(f'" this is a test" encodes to {n_test} ids, expected 4 (BPE merges incomplete)')
    if ids["sot"] != model.generation_config.decoder_start_token_id:
        problems.append("start-of-transcript id differs between tokenizer and generation config")
    with torch.no_grad():
        feats = torch.zeros(1, model.config.num_mel_bins, 3000)
        logits = model(input_features=feats, decoder_input_ids=torch.tensor([[ids["sot"]]])).logits
    if not torch.isfinite(logits).all():
        problems.append("forward pass gives non-finite logits")
    if problems:
        raise UserError(f"{path}: verification failed: {'; '.join(problems)}")
    return {"vocab_size": model.config.vocab_size, "special_ids": ids, "parameters": model.num_parameters()}
