"""Build a student from a teacher by keeping some of its layers, and choose what trains.

The student is a plain ``WhisperForConditionalGeneration``: same widths, vocabulary and embeddings
as the teacher, fewer layers, each copied from the teacher. The kept indices are recorded in
``student.config.whisperkd`` so that later steps (hidden-state alignment, reports) can read them.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Iterable, Sequence

import torch
from transformers import WhisperForConditionalGeneration

from whisperkd.errors import UserError


def maximally_spaced(n_total: int, n_keep: int, rounding: str = "floor") -> list[int]:
    """Evenly spread layer indices that always include the last layer (and the first when n_keep > 1).

    ``rounding="floor"`` is distil-whisper's rule (``np.linspace(0, n-1, k, dtype=int)`` with the last
    entry forced to n-1) in exact integers: 32 -> 4 keeps [0, 10, 20, 31]. (Identical for every Whisper
    depth; numpy's float steps differ in a few other cases, e.g. 31 -> 23.) ``rounding="nearest"`` rounds
    i * (n-1) / (k-1) half up instead: [0, 10, 21, 31]. With n_keep = 1 both keep [n-1].
    """
    if n_total < 1:
        raise UserError(f"layers: the teacher has {n_total} layers; nothing to keep")
    if not 1 <= n_keep <= n_total:
        raise UserError(f"layers: cannot keep {n_keep} of {n_total} layers; choose 1 to {n_total}")
    if rounding not in ("floor", "nearest"):
        raise UserError(f"rounding: got {rounding!r}; use 'floor' (distil-whisper) or 'nearest'")
    if n_keep == 1:
        return [n_total - 1]
    span, steps = n_total - 1, n_keep - 1
    if rounding == "floor":
        kept = [i * span // steps for i in range(n_keep)]
    else:
        kept = [(2 * i * span + steps) // (2 * steps) for i in range(n_keep)]
    kept[-1] = n_total - 1
    return kept


def _resolve_layers(choice: int | Sequence[int] | None, n_total: int, side: str) -> list[int]:
    if choice is None:
        return list(range(n_total))
    if isinstance(choice, int):
        if not 1 <= choice <= n_total:
            raise UserError(f"{side}_layers: cannot keep {choice} of the teacher's {n_total}; choose 1 to {n_total}")
        return maximally_spaced(n_total, choice)
    kept = [int(i) for i in choice]
    if not kept:
        raise UserError(f"{side}_layers: empty list; give a layer count or teacher layer indices")
    if any(not 0 <= i < n_total for i in kept) or any(b <= a for a, b in zip(kept, kept[1:])):
        raise UserError(
            f"{side}_layers: {kept} must be strictly increasing indices in 0..{n_total - 1} of the teacher"
        )
    return kept


def _layer_key_map(prefix: str, kept: list[int]) -> dict[str, str]:
    """Teacher layer prefix -> student layer prefix, e.g. 'model.decoder.layers.31.' -> '...layers.1.'."""
    return {f"{prefix}.{t}.": f"{prefix}.{s}." for s, t in enumerate(kept)}


def _student_state_dict(teacher: WhisperForConditionalGeneration, maps: dict[str, str]) -> dict:
    layer_key = re.compile(r"^(model\.(?:encoder|decoder)\.layers\.\d+\.)(.*)$")
    state = {}
    for key, tensor in teacher.state_dict().items():
        match = layer_key.match(key)
        if match:
            if match.group(1) not in maps:
                continue
            key = maps[match.group(1)] + match.group(2)
        state[key] = tensor.detach().clone()
    return state


def _remap_alignment_heads(generation_config, kept: list[int]) -> None:
    heads = getattr(generation_config, "alignment_heads", None)
    if not heads:
        return
    new_index = {t: s for s, t in enumerate(kept)}
    remapped = [[new_index[layer], head] for layer, head in heads if layer in new_index]
    if not remapped:
        n_heads = max(head for _, head in heads) + 1
        remapped = [[layer, head] for layer in range(len(kept) // 2, len(kept)) for head in range(n_heads)]
    generation_config.alignment_heads = remapped


def build_student_from_teacher(
    teacher: WhisperForConditionalGeneration,
    decoder_layers: int | Sequence[int],
    encoder_layers: int | Sequence[int] | None = None,
) -> WhisperForConditionalGeneration:
    """A new Whisper with the chosen teacher layers (a count means :func:`maximally_spaced`), in order.

    Everything else (convolutions, embeddings, positions, final norms, the tied output projection)
    is copied. The teacher is not modified and shares no tensor with the student. ``encoder_layers``
    None keeps the whole encoder. Gradients are on as in a fresh model (all but the encoder positions)
    whatever the teacher's flags: choose with :func:`set_trainable` or LoRA. Works on the meta device.
    """
    if not isinstance(teacher, WhisperForConditionalGeneration):
        raise UserError(
            f"teacher: got {type(teacher).__name__}; pass a WhisperForConditionalGeneration (merge LoRA first)"
        )
    config = teacher.config
    dec = _resolve_layers(decoder_layers, config.decoder_layers, "decoder")
    enc = _resolve_layers(encoder_layers, config.encoder_layers, "encoder")
    maps = {**_layer_key_map("model.encoder.layers", enc), **_layer_key_map("model.decoder.layers", dec)}

    student_config = copy.deepcopy(config)
    student_config.encoder_layers = len(enc)
    student_config.decoder_layers = len(dec)
    student_config.whisperkd = {
        "teacher_encoder_layers": config.encoder_layers,
        "teacher_decoder_layers": config.decoder_layers,
        "encoder_layers_kept": enc,
        "decoder_layers_kept": dec,
    }
    with torch.device("meta"):
        student = WhisperForConditionalGeneration(student_config)
    student.load_state_dict(_student_state_dict(teacher, maps), strict=True, assign=True)
    student.tie_weights()
    if teacher.generation_config is not None:
        student.generation_config = copy.deepcopy(teacher.generation_config)
        _remap_alignment_heads(student.generation_config, dec)
    student.train(teacher.training)
    return student


def kept_layers(model: WhisperForConditionalGeneration, side: str = "decoder") -> list[int]:
    """Teacher indices of the student's layers, as recorded by :func:`build_student_from_teacher`."""
    record = getattr(model.config, "whisperkd", None) or {}
    key = f"{side}_layers_kept"
    if key not in record:
        raise UserError(f"config.whisperkd: no {key}; this model was not built by build_student_from_teacher")
    return list(record[key])


def _part_parameters(model: WhisperForConditionalGeneration, part: str) -> Iterable[torch.nn.Parameter]:
    decoder = model.model.decoder
    if part == "encoder":
        return model.model.encoder.parameters()
    if part == "decoder":
        return [*decoder.layers.parameters(), *decoder.layer_norm.parameters()]
    return [*decoder.embed_tokens.parameters(), *decoder.embed_positions.parameters()]


def set_trainable(
    model: WhisperForConditionalGeneration,
    train_encoder: bool = False,
    train_decoder: bool = True,
    train_embeddings: bool = False,
) -> int:
    """Full fine-tuning of the chosen parts (the alternative to LoRA); returns the trainable count.

    The encoder's sinusoidal positions always stay frozen, as in the original Whisper.
    """
    wanted = {"encoder": train_encoder, "decoder": train_decoder, "embeddings": train_embeddings}
    for part, train in wanted.items():
        for param in _part_parameters(model, part):
            param.requires_grad_(train)
    model.model.encoder.embed_positions.weight.requires_grad_(False)
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
