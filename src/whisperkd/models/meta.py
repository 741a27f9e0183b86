"""Dry run: size a teacher/student pair on the meta device (no weights) and estimate training memory.

Nothing is allocated: models are built under ``torch.device("meta")``, so large-v3 takes a second.
The memory formula (bytes; docs/losses.md has it with its assumptions):

    weights     = (teacher params + frozen student params) * b  +  trainable * 4
    gradients   = trainable * 4
    optimizer   = trainable * 8                        (AdamW exp_avg and exp_avg_sq in float32)
    activations = b * B * n_dec * (L * (12 d + 2 f) + h * L * (L + S))   if the decoder trains
                + b * B * n_enc * (S * (12 d + 2 f) + h * S * S)         if the encoder trains
                + 16 * B * L * V                       (float32 logits and log-softmax, teacher and student)
                + 2 * b * B * S * d                    (teacher and student encoder outputs)

b = bytes per element of ``dtype``; trainable parameters (LoRA, projector, fully trained parts) are
counted in float32 as mixed-precision training keeps them. B = batch size, L = target tokens,
S = encoder frames (1500), d = width, f = feed-forward width, h = heads, V = vocabulary.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from transformers import WhisperConfig, WhisperForConditionalGeneration

from whisperkd.errors import UserError
from whisperkd.models.lora import LoraSettings, apply_lora
from whisperkd.models.student import build_student_from_teacher, set_trainable

# Published dimensions (openai/whisper ModelDimensions): width, layers per side, heads, vocab, mel bins.
PUBLISHED_DIMS: dict[str, dict[str, int]] = {
    "tiny.en": dict(d_model=384, encoder_layers=4, decoder_layers=4, heads=6, vocab_size=51864, num_mel_bins=80),
    "tiny": dict(d_model=384, encoder_layers=4, decoder_layers=4, heads=6, vocab_size=51865, num_mel_bins=80),
    "base.en": dict(d_model=512, encoder_layers=6, decoder_layers=6, heads=8, vocab_size=51864, num_mel_bins=80),
    "base": dict(d_model=512, encoder_layers=6, decoder_layers=6, heads=8, vocab_size=51865, num_mel_bins=80),
    "small.en": dict(d_model=768, encoder_layers=12, decoder_layers=12, heads=12, vocab_size=51864, num_mel_bins=80),
    "small": dict(d_model=768, encoder_layers=12, decoder_layers=12, heads=12, vocab_size=51865, num_mel_bins=80),
    "medium.en": dict(d_model=1024, encoder_layers=24, decoder_layers=24, heads=16, vocab_size=51864, num_mel_bins=80),
    "medium": dict(d_model=1024, encoder_layers=24, decoder_layers=24, heads=16, vocab_size=51865, num_mel_bins=80),
    "large-v2": dict(d_model=1280, encoder_layers=32, decoder_layers=32, heads=20, vocab_size=51865, num_mel_bins=80),
    "large-v3": dict(d_model=1280, encoder_layers=32, decoder_layers=32, heads=20, vocab_size=51866, num_mel_bins=128),
    "large-v3-turbo": dict(
        d_model=1280, encoder_layers=32, decoder_layers=4, heads=20, vocab_size=51866, num_mel_bins=128
    ),
}
DTYPE_NAMES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def published_config(name: str) -> WhisperConfig:
    """A ``WhisperConfig`` with the published dimensions of an OpenAI Whisper size (feed-forward = 4 d)."""
    if name not in PUBLISHED_DIMS:
        raise UserError(f"model size: unknown {name!r}; use one of {', '.join(PUBLISHED_DIMS)}")
    dims = PUBLISHED_DIMS[name]
    d, heads = dims["d_model"], dims["heads"]
    return WhisperConfig(
        vocab_size=dims["vocab_size"],
        num_mel_bins=dims["num_mel_bins"],
        d_model=d,
        encoder_layers=dims["encoder_layers"],
        decoder_layers=dims["decoder_layers"],
        encoder_attention_heads=heads,
        decoder_attention_heads=heads,
        encoder_ffn_dim=4 * d,
        decoder_ffn_dim=4 * d,
        max_source_positions=1500,
        max_target_positions=448,
    )


@dataclass
class MemoryEstimate:
    """Bytes by kind; see the module docstring for the formula."""

    weights: int
    gradients: int
    optimizer: int
    activations: int

    @property
    def total(self) -> int:
        return self.weights + self.gradients + self.optimizer + self.activations


@dataclass
class DryRun:
    """Parameter counts of a teacher/student pair and a training memory estimate.

    ``student_total`` includes LoRA matrices when LoRA is applied; the projector is counted apart.
    """

    teacher_total: int
    teacher_trainable: int
    student_total: int
    student_trainable: int
    encoder_layers_kept: list[int]
    decoder_layers_kept: list[int]
    lora_modules: int
    projector_shape: tuple[int, int] | None
    projector_params: int
    memory: MemoryEstimate

    def summary(self) -> str:
        """A few human-readable lines (millions of parameters, GiB)."""
        gib = 1024**3
        m = self.memory
        lines = [
            f"teacher: {self.teacher_total / 1e6:.1f} M params (frozen)",
            f"student: {self.student_total / 1e6:.1f} M params, {self.student_trainable / 1e6:.3f} M trainable, "
            f"decoder layers {self.decoder_layers_kept}, {len(self.encoder_layers_kept)} encoder layers",
            f"projector: {self.projector_shape} ({self.projector_params} params)" if self.projector_shape else
            "projector: none",
            f"memory ~ {m.total / gib:.2f} GiB = weights {m.weights / gib:.2f} + grads {m.gradients / gib:.2f} "
            f"+ AdamW {m.optimizer / gib:.2f} + activations {m.activations / gib:.2f}",
        ]
        return "\n".join(lines)


def _dtype(dtype: torch.dtype | str) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype not in DTYPE_NAMES:
        raise UserError(f"dtype: got {dtype!r}; use one of {', '.join(DTYPE_NAMES)}")
    return DTYPE_NAMES[dtype]


def _count(params) -> int:
    return sum(p.numel() for p in params)


def dry_run(
    teacher_config: WhisperConfig,
    decoder_layers: int | Sequence[int],
    encoder_layers: int | Sequence[int] | None = None,
    lora: LoraSettings | None = None,
    train_encoder: bool = False,
    train_decoder: bool = True,
    train_embeddings: bool = False,
    projector: bool = True,
    dtype: torch.dtype | str = torch.bfloat16,
    batch_size: int = 8,
    target_len: int = 448,
) -> DryRun:
    """Build teacher and student on the meta device, apply LoRA (or ``set_trainable``), count and estimate."""
    if batch_size < 1 or target_len < 1:
        raise UserError(f"dry run: batch_size {batch_size} and target_len {target_len} must be positive")
    with torch.device("meta"):
        teacher = WhisperForConditionalGeneration(teacher_config)
    teacher.requires_grad_(False)
    student = build_student_from_teacher(teacher, decoder_layers, encoder_layers)
    kept = student.config.whisperkd
    if lora is not None:
        student.requires_grad_(False)
        model = apply_lora(student, lora)
        lora_modules = sum(1 for name, _ in model.named_modules() if name.endswith(".lora_A"))
    else:
        set_trainable(student, train_encoder, train_decoder, train_embeddings)
        model, lora_modules = student, 0

    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    student_total = _count(model.parameters())
    student_trainable = _count(p for _, p in trainable)
    d_student, d_teacher = student.config.d_model, teacher_config.d_model
    projector_params = d_student * d_teacher + d_teacher if projector else 0
    teacher_total = _count(teacher.parameters())

    c, b = student.config, torch.empty((), dtype=_dtype(dtype)).element_size()
    big_b, big_l, big_s = batch_size, target_len, c.max_source_positions
    n_train = student_trainable + projector_params
    activations = 16 * big_b * big_l * c.vocab_size + 2 * b * big_b * big_s * c.d_model
    if any(".decoder." in n for n, _ in trainable):
        per_layer = big_l * (12 * c.d_model + 2 * c.decoder_ffn_dim) + c.decoder_attention_heads * big_l * (
            big_l + big_s
        )
        activations += b * big_b * c.decoder_layers * per_layer
    if any(".encoder." in n for n, _ in trainable):
        per_layer = big_s * (12 * c.d_model + 2 * c.encoder_ffn_dim) + c.encoder_attention_heads * big_s * big_s
        activations += b * big_b * c.encoder_layers * per_layer
    memory = MemoryEstimate(
        weights=(teacher_total + student_total - student_trainable) * b + n_train * 4,
        gradients=n_train * 4,
        optimizer=n_train * 8,
        activations=activations,
    )
    return DryRun(
        teacher_total=teacher_total,
        teacher_trainable=_count(p for p in teacher.parameters() if p.requires_grad),
        student_total=student_total,
        student_trainable=student_trainable,
        encoder_layers_kept=list(kept["encoder_layers_kept"]),
        decoder_layers_kept=list(kept["decoder_layers_kept"]),
        lora_modules=lora_modules,
        projector_shape=(d_student, d_teacher) if projector else None,
        projector_params=projector_params,
        memory=memory,
    )
