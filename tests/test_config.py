"""The distill config: YAML + dotted overrides, one-line errors naming the key, and the large-v2 dry run."""

from __future__ import annotations

from pathlib import Path

import pytest

from whisperkd.cli import main
from whisperkd.config import Config, config_from_dict, load_config, parse_value
from whisperkd.errors import UserError

REPO = Path(__file__).resolve().parents[1]
RECIPE = REPO / "configs" / "large-v2-4layer-lora.yaml"


def test_yaml_file_and_overrides(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("student:\n  decoder_layers: 2\noptim:\n  lr: 2.6e-4\n  warmup_steps: 0\n"
                    "loss:\n  taid: {alpha: 1e-3}\n")
    cfg = load_config(path, ["optim.lr=1e-4", "student.decoder_layers=[0,3]", "loss.kind=taid",
                             "lora.presets=[decoder-ffn, decoder-self-qv]", "data.dev=null", "train.max_steps=50"])
    assert cfg.optim.lr == 1e-4 and isinstance(cfg.optim.lr, float)
    assert cfg.student.decoder_layers == [0, 3]
    assert cfg.loss.kind == "taid" and cfg.loss.taid.alpha == 1e-3
    assert cfg.lora.presets == ["decoder-ffn", "decoder-self-qv"]
    assert cfg.train.max_steps == 50 and cfg.data.dev is None
    assert load_config(path).optim.lr == 2.6e-4  # YAML 1.1 would read "2.6e-4" as a string
    assert config_from_dict(cfg.to_dict()) == cfg  # what training_config.json holds loads back the same


def test_renamed_keys_still_load():
    cfg = config_from_dict({"student": {"decoder_layers": 2}, "teacher": {"encoder_memo_size": 7}})
    assert cfg.teacher.memo_size == 7


def test_values_parse_as_yaml_scalars():
    assert parse_value("1e-4") == 1e-4
    assert parse_value("[0, 3]") == [0, 3]
    assert parse_value("true") is True and parse_value("null") is None and parse_value("") is None
    assert parse_value("no") == "no" and parse_value("on") == "on"  # YAML 1.2: only true/false are booleans
    assert parse_value("openai/whisper-large-v2") == "openai/whisper-large-v2"


@pytest.mark.parametrize("override, message", [
    ("optim.lrr=1e-4", "config optim.lrr: unknown key; valid keys: lr, weight_decay, betas, eps, warmup_steps, "
                       "grad_clip"),
    ("optimizer.lr=1", "config optimizer: unknown section; valid sections: teacher, student, lora, loss, optim, "
                       "train, data, eval, output, cache"),
    ("loss.taid.gamma=1", "config loss.taid.gamma: unknown key; valid keys: t_start, t_end, alpha, beta, mode, "
                          "divergence"),
    ("optim.lr=fast", "config optim.lr: expected a number, got 'fast' (str)"),
    ("train.max_steps=1.5", "config train.max_steps: expected an integer, got 1.5 (float)"),
    ("train.progress=1", "config train.progress: expected true or false, got 1 (int)"),
    ("student.decoder_layers=[0,x]", "config student.decoder_layers: expected an integer or a list of integers "
                                     "or null, got [0, 'x'] (list)"),
    ("loss.kind=mse", "config loss.kind: got 'mse' (str); valid values: kl, taid"),
    ("optim.lr=-1", "config optim.lr: must be positive (e.g. 1e-4)"),
    ("optim", "override 'optim': expected KEY=VALUE with a dotted key such as optim.lr=1e-4"),
])
def test_mistakes_are_one_line_naming_the_key(override, message):
    with pytest.raises(UserError) as err:
        config_from_dict({"student": {"decoder_layers": 2}}, [override])
    assert str(err.value) == message and "\n" not in str(err.value)


def test_cross_key_checks():
    with pytest.raises(UserError, match=r"^config student.decoder_layers: required when student.init is teacher"):
        config_from_dict({})
    with pytest.raises(UserError, match=r"^config optim.warmup_steps: must be in 0..train.max_steps \(10\)"):
        config_from_dict({"student": {"decoder_layers": 2}}, ["train.max_steps=10", "optim.warmup_steps=20"])
    with pytest.raises(UserError, match=r"^lora.presets: unknown nope"):
        config_from_dict({"student": {"decoder_layers": 2}}, ["lora.enabled=true", "lora.presets=[nope]"])


def test_cli_reports_config_mistakes_in_one_line(capsys):
    assert main(["distill", str(RECIPE), "optim.lrr=1e-4"]) == 2
    err = capsys.readouterr().err
    assert err == ("whisperkd distill: error: config optim.lrr: unknown key; valid keys: lr, weight_decay, betas, "
                   "eps, warmup_steps, grad_clip\n")
    assert main(["distill", str(RECIPE), "train.batch_size=eight"]) == 2
    assert capsys.readouterr().err.count("\n") == 1


def test_recipe_is_the_thesis_recipe():
    cfg = load_config(RECIPE)
    assert isinstance(cfg, Config)
    assert cfg.teacher.model == "openai/whisper-large-v2" and cfg.student.decoder_layers == 4
    assert cfg.lora.enabled and cfg.student.encoder_layers is None and not cfg.student.train_encoder
    assert (cfg.optim.lr, cfg.optim.warmup_steps, cfg.train.max_steps, cfg.optim.grad_clip) == (2.6e-4, 1000, 10000, 1.0)
    assert (cfg.loss.kind, cfg.loss.temperature, cfg.loss.ce_weight, cfg.loss.kl_weight) == ("kl", 2.0, 1.0, 0.8)


def _whisper_params(d: int, n_enc: int, n_dec: int, vocab: int, mels: int = 80) -> tuple[int, int]:
    """(encoder, decoder) parameter counts of HF Whisper, by hand (output projection tied to the embeddings)."""
    f = 4 * d
    enc_layer = 4 * d * d + 2 * d * f + 8 * d + f  # self-attn (k has no bias), 2 norms, fc1, fc2
    dec_layer = 8 * d * d + 2 * d * f + 13 * d + f  # + cross-attention and its norm
    encoder = (mels * d * 3 + d) + (d * d * 3 + d) + 1500 * d + n_enc * enc_layer + 2 * d
    decoder = vocab * d + 448 * d + n_dec * dec_layer + 2 * d
    return encoder, decoder


def test_dry_run_of_the_large_v2_recipe(capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # the dry run downloads nothing
    assert main(["distill", str(RECIPE), "--dry-run"]) == 0
    out = capsys.readouterr().out
    d, vocab = 1280, 51865
    enc, dec = _whisper_params(d, 32, 32, vocab)
    assert enc + dec == 1_543_304_960  # whisper-large-v2 as published on the HF hub
    _, dec4 = _whisper_params(d, 32, 4, vocab)
    rank = 32  # LoRA r * (in + out) on q, k, v, out of self- and cross-attention, fc1 and fc2, in 4 layers
    lora = 4 * rank * (8 * (d + d) + 2 * (d + 4 * d))
    assert lora == 4_259_840
    assert f"teacher   openai/whisper-large-v2 (published dimensions): {enc + dec:,} parameters, frozen" in out
    assert "decoder layers [0, 10, 20, 31] of 32; encoder 32 of 32 layers, frozen and shared" in out
    assert "LoRA rank 32 on 40 modules" in out
    assert f"{enc + dec4 + lora:,} parameters, {lora:,} trainable" in out
    assert f"projector 1280 -> 1280: {d * d + d:,} parameters, not trained" in out
    assert "memory    ~ 13.55 GiB at bfloat16, batch 16 x 448 tokens" in out
    print(out)


def test_dry_run_sizes_overrides(capsys):
    assert main(["distill", str(RECIPE), "--dry-run", "lora.enabled=false", "student.decoder_layers=[0,31]",
                 "loss.align_weight=0.5", "train.mixed_precision=no"]) == 0
    out = capsys.readouterr().out
    _, dec = _whisper_params(1280, 32, 2, 51865)
    trainable = 2 * (8 * 1280**2 + 2 * 1280 * 5120 + 13 * 1280 + 5120) + 2 * 1280  # 2 layers + final norm
    assert f"{trainable:,} trainable" in out and "full fine-tuning of decoder" in out
    assert "projector 1280 -> 1280: 1,639,680 parameters, trained" in out and "at float32" in out


def test_print_config(capsys):
    assert main(["distill", str(RECIPE), "optim.lr=1e-4", "--print-config"]) == 0
    out = capsys.readouterr().out
    assert "  lr: 0.0001\n" in out and "teacher:\n  model: openai/whisper-large-v2\n" in out
