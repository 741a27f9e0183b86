"""LoRA on Whisper with PEFT: named presets of target modules, apply, merge.

A preset is a regular expression over module names of ``WhisperForConditionalGeneration``
(PEFT full-matches a string ``target_modules`` against each name, e.g.
``model.decoder.layers.3.self_attn.q_proj``). Several presets are joined with ``|``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from peft import LoraConfig, PeftModel, get_peft_model
from torch import nn
from transformers import WhisperForConditionalGeneration

from whisperkd.errors import UserError

_LAYER = r"model\.{side}\.layers\.\d+\."


def _attn(side: str, block: str, projections: str) -> str:
    names = "|".join(f"{p}_proj" for p in projections)
    return _LAYER.format(side=side) + rf"{block}\.(?:{names})"


def _ffn(side: str) -> str:
    return _LAYER.format(side=side) + r"(?:fc1|fc2)"


#: name -> module-name regex. q,k,v,o = the attention's q_proj, k_proj, v_proj, out_proj;
#: "self" = self-attention, "cross" = the decoder's attention over the encoder output (encoder_attn).
LORA_PRESETS: dict[str, str] = {
    "decoder-self-qv": _attn("decoder", "self_attn", "qv"),
    "decoder-self-qkv": _attn("decoder", "self_attn", "qkv"),
    "decoder-self-qkvo": _attn("decoder", "self_attn", ("q", "k", "v", "out")),
    "decoder-cross-qv": _attn("decoder", "encoder_attn", "qv"),
    "decoder-cross-qkv": _attn("decoder", "encoder_attn", "qkv"),
    "decoder-cross-qkvo": _attn("decoder", "encoder_attn", ("q", "k", "v", "out")),
    "decoder-ffn": _ffn("decoder"),
    "encoder-self-qv": _attn("encoder", "self_attn", "qv"),
    "encoder-self-qkv": _attn("encoder", "self_attn", "qkv"),
    "encoder-self-qkvo": _attn("encoder", "self_attn", ("q", "k", "v", "out")),
    "encoder-ffn": _ffn("encoder"),
}


def lora_target_regex(presets: Sequence[str]) -> str:
    """One regex matching every module of the given presets (for PEFT ``target_modules``)."""
    if isinstance(presets, str):
        presets = [presets]
    if not presets:
        raise UserError(f"lora.presets: empty; choose from {', '.join(LORA_PRESETS)}")
    unknown = [name for name in presets if name not in LORA_PRESETS]
    if unknown:
        raise UserError(f"lora.presets: unknown {', '.join(unknown)}; valid presets: {', '.join(LORA_PRESETS)}")
    return "|".join(f"(?:{LORA_PRESETS[name]})" for name in dict.fromkeys(presets))


def lora_target_modules(model: nn.Module, presets: Sequence[str]) -> list[str]:
    """Names of the modules in ``model`` that the presets select (what PEFT will wrap)."""
    pattern = re.compile(lora_target_regex(presets))
    return [name for name, _ in model.named_modules() if pattern.fullmatch(name)]


@dataclass
class LoraSettings:
    """Which modules get LoRA and its hyper-parameters (scale = alpha / rank)."""

    presets: list[str] = field(default_factory=lambda: ["decoder-self-qv"])
    rank: int = 8
    alpha: float = 16.0
    dropout: float = 0.05

    def __post_init__(self) -> None:
        if isinstance(self.presets, str):
            self.presets = [self.presets]
        self.presets = list(self.presets)
        lora_target_regex(self.presets)
        if int(self.rank) != self.rank or self.rank < 1:
            raise UserError(f"lora.rank: got {self.rank}; use a positive integer such as 8 or 16")
        if not self.alpha > 0:
            raise UserError(f"lora.alpha: got {self.alpha}; use a positive number such as 16")
        if not 0.0 <= self.dropout < 1.0:
            raise UserError(f"lora.dropout: got {self.dropout}; use a value in [0, 1)")


def apply_lora(model: WhisperForConditionalGeneration, settings: LoraSettings) -> PeftModel:
    """Wrap ``model`` in a PEFT LoRA model; only the LoRA matrices train afterwards.

    The base model is modified in place (PEFT injects its layers into it).
    """
    if not isinstance(model, WhisperForConditionalGeneration):
        raise UserError(f"model: got {type(model).__name__}; LoRA presets need a WhisperForConditionalGeneration")
    if not lora_target_modules(model, settings.presets):
        raise UserError(
            f"lora.presets: {', '.join(settings.presets)} select no module of this model; "
            "an encoder preset needs encoder layers"
        )
    config = LoraConfig(
        r=int(settings.rank),
        lora_alpha=settings.alpha,
        lora_dropout=settings.dropout,
        target_modules=lora_target_regex(settings.presets),
        bias="none",
    )
    return get_peft_model(model, config)


def merge_lora(peft_model: PeftModel) -> WhisperForConditionalGeneration:
    """Fold the LoRA matrices into the base weights and return the plain Whisper model."""
    if not isinstance(peft_model, PeftModel):
        raise UserError(f"model: got {type(peft_model).__name__}; merge_lora needs the PeftModel from apply_lora")
    merged = peft_model.merge_and_unload()
    if not isinstance(merged, WhisperForConditionalGeneration):
        raise UserError(f"model: merging gave {type(merged).__name__}, not a Whisper model; rebuild the adapter")
    return merged
