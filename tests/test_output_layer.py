"""The int8 output layer (whisperkd.models.output_layer): applied only when a saved model asks for it, close to
float32 logits, and used by evaluation without being told."""

from __future__ import annotations

import pytest
import torch

from whisperkd.models.output_layer import CONFIG_KEY, for_inference, mark_int8, quantize_output_layer


def _is_int8(module) -> bool:
    return type(module).__module__.startswith("torch.ao.nn.quantized.dynamic")


def _logits(model, feats):
    with torch.no_grad():
        return model(input_features=feats, decoder_input_ids=torch.tensor([[50257, 11, 12, 13]])).logits


def test_int8_logits_are_close_to_float32(tiny_random_model):
    feats = torch.randn(1, 80, 3000, generator=torch.Generator().manual_seed(0))
    reference = _logits(tiny_random_model, feats)
    quantized = quantize_output_layer(tiny_random_model)
    assert _is_int8(quantized.proj_out)
    ours = _logits(quantized, feats)
    scale = reference.abs().max()
    assert (ours - reference).abs().max() < 0.05 * scale  # int8 weights and activations: close, not equal
    assert not torch.equal(ours, reference)


def test_applied_only_when_the_saved_model_asks(tiny_random_model, tmp_path):
    from transformers import WhisperForConditionalGeneration

    assert for_inference(tiny_random_model).proj_out.__class__ is torch.nn.Linear  # not asked: unchanged
    mark_int8(tiny_random_model)
    tiny_random_model.save_pretrained(tmp_path)
    loaded = WhisperForConditionalGeneration.from_pretrained(tmp_path)
    assert getattr(loaded.config, CONFIG_KEY) == "int8"
    assert loaded.proj_out.__class__ is torch.nn.Linear  # the saved weights stay float32
    assert _is_int8(for_inference(loaded).proj_out)
    half = WhisperForConditionalGeneration.from_pretrained(tmp_path, dtype=torch.float16)
    assert for_inference(half).proj_out.__class__ is torch.nn.Linear  # int8 kernels are for float32 on CPU
    with pytest.raises(ValueError, match="output layer"):
        mark_int8(loaded, "int4")


def test_evaluation_loads_a_marked_student_with_int8(tiny_setup, tmp_path):
    from whisperkd.evaluate.engines import open_model
    from whisperkd.models.loading import load_model, load_processor

    model = load_model(tiny_setup["teacher"])
    mark_int8(model)
    model.save_pretrained(tmp_path / "student")
    load_processor(tiny_setup["teacher"]).save_pretrained(tmp_path / "student")
    engine = open_model(str(tmp_path / "student"))
    assert _is_int8(engine.model.proj_out)
    assert len(engine.transcribe([torch.zeros(16_000).numpy() + 0.01])) == 1
