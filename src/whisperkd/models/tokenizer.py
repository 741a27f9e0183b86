"""Build a transformers ``WhisperTokenizer`` from a CTranslate2/faster-whisper ``tokenizer.json``.

Repairs applied (see docs/models.md):
- the first BPE merge ``Ġ t`` is restored at rank 0 when a file lacks it (else " this is a test"
  encodes to 6 ids instead of 4);
- the 1,501 timestamp tokens ``<|0.00|>`` ... ``<|30.00|>`` are added when missing, so that the
  tokenizer length equals the model's vocab_size;
- the no-speech token is named ``<|nocaptions|>`` (some files say ``<|nospeech|>``).
"""

from __future__ import annotations

from tokenizers import AddedToken
from transformers import WhisperTokenizer

from whisperkd.errors import UserError
from whisperkd.text import english_spelling_file

FIRST_MERGE = ("Ġ", "t")
N_TIMESTAMPS = 1501


def _is_timestamp(content: str) -> bool:
    return content.startswith("<|") and content.endswith("|>") and content[2:-2].replace(".", "", 1).isdigit()


def _merges(model: dict) -> list[tuple[str, str]]:
    merges = [tuple(m.split(" ", 1)) if isinstance(m, str) else tuple(m) for m in model["merges"]]
    if FIRST_MERGE not in merges:
        merges.insert(0, FIRST_MERGE)
    return merges


def build_tokenizer(tokenizer_json: dict, vocab_size: int, label: str = "tokenizer.json") -> WhisperTokenizer:
    """A repaired WhisperTokenizer whose length equals ``vocab_size`` and whose special ids match the file."""
    model = tokenizer_json.get("model", {})
    if model.get("type") != "BPE" or "vocab" not in model:
        raise UserError(f"{label}: not a byte-level BPE tokenizer.json (model.type must be 'BPE')")
    tokenizer = WhisperTokenizer(
        vocab=dict(model["vocab"]),
        merges=_merges(model),
        normalizer_file=str(english_spelling_file()),
        unk_token="<|endoftext|>",
        bos_token="<|endoftext|>",
        eos_token="<|endoftext|>",
        pad_token="<|endoftext|>",
    )
    specials = sorted(tokenizer_json.get("added_tokens", []), key=lambda t: t["id"])
    wanted = [("<|nocaptions|>" if t["content"] == "<|nospeech|>" else t["content"], t["id"]) for t in specials]
    known = tokenizer.get_vocab()
    extra = [AddedToken(c, special=True, normalized=False) for c, _ in wanted if not _is_timestamp(c) and c not in known]
    tokenizer.add_special_tokens({"extra_special_tokens": extra})  # listed in all_special_ids, as in HF's files
    tokenizer.add_tokens([AddedToken(c, special=False, normalized=False) for c, _ in wanted if _is_timestamp(c)])
    got = tokenizer.convert_tokens_to_ids([content for content, _ in wanted])
    for (content, expected), actual in zip(wanted, got):
        if actual != expected:
            raise UserError(f"{label}: special token {content} would get id {actual} instead of {expected}")
    missing = vocab_size - len(tokenizer)
    if missing == N_TIMESTAMPS:
        stamps = [AddedToken(f"<|{i * 0.02:.2f}|>", special=False, normalized=False) for i in range(N_TIMESTAMPS)]
        tokenizer.add_tokens(stamps)
    if len(tokenizer) != vocab_size:
        raise UserError(f"{label}: tokenizer has {len(tokenizer)} tokens but the model's vocab_size is {vocab_size}")
    tokenizer.set_prefix_tokens()  # rebuild the post-processor now that the special tokens exist
    return tokenizer


def special_ids(tokenizer) -> dict[str, int]:
    """The ids that decide decoding: eot, sot, transcribe, translate, prev, no-timestamps, no-speech, english."""
    names = {
        "eot": "<|endoftext|>",
        "sot": "<|startoftranscript|>",
        "en": "<|en|>",
        "translate": "<|translate|>",
        "transcribe": "<|transcribe|>",
        "startoflm": "<|startoflm|>",
        "prev": "<|startofprev|>",
        "nospeech": "<|nocaptions|>",
        "notimestamps": "<|notimestamps|>",
    }
    return {key: tokenizer.convert_tokens_to_ids(tok) for key, tok in names.items()}
