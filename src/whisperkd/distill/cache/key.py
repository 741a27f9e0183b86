"""What a teacher cache depends on, as fingerprints: teacher weights, data, labels, settings.

A cache stores the parts (:func:`key_parts`) next to its key, so a mismatch can say what changed
("teacher weights", "train data: 3 of 120 utterances differ") instead of only "stale".

The settings come from two places: the config's ``cache:`` section (:class:`whisperkd.config.CacheConfig`: top-k,
shard size, audio identity, ...) and what the rest of the run's config asks of the cache (:class:`CachePlan`:
the training temperature, the decoder layers to store, the data filters), derived by :func:`cache_plan`.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from whisperkd.config import CacheConfig, Config
from whisperkd.data.audio import DurationFilter
from whisperkd.data.augment import AugmentedUtterance
from whisperkd.data.collate import MAX_TARGET_POSITIONS, TokenEncoder, decoder_prompt_ids
from whisperkd.data.utterance import Utterance
from whisperkd.errors import UserError

FORMAT_VERSION = 1
AUDIO_IDENTITIES = ("stat", "content")


@dataclass(frozen=True)
class CachePlan:
    """What a run asks of its cache beyond the ``cache:`` section, derived from the rest of its config by
    :func:`cache_plan`. ``temperature``: the training T of the top-k (unused when no top-k is stored).
    ``hidden_layers``: teacher decoder layer indices to store (0-based; layer i is HF hidden-state entry i + 1),
    None for all, ``()`` for none. ``encoder_outputs``: store what the student's decoder consumes (the student
    keeps the teacher's whole encoder frozen). Durations and ``max_label_tokens``: the data filters (an
    utterance they reject is skipped). ``num_workers``: data-loading processes while building."""

    temperature: float = 1.0
    hidden_layers: tuple[int, ...] | None = None
    encoder_outputs: bool = True
    min_seconds: float = DurationFilter().min_seconds
    max_seconds: float = DurationFilter().max_seconds
    max_label_tokens: int = MAX_TARGET_POSITIONS
    num_workers: int = 0


def cache_plan(cfg: Config, built) -> CachePlan:
    """The run's :class:`CachePlan`: the training temperature, the data filters, and the teacher layers alignment
    reads (``cache.hidden_layers: needed``) or all of them; encoder outputs when the student shares the encoder.
    ``built``: the run's models (:class:`whisperkd.distill.build.Built`)."""
    needs = built.teacher_needs(cfg)
    return CachePlan(
        temperature=cfg.loss.temperature,
        hidden_layers=None if cfg.cache.hidden_layers == "all" else tuple(needs.hidden_layers),
        encoder_outputs=bool(built.shares_encoder), min_seconds=cfg.data.min_seconds,
        max_seconds=cfg.data.max_seconds, max_label_tokens=cfg.data.max_label_tokens,
        num_workers=cfg.data.num_workers)


def resolve_hidden_layers(layers: Sequence[int] | None, n_layers: int) -> list[int]:
    """Teacher decoder layer indices to store (None: all ``n_layers``)."""
    if layers is None:
        return list(range(n_layers))
    chosen = sorted({int(i) for i in layers})
    if any(not 0 <= i < n_layers for i in chosen):
        raise UserError(f"cache hidden_layers: {chosen} must be teacher decoder layers in 0..{n_layers - 1}")
    return chosen


def _hasher():
    return hashlib.sha256()


def _update_tensor(h, tensor: torch.Tensor) -> None:
    t = tensor.detach().to("cpu").contiguous()
    h.update(f"{t.dtype}|{tuple(t.shape)}|".encode())
    if t.numel():
        h.update(t.view(-1).view(torch.uint8).numpy().data)


@torch.no_grad()
def teacher_fingerprint(model: torch.nn.Module) -> str:
    """sha256 of the state dict (names, dtypes, shapes, bytes): a changed or re-saved-differently model is a
    different teacher; the same weights loaded from anywhere are the same teacher (dtype included)."""
    h = _hasher()
    for name, tensor in sorted(model.state_dict().items()):
        h.update(name.encode() + b"\0")
        _update_tensor(h, tensor)
    return h.hexdigest()


def file_sha256(path: str | Path, block: int = 1 << 22) -> str:
    h = _hasher()
    with open(path, "rb") as f:
        while chunk := f.read(block):
            h.update(chunk)
    return h.hexdigest()


def audio_identity(utt: Utterance, how: str = "stat") -> str:
    """What identifies an utterance's audio: ``stat`` = file name, size and mtime (cheap; a copy that resets
    mtimes counts as changed), ``content`` = sha256 of the file. In-memory audio is always hashed."""
    if how not in AUDIO_IDENTITIES:
        raise ValueError(f"audio identity: got {how!r}; use one of {AUDIO_IDENTITIES}")
    audio = utt.audio
    if isinstance(audio, np.ndarray):
        return "array:" + hashlib.sha256(np.ascontiguousarray(audio).data).hexdigest() + f"@{utt.sample_rate}"
    if isinstance(audio, (bytes, bytearray)):
        return "bytes:" + hashlib.sha256(audio).hexdigest()
    path = Path(audio)
    try:
        stat = path.stat()
    except OSError:
        return f"missing:{path.name}"
    if how == "content":
        return f"sha256:{file_sha256(path)}"
    return f"stat:{path.name}:{stat.st_size}:{stat.st_mtime_ns}"


