"""The lean greedy loop (static self-attention cache, cross-attention keys/values computed once) against HF:
``generate``'s greedy transcripts and a cache-free forward pass over the whole sequence."""

from __future__ import annotations

import torch
from transformers import GenerationConfig

from whisperkd.models.lean_decode import LeanDecoder

EOT = 50256


def _model(tiny_random_model, suppress=(), begin=()):
    model = tiny_random_model
    model.generation_config = GenerationConfig(decoder_start_token_id=50257, eos_token_id=EOT, pad_token_id=EOT,
                                               suppress_tokens=list(suppress), begin_suppress_tokens=list(begin))
    return model


def _features(batch: int = 3, frames: int = 3000) -> torch.Tensor:
    return torch.randn(batch, 80, frames, generator=torch.Generator().manual_seed(1))


def _new_tokens(sequences: torch.Tensor, prompt_len: int) -> list[list[int]]:
    rows = [row[prompt_len:].tolist() for row in sequences]
    return [row[: row.index(EOT)] if EOT in row else row for row in rows]


def _generate(model, feats, max_new_tokens):
    out = model.generate(feats, max_new_tokens=max_new_tokens, num_beams=1, do_sample=False)
    # transformers 5 returns the sequences with the decoder start token; strip it when it is there
    prompt_len = 1 if bool((out[:, 0] == 50257).all()) else 0
    return _new_tokens(out, prompt_len)


def _stop_rows_early(model, stops: dict[int, int]):
    """A hook on the output layer: row r emits end-of-text at decoding step stops[r] (counted per call)."""
    calls = {"n": 0}

    def hook(module, args, output):
        step = calls["n"]
        calls["n"] += 1
        for row, at in stops.items():
            if step == at:
                output[row, ..., EOT] = 1e4  # [batch, vocab] here, [batch, time, vocab] in HF
        return output

    return model.proj_out.register_forward_hook(hook), calls


def test_equals_hf_generate_with_suppress_lists(tiny_random_model):
    model = _model(tiny_random_model, suppress=(11, 12, 13), begin=(220, EOT))
    feats = _features()
    with torch.no_grad():
        enc = model.model.encoder(feats).last_hidden_state
    ours = LeanDecoder(model)(enc, [50257], 12)
    assert ours == _generate(model, feats, 12)
    assert all(len(row) == 12 for row in ours)  # a random model does not stop by itself
    assert not any(t in (11, 12, 13) for row in ours for t in row)


def test_rows_finishing_at_different_steps_equal_generate(tiny_random_model):
    model = _model(tiny_random_model)
    feats = _features()
    with torch.no_grad():
        enc = model.model.encoder(feats).last_hidden_state
    handle, calls = _stop_rows_early(model, {0: 2, 2: 5})
    ours = LeanDecoder(model)(enc, [50257], 10)
    calls["n"] = 0
    reference = _generate(model, feats, 10)
    handle.remove()
    assert [len(r) for r in ours] == [2, 10, 5]
    assert ours == reference


def test_each_token_is_the_argmax_of_a_cache_free_forward_pass(tiny_random_model):
    """A longer prompt (the causal mask over the prompt, then one position per step) against HF's forward over
    the whole sequence at once, without any cache."""
    model = _model(tiny_random_model, begin=(220,))
    prompt = [50257, 50259, 50359, 50363]
    feats = _features(batch=2)
    with torch.no_grad():
        enc = model.model.encoder(feats).last_hidden_state
        ours = LeanDecoder(model)(enc, prompt, 8)
        ids = torch.tensor([prompt + row for row in ours])
        logits = model(encoder_outputs=(enc,), decoder_input_ids=ids, use_cache=False).logits
    logits[:, len(prompt) - 1, 220] = -float("inf")
    expected = logits[:, len(prompt) - 1 : -1].argmax(-1).tolist()
    assert ours == expected


def test_stops_at_the_position_table(tiny_random_model):
    model = _model(tiny_random_model)
    with torch.no_grad():
        enc = model.model.encoder(_features(batch=1)).last_hidden_state
    prompt = [50257] * 440
    assert [len(r) for r in LeanDecoder(model)(enc, prompt, 100)] == [448 - 440]


def test_equals_hf_generate_under_a_short_window(tiny_random_model):
    """The same model and window: generate on 10-s features inside encoder_window, the lean loop on the encoder
    outputs of that window (500 positions)."""
    from whisperkd.models.window import encoder_window

    model = _model(tiny_random_model)
    feats = _features(2)
    with torch.no_grad(), encoder_window(model, 10) as frames:
        enc = model.model.encoder(feats[..., :frames]).last_hidden_state
        reference = _generate(model, feats[..., :frames], 10)
    assert enc.shape[1] == 500
    assert LeanDecoder(model)(enc, [50257], 10) == reference
