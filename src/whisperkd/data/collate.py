"""Whisper training examples and batches.

Convention: the full token sequence is ``seq = prompt + text + [<|endoftext|>]`` where the prompt is the
model's decoder prompt (:func:`decoder_prompt_ids`). A batch holds ``decoder_input_ids = seq[:-1]`` and
``labels = seq[1:]`` (padding: end-of-text in the inputs, -100 in the labels), so position ``i`` of the
decoder predicts ``seq[i+1]`` and the loss never asks the model to predict ``<|startoftranscript|>``.
Pass both to ``WhisperForConditionalGeneration``: given ``decoder_input_ids`` it does not shift ``labels``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from whisperkd.data.audio import SAMPLE_RATE, AudioSkip

IGNORE_INDEX = -100
MAX_TARGET_POSITIONS = 448
# Whisper's English-only vocabularies put <|startoftranscript|> at 50257; multilingual ones at 50258.
ENGLISH_ONLY_SOT = 50257


def is_multilingual(tokenizer) -> bool:
    """Whether the tokenizer is a multilingual Whisper vocabulary (needs language and task tokens)."""
    return tokenizer.convert_tokens_to_ids("<|startoftranscript|>") != ENGLISH_ONLY_SOT


def decoder_prompt_ids(tokenizer) -> list[int]:
    """The decoder prompt for English transcription without timestamps.

    tiny.en: ``[<|startoftranscript|>, <|notimestamps|>]`` = [50257, 50362];
    base: ``[<|startoftranscript|>, <|en|>, <|transcribe|>, <|notimestamps|>]`` = [50258, 50259, 50359, 50363].
    For a multilingual tokenizer this sets its prefix tokens to English transcription.
    """
    if is_multilingual(tokenizer):
        tokenizer.set_prefix_tokens(language="english", task="transcribe", predict_timestamps=False)
        return list(tokenizer.prefix_tokens)
    return tokenizer.convert_tokens_to_ids(["<|startoftranscript|>", "<|notimestamps|>"])


@dataclass
class TokenEncoder:
    """Turns a transcript into ``prompt + text + [eot]``; too long a sequence is an AudioSkip."""

    tokenizer: object
    max_tokens: int = MAX_TARGET_POSITIONS

    def __post_init__(self):
        self.prompt = decoder_prompt_ids(self.tokenizer)
        self.eot = self.tokenizer.convert_tokens_to_ids("<|endoftext|>")

    def __call__(self, text: str) -> list[int]:
        """The full token sequence of ``text`` (Whisper's text starts with a space)."""
        ids = self.tokenizer.encode(" " + text.strip(), add_special_tokens=False)
        seq = self.prompt + list(ids) + [self.eot]
        if len(seq) > self.max_tokens:
            raise AudioSkip("too_many_tokens", f"{len(seq)} tokens > {self.max_tokens}")
        return seq


def log_mel(feature_extractor, audio: np.ndarray) -> np.ndarray:
    """(n_mels, 3000) float32 log-mel of 16 kHz audio, padded/cut to 30 s by the feature extractor."""
    out = feature_extractor(audio, sampling_rate=SAMPLE_RATE, return_tensors="np")
    return np.asarray(out["input_features"][0], dtype=np.float32)


def collate_examples(examples: list[dict | None], pad_id: int) -> dict | None:
    """Stack examples ``{id, text, input_features, tokens}`` into a batch; ``None`` entries (skipped) are
    dropped, and a batch with nothing left is ``None``. Examples without ``input_features`` (read from a teacher
    cache that holds the encoder outputs) give ``input_features=None``."""
    examples = [e for e in examples if e is not None]
    if not examples:
        return None
    length = max(len(e["tokens"]) for e in examples) - 1
    batch = len(examples)
    inputs = torch.full((batch, length), pad_id, dtype=torch.long)
    labels = torch.full((batch, length), IGNORE_INDEX, dtype=torch.long)
    mask = torch.zeros((batch, length), dtype=torch.long)
    for row, example in enumerate(examples):
        seq = torch.as_tensor(example["tokens"], dtype=torch.long)
        n = len(seq) - 1
        inputs[row, :n] = seq[:-1]
        labels[row, :n] = seq[1:]
        mask[row, :n] = 1
    features = (torch.from_numpy(np.stack([e["input_features"] for e in examples])).float()
                if "input_features" in examples[0] else None)
    return {
        "input_features": features,
        "decoder_input_ids": inputs,
        "labels": labels,
        "decoder_attention_mask": mask,
        "ids": [e["id"] for e in examples],
        "texts": [e["text"] for e in examples],
    }


class WhisperCollator:
    """``collate_fn`` for a DataLoader of examples; pads decoder inputs with end-of-text."""

    def __init__(self, pad_id: int):
        self.pad_id = pad_id

    def __call__(self, examples: list[dict | None]) -> dict | None:
        return collate_examples(examples, self.pad_id)
