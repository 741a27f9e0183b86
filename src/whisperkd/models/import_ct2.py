"""Turn a CTranslate2 (faster-whisper) Whisper directory into a Hugging Face Whisper directory.

The output holds safetensors weights, config, a repaired tokenizer, the feature extractor and a
generation config with which ``generate()`` and ``transformers.pipeline`` work offline.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

import numpy as np
import torch
from transformers import GenerationConfig, WhisperFeatureExtractor, WhisperForConditionalGeneration, WhisperProcessor

from whisperkd.errors import UserError
from whisperkd.models.ct2_format import dequantize, model_bin_parts, read_model_bin
from whisperkd.models.ct2_to_hf import config_from_variables, state_dict_from_variables
from whisperkd.models.tokenizer import build_tokenizer, special_ids
from whisperkd.text import english_spelling_file


def _read_json(path: Path, required: bool) -> dict:
    if not path.is_file():
        if required:
            raise UserError(f"{path}: missing; a faster-whisper model directory has model.bin, config.json and tokenizer.json")
        return {}
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as err:
        raise UserError(f"{path}: not valid JSON ({err})") from None


def generation_config(tokenizer, ct2_config: dict, config) -> GenerationConfig:
    """A Whisper generation config built from the tokenizer ids and CTranslate2's config.json."""
    ids = special_ids(tokenizer)
    multilingual = config.vocab_size >= 51865
    gen = GenerationConfig(
        decoder_start_token_id=ids["sot"],
        bos_token_id=config.bos_token_id,
        eos_token_id=ids["eot"],
        pad_token_id=ids["eot"],
        max_length=config.max_target_positions,
        no_timestamps_token_id=ids["notimestamps"],
        prev_sot_token_id=ids["prev"],
        max_initial_timestamp_index=50,
        is_multilingual=multilingual,
        return_timestamps=False,
        suppress_tokens=list(ct2_config.get("suppress_ids") or []),
        begin_suppress_tokens=list(ct2_config.get("suppress_ids_begin") or [220, ids["eot"]]),
        alignment_heads=[list(pair) for pair in ct2_config.get("alignment_heads") or []],
    )
    if multilingual:
        lang_ids = ct2_config.get("lang_ids") or range(ids["en"], ids["translate"])
        gen.lang_to_id = {tokenizer.convert_ids_to_tokens(int(i)): int(i) for i in lang_ids}
        gen.task_to_id = {"transcribe": ids["transcribe"], "translate": ids["translate"]}
    return gen


def _weights_dtype(variables: dict) -> torch.dtype:
    """float16 when the file stores float16 weights, else float32 (int8 is dequantised to float32)."""
    kinds = {v.dtype for k, v in variables.items() if k.endswith("/weight")}
    return torch.float16 if kinds == {np.dtype(np.float16)} else torch.float32


def build_from_ct2(ct2_dir: Path) -> tuple[WhisperForConditionalGeneration, WhisperProcessor, torch.dtype]:
    """Read a CTranslate2 Whisper directory: HF model (float32, eval mode), processor, stored weight dtype."""
    ct2_dir = Path(ct2_dir)
    if not ct2_dir.is_dir():
        raise UserError(f"{ct2_dir}: not a directory; pass a CTranslate2 (faster-whisper) model directory")
    parts = model_bin_parts(ct2_dir)
    raw, _ = read_model_bin(parts)
    variables = dequantize(raw)
    label = str(parts[0])
    tokenizer_json = _read_json(ct2_dir / "tokenizer.json", required=True)
    ct2_config = _read_json(ct2_dir / "config.json", required=False)
    vocab_size = variables["decoder/embeddings/weight"].shape[0] if "decoder/embeddings/weight" in variables else 0
    tokenizer = build_tokenizer(tokenizer_json, vocab_size, label=str(ct2_dir / "tokenizer.json"))
    ids = special_ids(tokenizer)
    config = config_from_variables(variables, label, ids)
    state = state_dict_from_variables(variables, config, label)
    model = WhisperForConditionalGeneration(config)
    missing, unexpected = model.load_state_dict({k: v.float() for k, v in state.items()}, strict=False)
    missing = [k for k in missing if k != "proj_out.weight"]
    if missing or unexpected:
        raise UserError(f"{label}: weights do not fit Whisper (missing {missing[:3]}, unexpected {unexpected[:3]})")
    model.tie_weights()
    model.generation_config = generation_config(tokenizer, ct2_config, config)
    processor = WhisperProcessor(WhisperFeatureExtractor(feature_size=config.num_mel_bins), tokenizer)
    return model.eval(), processor, _weights_dtype(raw)


def save_hf_dir(model, processor, out_dir: Path, dtype: torch.dtype | None = None) -> Path:
    """Write model + processor to ``out_dir`` atomically (temp folder, then rename)."""
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        to_save = model if dtype is None else model.to(dtype)
        to_save.save_pretrained(tmp)
        processor.save_pretrained(tmp)
        shutil.copyfile(english_spelling_file(), tmp / "normalizer.json")
        tmp.chmod(0o755)
        for path in tmp.iterdir():
            path.chmod(0o644)
        if dtype is not None:
            model.to(torch.float32)
        if out_dir.exists():
            shutil.rmtree(out_dir)
        tmp.rename(out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir


def import_ct2(ct2_dir: Path, out_dir: Path) -> Path:
    """Convert ``ct2_dir`` to an HF Whisper directory at ``out_dir`` (weights kept in their float dtype)."""
    model, processor, dtype = build_from_ct2(ct2_dir)
    return save_hf_dir(model, processor, out_dir, dtype=dtype)
