"""``whisperkd distill CONFIG --dry-run``: the run's choices sized on the meta device from the config alone.

Parameters (total and trainable), the projector and a memory estimate, with no weights and no download.
"""

from __future__ import annotations

from pathlib import Path

from transformers import WhisperConfig

from whisperkd.config import Config
from whisperkd.errors import UserError
from whisperkd.models.fetch import OFFLINE_MODELS, is_fetched, model_dir
from whisperkd.models.lora import LoraSettings
from whisperkd.models.meta import PUBLISHED_DIMS, dry_run, published_config


def config_without_weights(name: str, key: str) -> tuple[WhisperConfig, str]:
    """A model's WhisperConfig with no weights and no download: a local directory or a published size."""
    if name in OFFLINE_MODELS and is_fetched(name):
        return WhisperConfig.from_pretrained(model_dir(name)), "fetched"
    path = Path(name).expanduser()
    for folder in (path / "student_final", path):
        if (folder / "config.json").is_file():
            return WhisperConfig.from_pretrained(folder), str(folder)
    size = name.removeprefix("openai/whisper-")
    if size in PUBLISHED_DIMS:
        return published_config(size), "published dimensions"
    raise UserError(f"config {key}: {name!r} is neither a local Whisper directory nor a published size "
                    f"({', '.join(PUBLISHED_DIMS)}, or openai/whisper-<size>); the dry run downloads nothing")


def dry_run_report(cfg: Config) -> str:
    """Parameters (total/trainable), projector shape and a memory estimate, from the config alone."""
    if cfg.student.init != "teacher":
        raise UserError("config student.init: the dry run sizes students pruned from the teacher (student.init=teacher)")
    teacher_config, source = config_without_weights(cfg.teacher.model, "teacher.model")
    lora = None
    if cfg.lora.enabled:
        lo = cfg.lora
        lora = LoraSettings(presets=lo.presets, rank=lo.rank, alpha=lo.alpha, dropout=lo.dropout)
    precision = {"no": "float32", "bf16": "bfloat16", "fp16": "float16", "auto": "bfloat16"}[cfg.train.mixed_precision]
    s, align = cfg.student, cfg.loss.align_weight > 0
    result = dry_run(teacher_config, s.decoder_layers, s.encoder_layers, lora=lora, train_encoder=s.train_encoder,
                     train_decoder=s.train_decoder, train_embeddings=s.train_embeddings, projector=align,
                     dtype=precision, batch_size=cfg.train.batch_size, target_len=cfg.data.max_label_tokens)
    n_enc, n_dec = teacher_config.encoder_layers, teacher_config.decoder_layers
    encoder_trains = (s.train_encoder and lora is None) or (lora is not None and any(
        p.startswith("encoder") for p in lora.presets))
    shared = len(result.encoder_layers_kept) == n_enc and not encoder_trains and not cfg.teacher.load_in_8bit
    d_s = d_t = teacher_config.d_model
    gib, m = 1024**3, result.memory
    how = (f"LoRA rank {lora.rank} on {result.lora_modules} modules ({', '.join(lora.presets)})" if lora else
           "full fine-tuning of " + ", ".join(p for p, on in (("encoder", s.train_encoder), ("decoder", s.train_decoder),
                                                               ("embeddings", s.train_embeddings)) if on))
    pct = 100 * result.student_trainable / result.student_total
    lines = [
        f"teacher   {cfg.teacher.model} ({source}): {result.teacher_total:,} parameters, frozen",
        f"student   decoder layers {result.decoder_layers_kept} of {n_dec}; encoder {len(result.encoder_layers_kept)} "
        f"of {n_enc} layers, " + ("frozen and shared with the teacher (its output is computed once per batch)"
                                  if shared else ("trained" if encoder_trains else "frozen")),
        f"          {how}",
        f"          {result.student_total:,} parameters, {result.student_trainable:,} trainable ({pct:.2f}%)",
        f"projector {d_s} -> {d_t}: {d_s * d_t + d_t:,} parameters, "
        + ("trained (loss.align_weight > 0)" if align else "not trained (loss.align_weight is 0)"),
        f"memory    ~ {m.total / gib:.2f} GiB at {precision}, batch {cfg.train.batch_size} x "
        f"{cfg.data.max_label_tokens} tokens = weights {m.weights / gib:.2f} + gradients {m.gradients / gib:.2f} "
        f"+ AdamW {m.optimizer / gib:.2f} + activations {m.activations / gib:.2f} (rough guide, docs/losses.md)",
    ]
    return "\n".join(lines)