def utterance_fingerprints(utterances: Sequence[Utterance], audio: str = "stat") -> list[str]:
    """One short hash per utterance over (id, text, audio identity), in order; a segment's bounds (start, end) are
    added only when set, and an augmented copy's index and settings only for copies, so the hashes of clean
    whole-file utterances (and the keys of existing caches) do not change."""
    out = []
    for utt in utterances:
        fields = [utt.id, utt.text, audio_identity(utt, audio)]
        if utt.is_segment:
            fields += [utt.start, utt.end]
        if isinstance(utt, AugmentedUtterance):
            fields.append({"augment": utt.augment_identity()})
        record = json.dumps(fields, ensure_ascii=False)
        out.append(hashlib.sha256(record.encode()).hexdigest()[:16])
    return out


def digest(obj) -> str:
    """sha256 of the canonical JSON of ``obj``."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, ensure_ascii=False).encode()).hexdigest()


def feature_extractor_fingerprint(feature_extractor) -> str:
    """Hash of the log-mel settings (mel count, window, hop, chunk length, sampling rate)."""
    settings = {k: getattr(feature_extractor, k, None) for k in
                ("feature_size", "sampling_rate", "hop_length", "chunk_length", "n_fft", "padding_value")}
    return digest(settings)


def cache_key(parts: dict) -> str:
    """The key of a whole cache: a hash of all its parts."""
    return digest(parts)


def global_key(parts: dict) -> str:
    """The key of what every split shares (teacher, settings, label prompt, log-mel settings)."""
    return digest({k: v for k, v in parts.items() if k != "splits"})


def split_key(parts: dict, split: str) -> str:
    """The key of one split's shards: the shared key and that split's data and label tokens."""
    return digest([global_key(parts), split, parts["splits"][split]])


def describe_changes(old: dict, new: dict) -> list[str]:
    """Human-readable list of the parts that differ between two :func:`key_parts` dictionaries."""
    changes = []
    names = {"teacher": "teacher weights", "labels": "label settings (prompt, tokenizer)",
             "settings": "cache settings (k, temperature, dtypes, stored layers)", "features": "log-mel settings",
             "format": "cache format version", "student_encoder": "student encoder"}
    for key in sorted(set(old) | set(new)):
        if key == "splits":
            continue
        if old.get(key) != new.get(key):
            what = names.get(key, key)
            if key == "settings" and isinstance(old.get(key), dict) and isinstance(new.get(key), dict):
                diff = [f"{k} {old[key].get(k)!r} -> {new[key].get(k)!r}"
                        for k in sorted(set(old[key]) | set(new[key])) if old[key].get(k) != new[key].get(k)]
                what += ": " + ", ".join(diff)
            changes.append(what)
    old_splits, new_splits = old.get("splits", {}), new.get("splits", {})
    for split in sorted(set(old_splits) | set(new_splits)):
        a, b = old_splits.get(split), new_splits.get(split)
        if a == b:
            continue
        if a is None or b is None:
            changes.append(f"{split} data: split {'added' if a is None else 'removed'}")
            continue
        a_items, b_items = a.get("utterances", []), b.get("utterances", [])
        if len(a_items) != len(b_items):
            changes.append(f"{split} data: {len(a_items)} -> {len(b_items)} utterances")
        elif a_items != b_items:
            n = sum(x != y for x, y in zip(a_items, b_items))
            copies = split.rpartition("-aug")[2].isdigit()  # a split of augmented copies (store.cache_splits)
            what = "id, text, audio or augmentation" if copies else "id, text or audio"
            changes.append(f"{split} data: {n} of {len(a_items)} utterances differ ({what})")
        else:
            changes.append(f"{split} labels: the token sequences differ (tokenizer or label settings)")
    return changes


def same_encoder(teacher, student_encoder) -> bool:
    """Whether ``student_encoder`` (None: the teacher's) computes what the teacher's encoder does."""
    if student_encoder is None or student_encoder is teacher.model.encoder:
        return True
    return teacher_fingerprint(student_encoder) == teacher_fingerprint(teacher.model.encoder)


def key_parts(teacher, processor, splits: Mapping[str, Sequence[Utterance]], cache: CacheConfig, plan: CachePlan,
              student_encoder=None, teacher_hash: str | None = None) -> dict:
    """Everything the cache depends on (module docstring); its hash is the cache key."""
    encoder = TokenEncoder(processor.tokenizer, plan.max_label_tokens)

    def token_digest(utts: Sequence[Utterance]) -> str:
        h = _hasher()
        for utt in utts:
            try:
                h.update(repr(encoder(utt.text)).encode())
            except Exception:  # too many tokens: skipped at build time, still part of the key
                h.update(b"skip")
        return h.hexdigest()

    k = cache.k
    settings_part = {
        "k": k, "temperature": float(plan.temperature) if k else None,
        "hidden_layers": resolve_hidden_layers(plan.hidden_layers, teacher.config.decoder_layers),
        "encoder_outputs": bool(plan.encoder_outputs), "shard_size": cache.shard_size,
        "durations": [plan.min_seconds, plan.max_seconds], "max_label_tokens": plan.max_label_tokens,
        "logprob_dtype": "float32", "final_state_dtype": "float32", "hidden_dtype": "float16",
        "encoder_dtype": "float16",
        "teacher_dtype": str(next(teacher.parameters()).dtype).replace("torch.", ""),
        "audio_identity": cache.audio_identity,
    }
    student_part = "teacher"
    if plan.encoder_outputs and not same_encoder(teacher, student_encoder):
        student_part = teacher_fingerprint(student_encoder)
    return {
        "format": FORMAT_VERSION,
        "teacher": teacher_hash or teacher_fingerprint(teacher),
        "student_encoder": student_part,
        "features": feature_extractor_fingerprint(processor.feature_extractor),
        "labels": {"prompt": decoder_prompt_ids(processor.tokenizer), "eot": encoder.eot},
        "settings": settings_part,
        "splits": {name: {"utterances": utterance_fingerprints(utts, cache.audio_identity),
                          "tokens": token_digest(utts)} for name, utts in splits.items()},
    }
