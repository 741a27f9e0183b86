"""Map CTranslate2 ``WhisperSpec`` variables onto transformers' ``WhisperForConditionalGeneration``.

- self-attention ``linear_0`` is fused ``[q; k; v]``; cross-attention ``linear_1`` is fused ``[k; v]``;
- the fused k bias is stored as zeros and dropped (HF ``k_proj`` has no bias);
- ``decoder/embeddings/weight`` is the tied ``proj_out.weight``.
"""

from __future__ import annotations

import numpy as np
import torch
from transformers import WhisperConfig

from whisperkd.errors import UserError

_NORM = {"gamma": "weight", "beta": "bias"}


def _count_layers(variables: dict, prefix: str) -> int:
    n = 0
    while f"{prefix}/layer_{n}/ffn/linear_0/weight" in variables:
        n += 1
    return n


def _scalar(variables: dict, name: str, label: str) -> int:
    if name not in variables:
        raise UserError(f"{label}: variable {name} missing; not a complete Whisper CTranslate2 model")
    return int(np.asarray(variables[name]).reshape(-1)[0])


def config_from_variables(variables: dict, label: str, special_ids: dict[str, int]) -> WhisperConfig:
    """Infer the Whisper dimensions from tensor shapes; special ids come from the tokenizer."""
    for required in ("encoder/conv1/weight", "decoder/embeddings/weight"):
        if required not in variables:
            raise UserError(f"{label}: variable {required} missing; the file holds no complete Whisper model")
    vocab_size, d_model = variables["decoder/embeddings/weight"].shape
    return WhisperConfig(
        vocab_size=int(vocab_size),
        num_mel_bins=int(variables["encoder/conv1/weight"].shape[1]),
        d_model=int(d_model),
        encoder_layers=_count_layers(variables, "encoder"),
        decoder_layers=_count_layers(variables, "decoder"),
        encoder_attention_heads=_scalar(variables, "encoder/num_heads", label),
        decoder_attention_heads=_scalar(variables, "decoder/num_heads", label),
        encoder_ffn_dim=int(variables["encoder/layer_0/ffn/linear_0/weight"].shape[0]),
        decoder_ffn_dim=int(variables["decoder/layer_0/ffn/linear_0/weight"].shape[0]),
        max_source_positions=int(variables["encoder/position_encodings/encodings"].shape[0]),
        max_target_positions=int(variables["decoder/position_encodings/encodings"].shape[0]),
        pad_token_id=special_ids["eot"],
        bos_token_id=special_ids["sot"] if vocab_size < 51865 else special_ids["eot"],  # as in the HF checkpoints
        eos_token_id=special_ids["eot"],
        decoder_start_token_id=special_ids["sot"],
        tie_word_embeddings=True,
    )


def state_dict_from_variables(variables: dict, config: WhisperConfig, label: str) -> dict[str, torch.Tensor]:
    """The HF state dict (``model.`` prefixed, plus tied ``proj_out.weight``) for ``variables``."""
    sd: dict[str, np.ndarray] = {}
    d = config.d_model

    def take(name: str) -> np.ndarray:
        if name not in variables:
            raise UserError(f"{label}: variable {name} missing; the file holds no complete Whisper model")
        return variables[name]

    def linear(src: str, dst: str, bias: bool = True) -> None:
        sd[f"{dst}.weight"] = take(f"{src}/weight")
        if bias:
            sd[f"{dst}.bias"] = take(f"{src}/bias")

    def norm(src: str, dst: str) -> None:
        for ct2_name, hf_name in _NORM.items():
            sd[f"{dst}.{hf_name}"] = take(f"{src}/{ct2_name}")

    def split_fused(src: str, dsts: list[str | None], k_index: int) -> None:
        weight, bias = take(f"{src}/weight"), take(f"{src}/bias")
        for i, dst in enumerate(dsts):
            sd[f"{dst}.weight"] = weight[i * d : (i + 1) * d]
            b = bias[i * d : (i + 1) * d]
            if i == k_index:
                if np.any(b.astype(np.float32) != 0):
                    raise UserError(f"{label}: {src}/bias has a non-zero key bias; HF Whisper has none")
            else:
                sd[f"{dst}.bias"] = b

    for side in ("encoder", "decoder"):
        hf = f"model.{side}"
        sd[f"{hf}.embed_positions.weight"] = take(f"{side}/position_encodings/encodings")
        norm(f"{side}/layer_norm", f"{hf}.layer_norm")
        n_layers = config.encoder_layers if side == "encoder" else config.decoder_layers
        for i in range(n_layers):
            src, dst = f"{side}/layer_{i}", f"{hf}.layers.{i}"
            norm(f"{src}/self_attention/layer_norm", f"{dst}.self_attn_layer_norm")
            split_fused(
                f"{src}/self_attention/linear_0",
                [f"{dst}.self_attn.q_proj", f"{dst}.self_attn.k_proj", f"{dst}.self_attn.v_proj"],
                k_index=1,
            )
            linear(f"{src}/self_attention/linear_1", f"{dst}.self_attn.out_proj")
            if side == "decoder":
                norm(f"{src}/attention/layer_norm", f"{dst}.encoder_attn_layer_norm")
                linear(f"{src}/attention/linear_0", f"{dst}.encoder_attn.q_proj")
                split_fused(
                    f"{src}/attention/linear_1", [f"{dst}.encoder_attn.k_proj", f"{dst}.encoder_attn.v_proj"], k_index=0
                )
                linear(f"{src}/attention/linear_2", f"{dst}.encoder_attn.out_proj")
            norm(f"{src}/ffn/layer_norm", f"{dst}.final_layer_norm")
            linear(f"{src}/ffn/linear_0", f"{dst}.fc1")
            linear(f"{src}/ffn/linear_1", f"{dst}.fc2")
    linear("encoder/conv1", "model.encoder.conv1")
    linear("encoder/conv2", "model.encoder.conv2")
    sd["model.decoder.embed_tokens.weight"] = take("decoder/embeddings/weight")
    return {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in sd.items()}
