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


@pytest.mark.parametrize("path", sorted((REPO / "configs").glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_config_loads_and_validates(path):
    assert isinstance(load_config(path), Config)


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


# ---------------------------------------------------------------- reading the YAML (ruamel.yaml, YAML 1.2)

def _mistake_in_file(tmp_path, content: str | bytes) -> str:
    path = tmp_path / "run.yaml"
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    with pytest.raises(UserError) as err:
        load_config(path)
    assert "\n" not in str(err.value)
    return str(err.value).replace(str(path), "FILE")


def test_a_key_given_twice_is_refused(tmp_path):
    assert _mistake_in_file(tmp_path, "student:\n  decoder_layers: 2\noptim:\n  lr: 1e-4\n  lr: 2e-4\n") == \
        "FILE:5: duplicate key 'lr'; give each key once"
    assert _mistake_in_file(tmp_path, "optim: {lr: 1}\nstudent: {decoder_layers: 2}\noptim: {eps: 1}\n") == \
        "FILE:3: duplicate key 'optim'; give each key once"


@pytest.mark.parametrize("value, tag", [
    ("!!python/object:os.system {}", "!!python/object:os.system"),
    ("!!python/object/apply:os.system [ls]", "!!python/object/apply:os.system"),
    ("!!binary aGVsbG8=", "!!binary 'aGVsbG8='"),
    ("!!set {a, b}", "!!set"),
    ("2024-01-01", "!!timestamp '2024-01-01'"),
    ("!custom x", "!custom 'x'"),
])
def test_tags_that_build_objects_are_refused(tmp_path, value, tag):
    message = _mistake_in_file(tmp_path, f"student:\n  decoder_layers: 2\nteacher:\n  model: {value}\n")
    assert message.startswith(f"FILE:4: {tag} refused: a config holds only strings, numbers, true/false, null, ")


def test_yaml_mistakes_name_file_and_line(tmp_path):
    assert _mistake_in_file(tmp_path, "student:\n  decoder_layers: 2\noptim: [1\n") .startswith("FILE:4: ")
    assert _mistake_in_file(tmp_path, "- 1\n- 2\n") == \
        "FILE: expected a mapping of sections (teacher:, student:, ...), got list"
    assert _mistake_in_file(tmp_path, b"student:\n  decoder_layers: 2\nteacher:\n  model: caf\xe9\n") == \
        "FILE:4: not UTF-8 text (byte 0xe9); save it as UTF-8"


def test_yaml_12_scalars_and_json(tmp_path):
    path = tmp_path / "run.json"
    path.write_text('{"student": {"decoder_layers": [0, 3]}, "train": {"mixed_precision": "no"}, '
                    '"optim": {"lr": 1e-4}}')
    cfg = load_config(path, ["train.mixed_precision=no", "optim.eps=1e-9"])
    assert (cfg.student.decoder_layers, cfg.train.mixed_precision, cfg.optim.lr, cfg.optim.eps) == \
        ([0, 3], "no", 1e-4, 1e-9)
    path.write_text("student: {decoder_layers: 2}\noptim:\ntrain:\n  mixed_precision: no\n")
    cfg = load_config(path)  # an empty section is its defaults
    assert cfg.optim == Config().optim and cfg.train.mixed_precision == "no"


@pytest.mark.parametrize("override, message", [
    ("optim.lr=.inf", "config optim.lr: must be a finite number"),
    ("optim.betas=[0.9, .nan]", "config optim.betas: must be a finite number"),
    ("loss.temperature=-.inf", "config loss.temperature: must be a finite number"),
    ("optim.lr=\"1e-4\"", "config optim.lr: expected a number, got '1e-4' (str)"),
    ("train.max_steps=true", "config train.max_steps: expected an integer, got True (bool)"),
    ("optim=3", "config optim: expected a mapping of keys, got 3 (int)"),
    ("teacher.model=!!binary aGk=", "config teacher.model: value '!!binary aGk=': !!binary 'aGk=' refused: a config "
                                    "holds only strings, numbers, true/false, null, lists and mappings (quote a "
                                    "value to keep it as text)"),
    ("cache.logits=topk", None),
    ("cache.topk=0", None),
])
def test_non_finite_numbers_and_strict_types_are_refused(override, message):
    if message is None:
        config_from_dict({"student": {"decoder_layers": 2}}, [override])
        return
    with pytest.raises(UserError) as err:
        config_from_dict({"student": {"decoder_layers": 2}}, [override])
    assert str(err.value) == message


def test_cache_topk_zero_with_topk_logits_is_refused():
    cfg = config_from_dict({"student": {"decoder_layers": 2}}, ["cache.logits=topk"])
    assert (cfg.cache.k, config_from_dict({"student": {"decoder_layers": 2}}).cache.k) == (64, 0)
    with pytest.raises(UserError) as err:
        config_from_dict({"student": {"decoder_layers": 2}}, ["cache.logits=topk", "cache.topk=0"])
    assert str(err.value) == "config cache.topk: 0 stores no top-k, but cache.logits is topk; give k (e.g. 64)"


def test_options_anywhere_among_the_overrides(capsys):
    assert main(["distill", str(RECIPE), "optim.lr=1e-4", "--print-config", "train.max_steps=7777"]) == 0
    out = capsys.readouterr().out
    assert "  lr: 0.0001\n" in out and "  max_steps: 7777\n" in out
    assert main(["distill", "--print-config", str(RECIPE), "optim.lr=3e-4"]) == 0
    assert "  lr: 0.0003\n" in capsys.readouterr().out
    assert main(["distill", "--resume", "runs/x", "optim.lr=1e-4"]) == 2
    assert "--resume RUN_DIR takes no config or overrides" in capsys.readouterr().err
    assert main(["distill", "optim.lr=1e-4", "--print-config"]) == 2
    assert capsys.readouterr().err == ("whisperkd distill: error: give a config file (e.g. "
                                       "configs/tiny-en-2layer.yaml) or --resume RUN_DIR\n")
    with pytest.raises(SystemExit) as exit_:
        main(["distill", str(RECIPE), "optim.lr=1e-4", "--bogus"])
    assert exit_.value.code == 2
    assert "whisperkd distill: error: unrecognized arguments: --bogus" in capsys.readouterr().err
    assert main(["cache", "--check", "optim.lr=1e-4"]) == 2
    assert capsys.readouterr().err == ("whisperkd cache: error: give the distillation config first: whisperkd cache "
                                       "CONFIG [KEY=VALUE ...]\n")
