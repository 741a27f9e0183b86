"""A shorter encoder window at decoding time (whisperkd.models.window)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from transformers import WhisperFeatureExtractor, WhisperForConditionalGeneration

from helpers import tiny_whisper_config
from whisperkd.models.window import encoder_window, parse_window, window_for


def test_window_for_and_parse():
    assert [window_for(s) for s in (0.5, 4.4, 4.6, 9.0, 14.6, 29.8, 45.0)] == [5, 5, 10, 10, 20, 30, 30]
    assert parse_window(None) is None  # the model's own window
    assert parse_window("off") == 30 and parse_window("30") == 30
    assert parse_window("auto") == "auto" and parse_window("15") == 15
    for bad in ("0", "31", "fast", "1.5"):
        with pytest.raises(ValueError, match="encoder window"):
            parse_window(bad)


def test_equals_an_hf_model_built_with_that_window(tiny_random_model):
    """Inside the context the encoder is exactly an HF Whisper whose config has a 10-s window."""
    torch.manual_seed(1)
    feats = torch.randn(2, 80, 3000)
    short = WhisperForConditionalGeneration(tiny_whisper_config(max_source_positions=500)).eval()
    state = {k: (v[:500] if k.endswith("encoder.embed_positions.weight") else v)
             for k, v in tiny_random_model.state_dict().items()}
    short.load_state_dict(state)
    with torch.no_grad(), encoder_window(tiny_random_model, 10) as frames:
        assert frames == 1000
        ours = tiny_random_model.model.encoder(feats[..., :frames]).last_hidden_state
    reference = short.model.encoder(feats[..., :1000]).last_hidden_state
    assert ours.shape == (2, 500, 64)
    torch.testing.assert_close(ours, reference)
    # restored on exit: the 30-s window works again and the table is whole
    assert tiny_random_model.config.max_source_positions == 1500
    assert tiny_random_model.model.encoder.embed_positions.num_embeddings == 1500
    tiny_random_model.model.encoder(feats)


def test_restored_after_an_error(tiny_random_model):
    with pytest.raises(RuntimeError, match="boom"):
        with encoder_window(tiny_random_model, 5):
            raise RuntimeError("boom")
    assert tiny_random_model.config.max_source_positions == 1500


def test_transcribe_with_windows(tiny_random_model):
    """A 30-s window is the default decoding; shorter windows decode too (a random model: any text)."""
    from types import SimpleNamespace

    from transformers import GenerationConfig

    from whisperkd.models.decode import transcribe_arrays

    model = tiny_random_model
    model.generation_config = GenerationConfig(decoder_start_token_id=50257, eos_token_id=50256, pad_token_id=50256,
                                               max_length=448)

    class Tokenizer:
        def batch_decode(self, ids, skip_special_tokens=True):
            return [" ".join(map(str, row.tolist())) for row in ids]

    processor = SimpleNamespace(feature_extractor=WhisperFeatureExtractor(feature_size=80), tokenizer=Tokenizer())
    audios = [np.random.default_rng(0).standard_normal(16000 * 3).astype(np.float32) * 0.1]
    full = transcribe_arrays(model, processor, audios)
    assert transcribe_arrays(model, processor, audios, window=30) == full
    assert len(transcribe_arrays(model, processor, audios, window="auto")) == 1
    assert model.config.max_source_positions == 1500


def test_evaluate_refuses_a_bad_window(tmp_path, capsys):
    from whisperkd.cli import main

    assert main(["evaluate", "base", "--data", str(tmp_path), "--encoder-window", "fast"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--encoder-window" in err[0] and "auto, off or whole seconds" in err[0]
