"""Student building against the teacher it came from, trainable parts, and the meta-device dry run."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers import tiny_whisper_config
from transformers import WhisperForConditionalGeneration

from whisperkd.errors import UserError
from whisperkd.models.lora import LoraSettings
from whisperkd.models.meta import dry_run, published_config
from whisperkd.models.student import (
    build_student_from_teacher,
    kept_layers,
    maximally_spaced,
    set_trainable,
)


@pytest.fixture
def teacher6():
    torch.manual_seed(0)
    return WhisperForConditionalGeneration(tiny_whisper_config(decoder_layers=6, encoder_layers=3)).eval()


def inputs():
    torch.manual_seed(1)
    return torch.randn(2, 80, 3000), torch.tensor([[50257, 11, 220, 5000], [50257, 7, 7, 50256]])


def logits(model, features, tokens):
    with torch.no_grad():
        return model(input_features=features, decoder_input_ids=tokens).logits


# ---- maximally spaced ------------------------------------------------------------------------


def test_maximally_spaced_table():
    assert maximally_spaced(32, 2) == [0, 31]
    assert maximally_spaced(32, 4) == [0, 10, 20, 31]
    assert maximally_spaced(32, 4, rounding="nearest") == [0, 10, 21, 31]
    assert maximally_spaced(6, 2) == [0, 5]
    assert maximally_spaced(6, 3) == [0, 2, 5]
    assert maximally_spaced(6, 3, rounding="nearest") == [0, 3, 5]  # 2.5 rounds half up
    assert maximally_spaced(32, 1) == [31]
    assert maximally_spaced(4, 4) == [0, 1, 2, 3]


def test_maximally_spaced_floor_equals_distil_whisper_linspace_for_whisper_depths():
    # distil-whisper: np.linspace(0, n - 1, k, dtype=int), last forced to n - 1. (Its float steps land
    # just below an integer in a few non-Whisper cases such as 31 -> 23; we use exact integers.)
    for n in (2, 4, 6, 12, 24, 32):
        for k in range(1, n + 1):
            reference = np.linspace(0, n - 1, k, dtype=int)
            reference[-1] = n - 1
            assert maximally_spaced(n, k) == reference.tolist(), (n, k)


def test_maximally_spaced_refuses_impossible_counts():
    with pytest.raises(UserError, match="cannot keep 7 of 6"):
        maximally_spaced(6, 7)
    with pytest.raises(UserError, match="cannot keep 0"):
        maximally_spaced(6, 0)


# ---- building ----------------------------------------------------------------------------------


def test_keeping_every_layer_reproduces_the_teacher_exactly(teacher6):
    student = build_student_from_teacher(teacher6, decoder_layers=6)
    features, tokens = inputs()
    assert torch.equal(logits(student, features, tokens), logits(teacher6, features, tokens))


def test_pruned_student_carries_the_kept_layers_in_order(teacher6):
    student = build_student_from_teacher(teacher6, decoder_layers=3, encoder_layers=[0, 2])
    assert kept_layers(student) == [0, 2, 5]
    assert kept_layers(student, "encoder") == [0, 2]
    assert student.config.decoder_layers == 3 and student.config.encoder_layers == 2
    for side, kept in (("decoder", [0, 2, 5]), ("encoder", [0, 2])):
        s_layers = getattr(student.model, side).layers
        t_layers = getattr(teacher6.model, side).layers
        assert len(s_layers) == len(kept)
        for j, t in enumerate(kept):
            s_state, t_state = s_layers[j].state_dict(), t_layers[t].state_dict()
            assert s_state.keys() == t_state.keys()
            assert all(torch.equal(s_state[k], t_state[k]) for k in s_state), (side, j, t)
            # a different teacher layer is really different (the comparison can fail)
            other = t_layers[(t + 1) % len(t_layers)].state_dict()
            assert not torch.equal(s_state["fc1.weight"], other["fc1.weight"])
    # everything outside the layers is the teacher's
    t_state = teacher6.state_dict()
    for key, value in student.state_dict().items():
        if ".layers." not in key:
            assert torch.equal(value, t_state[key]), key
    # cache slots follow the new positions, so generation with a cache works
    assert [layer.self_attn.layer_idx for layer in student.model.decoder.layers] == [0, 1, 2]


def test_pruned_student_generates_the_same_with_and_without_cache(teacher6):
    student = build_student_from_teacher(teacher6, decoder_layers=[1, 4])
    features, tokens = inputs()
    with torch.no_grad():
        cached = student(input_features=features, decoder_input_ids=tokens[:, :3], use_cache=True)
        step = student(
            encoder_outputs=(cached.encoder_last_hidden_state,),
            decoder_input_ids=tokens[:, 3:],
            cache=cached.cache,
            use_cache=True,
        ).logits
    torch.testing.assert_close(step[:, -1], logits(student, features, tokens)[:, -1], rtol=1e-5, atol=1e-5)


def test_teacher_is_untouched_and_shares_no_tensor(teacher6):
    before = {k: v.clone() for k, v in teacher6.state_dict().items()}
    config_before = teacher6.config.to_dict()
    student = build_student_from_teacher(teacher6, decoder_layers=2)
    with torch.no_grad():
        for param in student.parameters():
            param.add_(1.0)
    after = teacher6.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert teacher6.config.to_dict() == config_before
    assert len(teacher6.model.decoder.layers) == 6
    assert student.proj_out.weight is student.model.decoder.embed_tokens.weight


def test_kept_layers_survive_save_and_load(teacher6, tmp_path):
    teacher6.generation_config.alignment_heads = [[2, 0], [5, 1], [3, 1]]
    student = build_student_from_teacher(teacher6, decoder_layers=3)
    assert student.generation_config.alignment_heads == [[1, 0], [2, 1]]
    student.save_pretrained(tmp_path)
    loaded = WhisperForConditionalGeneration.from_pretrained(tmp_path)
    assert kept_layers(loaded) == [0, 2, 5]
    features, tokens = inputs()
    assert torch.equal(logits(loaded.eval(), features, tokens), logits(student, features, tokens))


def test_bad_layer_choices_are_user_errors(teacher6):
    with pytest.raises(UserError, match="decoder_layers"):
        build_student_from_teacher(teacher6, decoder_layers=[3, 1])
    with pytest.raises(UserError, match="decoder_layers"):
        build_student_from_teacher(teacher6, decoder_layers=[0, 6])
    with pytest.raises(UserError, match="encoder"):
        build_student_from_teacher(teacher6, decoder_layers=2, encoder_layers=4)
    with pytest.raises(UserError, match="teacher"):
        build_student_from_teacher(teacher6.model, decoder_layers=2)
    with pytest.raises(UserError, match="whisperkd"):
        kept_layers(teacher6)


# ---- what trains -------------------------------------------------------------------------------


def trainable_names(model) -> set[str]:
    return {n for n, p in model.named_parameters() if p.requires_grad}


def test_set_trainable_defaults_train_decoder_layers_only(tiny_random_model):
    count = set_trainable(tiny_random_model)
    names = trainable_names(tiny_random_model)
    assert names and all(n.startswith(("model.decoder.layers.", "model.decoder.layer_norm.")) for n in names)
    # by hand: 2 decoder layers of d=64, ffn=128, plus the final norm
    d, f = 64, 128
    per_layer = 2 * (4 * d * d + 3 * d) + 3 * 2 * d + (d * f + f) + (f * d + d)
    assert count == 2 * per_layer + 2 * d


def test_set_trainable_encoder_and_embeddings(tiny_random_model):
    set_trainable(tiny_random_model, train_encoder=True, train_decoder=False, train_embeddings=True)
    names = trainable_names(tiny_random_model)
    assert "model.encoder.conv1.weight" in names
    assert "model.encoder.embed_positions.weight" not in names  # sinusoids stay fixed
    assert "model.decoder.embed_tokens.weight" in names  # tied to proj_out
    assert tiny_random_model.proj_out.weight.requires_grad
    assert not any(n.startswith("model.decoder.layers.") for n in names)


# ---- dry run on the meta device ----------------------------------------------------------------

D, F, V = 1280, 5120, 51865
ENCODER_LARGE_V2 = (80 * D * 3 + D) + (D * D * 3 + D) + 1500 * D + 32 * (4 * D * D + 2 * D * F + 8 * D + F) + 2 * D
DECODER_LAYER = 8 * D * D + 2 * D * F + 13 * D + F
DECODER_SHARED = V * D + 448 * D + 2 * D  # tokens (tied to proj_out), positions, final norm


def test_dry_run_large_v2_to_four_decoder_layers_with_lora():
    report = dry_run(published_config("large-v2"), 4, lora=LoraSettings(["decoder-self-qv"], rank=8))
    assert report.teacher_total == ENCODER_LARGE_V2 + DECODER_SHARED + 32 * DECODER_LAYER == 1_543_304_960
    assert report.teacher_total == pytest.approx(1550e6, rel=0.01)  # published: 1550 M
    lora = 4 * 2 * 8 * (D + D)  # 4 layers x (q, v) x rank x (in + out)
    assert report.student_total == ENCODER_LARGE_V2 + DECODER_SHARED + 4 * DECODER_LAYER + lora
    assert report.student_trainable == lora == 163_840
    assert report.teacher_trainable == 0
    assert report.decoder_layers_kept == [0, 10, 20, 31]
    assert report.lora_modules == 8
    assert report.projector_shape == (D, D) and report.projector_params == D * D + D
    trainable = lora + D * D + D
    frozen = report.teacher_total + report.student_total - lora
    assert report.memory.weights == frozen * 2 + trainable * 4  # bfloat16
    assert report.memory.gradients == trainable * 4 and report.memory.optimizer == trainable * 8
    b, batch, length, s, h = 2, 8, 448, 1500, 20
    decoder = b * batch * 4 * (length * (12 * D + 2 * F) + h * length * (length + s))
    assert report.memory.activations == 16 * batch * length * V + 2 * b * batch * s * D + decoder
    assert "GiB" in report.summary()


def test_dry_run_large_v3_full_decoder_training_without_projector():
    report = dry_run(published_config("large-v3"), 2, projector=False, dtype="float32")
    # large-v3: 128 mel bins (conv1 grows by 48 * D * 3) and one more token than large-v2
    v3_teacher = 1_543_304_960 + 48 * D * 3 + D
    assert report.teacher_total == v3_teacher
    assert report.student_trainable == 2 * DECODER_LAYER + 2 * D
    assert report.projector_shape is None
    with pytest.raises(UserError, match="model size"):
        published_config("huge")
