"""LoRA presets select the right modules; merged and unmerged students agree; only LoRA trains."""

from __future__ import annotations

import pytest
import torch

from whisperkd.errors import UserError
from whisperkd.models.lora import (
    LORA_PRESETS,
    LoraSettings,
    apply_lora,
    lora_target_modules,
    lora_target_regex,
    merge_lora,
)

# The tiny model has 2 encoder and 2 decoder layers: modules per layer times 2.
EXPECTED_COUNTS = {
    "decoder-self-qv": 4,
    "decoder-self-qkv": 6,
    "decoder-self-qkvo": 8,
    "decoder-cross-qv": 4,
    "decoder-cross-qkv": 6,
    "decoder-cross-qkvo": 8,
    "decoder-ffn": 4,
    "encoder-self-qv": 4,
    "encoder-self-qkv": 6,
    "encoder-self-qkvo": 8,
    "encoder-ffn": 4,
}


def test_every_preset_selects_the_expected_modules(tiny_random_model):
    assert set(LORA_PRESETS) == set(EXPECTED_COUNTS)
    for name, count in EXPECTED_COUNTS.items():
        assert len(lora_target_modules(tiny_random_model, [name])) == count, name


def test_preset_names_are_exact(tiny_random_model):
    assert set(lora_target_modules(tiny_random_model, ["decoder-cross-qv"])) == {
        "model.decoder.layers.0.encoder_attn.q_proj",
        "model.decoder.layers.0.encoder_attn.v_proj",
        "model.decoder.layers.1.encoder_attn.q_proj",
        "model.decoder.layers.1.encoder_attn.v_proj",
    }
    assert set(lora_target_modules(tiny_random_model, ["encoder-ffn"])) == {
        "model.encoder.layers.0.fc1",
        "model.encoder.layers.0.fc2",
        "model.encoder.layers.1.fc1",
        "model.encoder.layers.1.fc2",
    }
    # overlapping presets are a union, not a double count
    assert len(lora_target_modules(tiny_random_model, ["decoder-self-qv", "decoder-self-qkv"])) == 6


def test_unknown_preset_names_the_valid_ones():
    with pytest.raises(UserError, match="decoder-self-qv.*encoder-ffn"):
        lora_target_regex(["decoder-self-qvx"])
    with pytest.raises(UserError, match="unknown decoder-mlp"):
        LoraSettings(["decoder-mlp"])
    with pytest.raises(UserError, match="lora.rank"):
        LoraSettings(rank=0)
    with pytest.raises(UserError, match="lora.dropout"):
        LoraSettings(dropout=1.0)


def test_only_lora_matrices_train_and_counts_match_the_preset(tiny_random_model):
    settings = LoraSettings(["decoder-self-qkvo", "decoder-ffn"], rank=4, alpha=8, dropout=0.0)
    peft_model = apply_lora(tiny_random_model, settings)
    wrapped = [n for n, _ in peft_model.named_modules() if n.endswith(".lora_A")]
    assert len(wrapped) == 8 + 4
    trainable = {n: p.numel() for n, p in peft_model.named_parameters() if p.requires_grad}
    assert trainable and all(".lora_A." in n or ".lora_B." in n for n in trainable)
    d, f, r = 64, 128, 4
    # 2 layers x [4 attention projections (d -> d) + fc1 (d -> f) + fc2 (f -> d)], rank r each side
    assert sum(trainable.values()) == 2 * (4 * r * (d + d) + r * (d + f) + r * (f + d))


def test_merged_and_unmerged_students_give_the_same_logits(tiny_random_model):
    torch.manual_seed(3)
    features = torch.randn(1, 80, 3000)
    tokens = torch.tensor([[50257, 11, 220, 5000, 9]])
    with torch.no_grad():
        base = tiny_random_model(input_features=features, decoder_input_ids=tokens).logits
    presets = ["decoder-self-qv", "decoder-cross-qkvo", "decoder-ffn", "encoder-self-qkv"]
    peft_model = apply_lora(tiny_random_model, LoraSettings(presets, rank=4, alpha=8, dropout=0.0)).eval()
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if ".lora_B." in name:
                param.normal_(0.0, 0.5)  # B starts at zero; perturb it so the adapter matters
        unmerged = peft_model(input_features=features, decoder_input_ids=tokens).logits
    assert (unmerged - base).abs().max() > 1e-2
    merged = merge_lora(peft_model).eval()
    assert not any("lora" in n for n, _ in merged.named_parameters())
    with torch.no_grad():
        after = merged(input_features=features, decoder_input_ids=tokens).logits
    torch.testing.assert_close(after, unmerged, atol=1e-5, rtol=0)


def test_apply_lora_refuses_a_preset_that_selects_nothing():
    from helpers import tiny_whisper_config
    from transformers import WhisperForConditionalGeneration

    model = WhisperForConditionalGeneration(tiny_whisper_config(encoder_layers=0))
    with pytest.raises(UserError, match="select no module"):
        apply_lora(model, LoraSettings(["encoder-ffn"]))
    with pytest.raises(UserError, match="merge_lora needs"):
        merge_lora(model)
