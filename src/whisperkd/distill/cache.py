"""Build the offline teacher cache: run the frozen teacher once per utterance and store what training needs.

For every usable utterance of each split (train, dev, ...), under teacher forcing on the same labels the
student will see (:mod:`whisperkd.data.collate`):

- the teacher decoder's final states (float32, d_model per token) and, once per cache, its output projection:
  the full logits are ``final_states @ W.T``, exact, at any temperature (2 kB per token for base);
- optionally (``k > 0``) the teacher's top-k log-probabilities at the training temperature T (float32) and
  their token ids (the contract in docs/losses.md, "What the teacher cache must store"). docs/cache.md
  measures why this is not the default: at T = 2 the top-k KL with the tail bucket is 20-60% below the
  full KL even at k = 256;
- optionally the teacher's decoder hidden states of chosen layers (float16), for the alignment loss;
- optionally the frozen encoder outputs the student's decoder consumes (float16, 1500 x d_model): the teacher's
  own when the student keeps the teacher's encoder, else those of the student's (frozen) encoder.

The cache is keyed (:mod:`whisperkd.distill.cache_key`) by the teacher weights, the data (ids, texts, audio
identity), the label token sequences and every setting; a changed input is rebuilt or refused, never reused.
Shards are written atomically, so an interrupted build resumes where it stopped. Layout: :mod:`cache_store`.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm import tqdm

from whisperkd.data.audio import DurationFilter
from whisperkd.data.collate import MAX_TARGET_POSITIONS, TokenEncoder, WhisperCollator, decoder_prompt_ids
from whisperkd.data.loader import SkippingDataLoader, SpeechDataset
from whisperkd.data.skiplog import SkipLog
from whisperkd.data.utterance import Utterance
from whisperkd.distill import cache_key as keys
from whisperkd.distill import cache_store as store
from whisperkd import config
from whisperkd.errors import UserError

ON_STALE = ("rebuild", "refuse")
DEFAULT_TOPK = 64  # top-k size when top-k is asked for (cache.logits=topk); docs/cache.md: not within 1% at T=2


@dataclass
class CacheSettings:
    """What to store and how. ``k``: top-k log-probs per position (0: none; the full logits are always
    recoverable from the final states). ``temperature``: the training T of the top-k (unused when k = 0).
    ``hidden_layers``: teacher decoder layer indices (0-based; layer i is HF hidden-state entry i + 1),
    ``"all"`` or ``[]`` for none."""

    k: int = 0
    temperature: float = 1.0
    hidden_layers: Sequence[int] | str = "all"
    encoder_outputs: bool = True
    shard_size: int = 64
    batch_size: int = 8
    min_seconds: float = DurationFilter().min_seconds
    max_seconds: float = DurationFilter().max_seconds
    max_label_tokens: int = MAX_TARGET_POSITIONS
    audio_identity: str = "stat"
    num_workers: int = 0

    def check(self) -> None:
        if self.k < 0:
            raise UserError(f"cache k: got {self.k}; use 0 (no top-k) or a number of teacher tokens per position")
        if not self.temperature > 0:
            raise UserError(f"cache temperature: got {self.temperature}; use the training temperature (> 0)")
        if self.shard_size < 1 or self.batch_size < 1:
            raise UserError("cache shard_size and batch_size must be at least 1")
        if self.audio_identity not in keys.AUDIO_IDENTITIES:
            raise UserError(f"cache audio_identity: got {self.audio_identity!r}; use 'stat' or 'content'")
        if isinstance(self.hidden_layers, str) and self.hidden_layers != "all":
            raise UserError(f"cache hidden_layers: got {self.hidden_layers!r}; use 'all', [] or layer indices")


@dataclass
class CacheReport:
    """What a build did. Sizes in bytes; ``bytes_per_utterance`` is the shard bytes over cached utterances."""

    cache_dir: Path
    key: str
    utterances: dict[str, int] = field(default_factory=dict)
    computed: dict[str, int] = field(default_factory=dict)
    shards_reused: int = 0
    shards_written: int = 0
    skipped: int = 0
    bytes_total: int = 0
    seconds: float = 0.0
    rebuilt: bool = False
    parts_bytes: dict[str, float] = field(default_factory=dict)
    projection_bytes: int = 0

    @property
    def bytes_per_utterance(self) -> float:
        n = sum(self.utterances.values())
        return self.bytes_total / n if n else 0.0

    @property
    def utterances_per_second(self) -> float:
        n = sum(self.computed.values())
        return n / self.seconds if self.seconds > 0 else 0.0

    def summary(self) -> str:
        done = ", ".join(f"{s} {n}" for s, n in self.utterances.items())
        computed = sum(self.computed.values())
        speed = f", {self.utterances_per_second:.2f} utt/s" if computed else ""
        parts = ", ".join(f"{k} {v / 1e3:.1f} kB" for k, v in self.parts_bytes.items())
        return (f"{self.cache_dir}: {done} utterances cached ({computed} computed in {self.seconds:.1f} s{speed}; "
                f"{self.shards_reused} shard(s) reused, {self.skipped} skipped); "
                f"{self.bytes_total / 1e6:.1f} MB in shards, {self.bytes_per_utterance / 1e6:.3f} MB per utterance"
                + (f" ({parts})" if parts else "") + f", plus the output projection {self.projection_bytes / 1e6:.1f} MB")


def resolve_hidden_layers(setting: Sequence[int] | str | None, n_layers: int) -> list[int]:
    """Teacher decoder layer indices to store."""
    if setting is None:
        return []
    if isinstance(setting, str):
        return list(range(n_layers))
    layers = sorted({int(i) for i in setting})
    if any(not 0 <= i < n_layers for i in layers):
        raise UserError(f"cache hidden_layers: {layers} must be teacher decoder layers in 0..{n_layers - 1}")
    return layers


def _same_encoder(teacher, student_encoder) -> bool:
    if student_encoder is None or student_encoder is teacher.model.encoder:
        return True
    return keys.teacher_fingerprint(student_encoder) == keys.teacher_fingerprint(teacher.model.encoder)


def key_parts(teacher, processor, splits: Mapping[str, Sequence[Utterance]], settings: CacheSettings,
              student_encoder=None, teacher_hash: str | None = None) -> dict:
    """Everything the cache depends on (see module docstring); its hash is the cache key."""
    encoder = TokenEncoder(processor.tokenizer, settings.max_label_tokens)

    def token_digest(utts: Sequence[Utterance]) -> str:
        h = keys._hasher()
        for utt in utts:
            try:
                h.update(repr(encoder(utt.text)).encode())
            except Exception:  # too many tokens: skipped at build time, still part of the key
                h.update(b"skip")
        return h.hexdigest()

    n_dec = teacher.config.decoder_layers
    settings_part = {
        "k": settings.k, "temperature": float(settings.temperature) if settings.k else None,
        "hidden_layers": resolve_hidden_layers(settings.hidden_layers, n_dec),
        "encoder_outputs": bool(settings.encoder_outputs), "shard_size": settings.shard_size,
        "durations": [settings.min_seconds, settings.max_seconds], "max_label_tokens": settings.max_label_tokens,
        "logprob_dtype": "float32", "final_state_dtype": "float32", "hidden_dtype": "float16",
        "encoder_dtype": "float16",
        "teacher_dtype": str(next(teacher.parameters()).dtype).replace("torch.", ""),
        "audio_identity": settings.audio_identity,
    }
    student_part = "teacher"
    if settings.encoder_outputs and not _same_encoder(teacher, student_encoder):
        student_part = keys.teacher_fingerprint(student_encoder)
    return {
        "format": keys.FORMAT_VERSION,
        "teacher": teacher_hash or keys.teacher_fingerprint(teacher),
        "student_encoder": student_part,
        "features": keys.feature_extractor_fingerprint(processor.feature_extractor),
        "labels": {"prompt": decoder_prompt_ids(processor.tokenizer), "eot": encoder.eot},
        "settings": settings_part,
        "splits": {name: {"utterances": keys.utterance_fingerprints(utts, settings.audio_identity),
                          "tokens": token_digest(utts)} for name, utts in splits.items()},
    }


@torch.no_grad()
def teacher_forward(teacher, batch: dict, temperature: float, k: int, hidden_layers: Sequence[int],
                    student_encoder=None) -> dict[str, torch.Tensor]:
    """The teacher under teacher forcing on ``batch``: padded ``(B, L, ...)`` tensors on the teacher's device.

    ``topk_logprobs`` = log_softmax(z / T) at the top-k ids (float32), ``topk_indices``, ``final_states``
    (B, L, d): the decoder output the logits are computed from (``z = final_state @ proj_out.weight.T``),
    ``hidden_states`` (B, L, n, d) of the chosen decoder layers, and ``encoder_outputs`` (B, 1500, d): the
    teacher's, or the student encoder's when ``student_encoder`` is given.
    """
    param = next(teacher.parameters())
    features = batch["input_features"].to(param.device, param.dtype)
    encoded = teacher.model.encoder(features).last_hidden_state
    decoded = teacher.model.decoder(input_ids=batch["decoder_input_ids"].to(param.device),
                                    encoder_hidden_states=encoded, output_hidden_states=bool(hidden_layers))
    out = {"final_states": decoded.last_hidden_state}
    if k:
        logits = teacher.proj_out(decoded.last_hidden_state)
        logprobs, indices = F.log_softmax(logits.float() / temperature, dim=-1).topk(min(k, logits.shape[-1]), dim=-1)
        out.update(topk_logprobs=logprobs, topk_indices=indices)
    if hidden_layers:
        out["hidden_states"] = torch.stack([decoded.hidden_states[i + 1] for i in hidden_layers], dim=2)
    if student_encoder is not None:
        s_param = next(student_encoder.parameters())
        encoded = student_encoder(batch["input_features"].to(s_param.device, s_param.dtype)).last_hidden_state
    out["encoder_outputs"] = encoded
    return out


def _check_splits(splits: Mapping[str, Sequence[Utterance]]) -> None:
    if not splits:
        raise UserError("cache: no data to cache; give at least a train split")
    for name, utts in splits.items():
        if not name or "/" in name or name.startswith("."):
            raise UserError(f"cache: bad split name {name!r}; use names like train, dev")
        seen = set()
        for utt in utts:
            if utt.id in seen:
                raise UserError(f"{name} data: utterance id {utt.id!r} appears twice; ids must be unique")
            seen.add(utt.id)


def _compute_shard(teacher, processor, utterances: Sequence[Utterance], settings: CacheSettings,
                   hidden_layers: list[int], student_encoder, skiplog: SkipLog, split: str, bar) -> tuple:
    dataset = SpeechDataset(utterances, processor, skiplog,
                            DurationFilter(settings.min_seconds, settings.max_seconds), split, settings.max_label_tokens)
    pad_id = processor.tokenizer.convert_tokens_to_ids("<|endoftext|>")
    batches = [list(range(i, min(i + settings.batch_size, len(utterances))))
               for i in range(0, len(utterances), settings.batch_size)]
    loader = SkippingDataLoader(dataset, batch_sampler=batches, collate_fn=WhisperCollator(pad_id),
                                num_workers=settings.num_workers)
    parts: dict[str, list[torch.Tensor]] = {name: [] for name in store.TOKEN_TENSORS + store.UTTERANCE_TENSORS}
    ids, lengths = [], []
    done = 0
    for batch in loader:
        out = teacher_forward(teacher, batch, settings.temperature, settings.k, hidden_layers, student_encoder)
        out = {name: t.cpu() for name, t in out.items()}
        for row, uid in enumerate(batch["ids"]):
            labels = batch["labels"][row]
            n = int((labels != -100).sum())
            if n and not bool((labels[:n] != -100).all()):
                raise RuntimeError("labels must be padded at the end")  # collate guarantees this
            ids.append(uid)
            lengths.append(n)
            parts["labels"].append(labels[:n])
            parts["decoder_input_ids"].append(batch["decoder_input_ids"][row, :n])
            if settings.k:
                parts["topk_logprobs"].append(out["topk_logprobs"][row, :n].float())
                parts["topk_indices"].append(out["topk_indices"][row, :n].to(torch.int32))
            parts["final_states"].append(out["final_states"][row, :n].float())
            if hidden_layers:
                parts["hidden_states"].append(out["hidden_states"][row, :n].half())
            if settings.encoder_outputs:
                parts["encoder_outputs"].append(out["encoder_outputs"][row].half())
        bar.update(len(batch["ids"]))
        done += len(batch["ids"])
    bar.update(len(utterances) - done)  # skipped ones
    k = min(settings.k, teacher.config.vocab_size)
    d = teacher.config.d_model
    empty = {"topk_logprobs": torch.zeros(0, k), "topk_indices": torch.zeros(0, k, dtype=torch.int32),
             "labels": torch.zeros(0, dtype=torch.long), "decoder_input_ids": torch.zeros(0, dtype=torch.long),
             "final_states": torch.zeros(0, d),
             "hidden_states": torch.zeros(0, len(hidden_layers), d, dtype=torch.float16),
             "encoder_outputs": torch.zeros(0, teacher.config.max_source_positions, d, dtype=torch.float16)}
    tensors = {}
    for name, pieces in parts.items():
        if (name == "hidden_states" and not hidden_layers or name == "encoder_outputs" and not settings.encoder_outputs
                or name.startswith("topk_") and not settings.k):
            continue
        if name in store.UTTERANCE_TENSORS:
            tensors[name] = torch.stack(pieces) if pieces else empty[name]
        else:
            tensors[name] = torch.cat(pieces) if pieces else empty[name]
    return tensors, ids, lengths


def build_cache(teacher, processor, splits: Mapping[str, Sequence[Utterance]], cache_dir: str | Path,
                settings: CacheSettings | None = None, on_stale: str = "rebuild", student_encoder=None,
                progress: bool = True, teacher_name: str | None = None, teacher_hash: str | None = None
                ) -> CacheReport:
    """Compute (or finish, or check) the teacher cache of ``splits`` in ``cache_dir``.

    A cache built from other inputs is deleted and rebuilt (``on_stale="rebuild"``) or refused with a
    UserError that lists what changed (``"refuse"``). Finished shards of an interrupted build are kept.
    ``student_encoder``: the student's frozen encoder when it differs from the teacher's (its outputs are
    then stored instead of the teacher's). ``teacher_hash`` skips hashing the weights when known.
    """
    settings = settings or CacheSettings()
    settings.check()
    if on_stale not in ON_STALE:
        raise UserError(f"on_stale: got {on_stale!r}; use one of {', '.join(ON_STALE)}")
    _check_splits(splits)
    cache_dir = Path(cache_dir)
    teacher.eval()
    parts = key_parts(teacher, processor, splits, settings, student_encoder, teacher_hash)
    key = keys.cache_key(parts)
    split_keys = {name: keys.split_key(parts, name) for name in splits}
    report = CacheReport(cache_dir=cache_dir, key=key)
    old = store.read_meta(cache_dir)
    if old is not None and old.get("key") != key:
        old_parts = old.get("parts") or {}
        global_changed = not old_parts or keys.global_key(old_parts) != keys.global_key(parts)
        old_keys = old.get("split_keys", {})
        changed = [name for name in splits if name in old_keys and old_keys[name] != split_keys[name]]
        if global_changed or changed:
            changes = keys.describe_changes(old_parts, parts) or ["unknown (older cache format)"]
            if on_stale == "refuse":
                raise UserError(f"{cache_dir}: the teacher cache was built from other inputs ({'; '.join(changes)}); "
                                "rebuild it (cache.on_stale=rebuild, or `whisperkd cache CONFIG --rebuild`) or "
                                "point cache.dir to another folder")
            report.rebuilt = True
        gone = [name for name in old_keys if name not in splits]
        if global_changed:
            store.remove_cache_files(cache_dir)
            old = None
        else:
            for name in changed + gone:
                store.remove_split_files(cache_dir / name)
    hidden_layers = resolve_hidden_layers(settings.hidden_layers, teacher.config.decoder_layers)
    use_student_encoder = None
    if settings.encoder_outputs and parts["student_encoder"] != "teacher":
        use_student_encoder = student_encoder
    meta = {
        "format": keys.FORMAT_VERSION, "key": key, "parts": parts,
        "settings": asdict(settings) | {"hidden_layers": hidden_layers},
        "teacher": {"name": teacher_name or getattr(teacher.config, "_name_or_path", "") or "",
                    "vocab_size": teacher.config.vocab_size, "d_model": teacher.config.d_model,
                    "decoder_layers": teacher.config.decoder_layers,
                    "encoder_frames": teacher.config.max_source_positions},
        "temperature": float(settings.temperature) if settings.k else None,
        "k": min(settings.k, teacher.config.vocab_size),
        "hidden_layers": hidden_layers, "encoder_outputs": bool(settings.encoder_outputs),
        "encoder_outputs_from": "teacher" if use_student_encoder is None else "student",
        "split_keys": split_keys,
        "complete": {name: False for name in splits},
    }
    if old is not None:
        for name in splits:
            meta["complete"][name] = bool(old.get("complete", {}).get(name)) and \
                old.get("split_keys", {}).get(name) == split_keys[name]
    cache_dir.mkdir(parents=True, exist_ok=True)
    store.write_meta(cache_dir, meta)
    store.write_projection(cache_dir, teacher.proj_out.weight, keys.global_key(parts))
    skiplog = SkipLog(cache_dir, filename=store.SKIPPED_FILE)
    total = sum(len(u) for u in splits.values())
    start = time.perf_counter()
    with tqdm(total=total, unit="utt", desc="teacher cache", disable=not progress) as bar:
        for name, utts in splits.items():
            split_dir = cache_dir / name
            split_dir.mkdir(exist_ok=True)
            shards = []
            computed = 0
            for i in range(0, max(len(utts), 1), settings.shard_size):
                chunk = utts[i:i + settings.shard_size]
                path = split_dir / store.shard_name(i // settings.shard_size)
                found = store.shard_metadata(path)
                if found is not None and found["key"] == split_keys[name]:
                    shards.append((path.name, found["ids"], found["lengths"]))
                    report.shards_reused += 1
                    bar.update(len(chunk))
                    continue
                bar.set_description(f"teacher cache {name} {path.stem}")
                tensors, ids, lengths = _compute_shard(teacher, processor, chunk, settings, hidden_layers,
                                                       use_student_encoder, skiplog, name, bar)
                store.write_shard(path, tensors, split_keys[name], ids, lengths)
                report.shards_written += 1
                computed += len(chunk)
                shards.append((path.name, ids, lengths))
                bar.set_postfix_str(f"{store.directory_bytes(cache_dir) / 1e6:.0f} MB")
            index = store.write_index(split_dir, shards)
            report.utterances[name] = len(index)
            report.computed[name] = computed
            meta["complete"][name] = True
            store.write_meta(cache_dir, meta)
    report.seconds = time.perf_counter() - start
    report.skipped = len({(r["source"], r["id"]) for r in skiplog.records()})
    report.bytes_total = sum(p.stat().st_size for name in splits for p in (cache_dir / name).glob(store.SHARD_GLOB))
    report.parts_bytes = _parts_bytes(cache_dir, list(splits))
    report.projection_bytes = (cache_dir / store.PROJECTION_FILE).stat().st_size
    return report


def _parts_bytes(cache_dir: Path, splits: list[str]) -> dict[str, float]:
    """Mean bytes per cached utterance of each stored tensor (from the shard headers)."""
    from safetensors import safe_open

    sizes: dict[str, float] = {}
    n = 0
    for name in splits:
        for path in (cache_dir / name).glob(store.SHARD_GLOB):
            with safe_open(str(path), framework="pt") as f:
                n += len(json.loads(f.metadata()["ids"]))
                for tensor in f.keys():
                    piece = f.get_slice(tensor)
                    count = 1
                    for dim in piece.get_shape():
                        count *= dim
                    itemsize = {"F32": 4, "F16": 2, "I32": 4, "I64": 8, "BF16": 2}.get(piece.get_dtype(), 4)
                    sizes[tensor] = sizes.get(tensor, 0) + count * itemsize
    return {k: v / n for k, v in sizes.items()} if n else {}


def check_cache(cache_dir: str | Path, teacher, processor, splits: Mapping[str, Sequence[Utterance]],
                settings: CacheSettings, student_encoder=None, teacher_hash: str | None = None) -> list[str]:
    """What differs between the cache in ``cache_dir`` and these inputs (empty list: up to date and complete)."""
    meta = store.read_meta(cache_dir)
    if meta is None:
        return [f"{cache_dir}: no teacher cache"]
    parts = key_parts(teacher, processor, splits, settings, student_encoder, teacher_hash)
    if meta.get("key") != keys.cache_key(parts):
        return keys.describe_changes(meta.get("parts", {}), parts) or ["key differs"]
    missing = [name for name in splits if not meta.get("complete", {}).get(name)]
    return [f"split {name} incomplete" for name in missing]


# ---------------------------------------------------------------- from the distillation config

class CacheConfig(config.CacheConfig):
    """The ``cache:`` section of a distillation config (fields in whisperkd.config; docs/cache.md), checked."""

    def check(self) -> None:
        if self.logits not in ("full", "topk"):
            raise UserError(f"config cache.logits: got {self.logits!r}; use full or topk")
        if self.logits == "topk" and self.topk == 0:
            raise UserError("config cache.topk: 0 stores no top-k, but cache.logits is topk; give k (e.g. 64)")
        if self.hidden_layers not in ("all", "needed"):
            raise UserError(f"config cache.hidden_layers: got {self.hidden_layers!r}; use all or needed")
        if self.on_stale not in ON_STALE:
            raise UserError(f"config cache.on_stale: got {self.on_stale!r}; use rebuild or refuse")
        if (self.topk is not None and self.topk < 0) or self.shard_size < 1 or self.batch_size < 1:
            raise UserError("config cache.topk >= 0, cache.shard_size and cache.batch_size >= 1")
        if self.audio_identity not in keys.AUDIO_IDENTITIES:
            raise UserError(f"config cache.audio_identity: got {self.audio_identity!r}; use stat or content")

    @property
    def k(self) -> int:
        """Top-k entries to store."""
        if self.topk is not None:
            return self.topk
        return DEFAULT_TOPK if self.logits == "topk" else 0


def cache_config(cfg) -> CacheConfig:
    """``cfg.cache`` (a :class:`CacheConfig`, a dataclass with the same fields, or a mapping), checked;
    defaults when the config has no such section."""
    section = getattr(cfg, "cache", None)
    if section is None:
        section = CacheConfig()
    elif not isinstance(section, (CacheConfig, dict)) and dataclasses.is_dataclass(section):
        section = dataclasses.asdict(section)  # a copy of this section defined in whisperkd.config
    if isinstance(section, dict):
        unknown = set(section) - set(CacheConfig.__dataclass_fields__)
        if unknown:
            raise UserError(f"config cache.{sorted(unknown)[0]}: unknown key; valid keys: "
                            f"{', '.join(CacheConfig.__dataclass_fields__)}")
        section = CacheConfig(**section)
    section.check()
    return section


def cache_dir_of(cfg) -> Path:
    """Where the run's teacher cache lives."""
    c = cache_config(cfg)
    return Path(c.dir).expanduser() if c.dir else Path(cfg.output.dir) / "teacher_cache"


def settings_from_config(cfg, built) -> CacheSettings:
    """Cache settings that match the run: the training temperature, data filters, the layers alignment reads."""
    c = cache_config(cfg)
    needs = built.teacher_needs(cfg)
    return CacheSettings(
        k=c.k, temperature=cfg.loss.temperature,
        hidden_layers="all" if c.hidden_layers == "all" else list(needs.hidden_layers),
        encoder_outputs=bool(built.shares_encoder), shard_size=c.shard_size, batch_size=c.batch_size,
        min_seconds=cfg.data.min_seconds, max_seconds=cfg.data.max_seconds,
        max_label_tokens=cfg.data.max_label_tokens, audio_identity=c.audio_identity,
        num_workers=cfg.data.num_workers)


def ensure_cache(cfg, built=None, splits: Mapping[str, Sequence[Utterance]] | None = None,
                 on_stale: str | None = None, progress: bool = True) -> CacheReport:
    """Build, finish or check the run's teacher cache (what ``whisperkd cache CONFIG`` and distill call).

    ``built``: the run's models (:func:`whisperkd.distill.build.build_models`), built from ``cfg`` when None.
    ``splits``: {"train": ..., "dev": ...} (default: :func:`whisperkd.distill.build.read_splits`).
    """
    from whisperkd.distill.build import build_models, read_splits

    c = cache_config(cfg)
    if built is None:
        built = build_models(cfg)
    if splits is None:
        train, dev = read_splits(cfg)
        splits = {"train": train, "dev": dev} if dev else {"train": train}
    return build_cache(built.teacher, built.processor, splits, cache_dir_of(cfg), settings_from_config(cfg, built),
                       on_stale=on_stale or c.on_stale, progress=progress, teacher_name=cfg.teacher.model)


def make_teacher(cfg, built, out_device, splits: Mapping[str, Sequence[Utterance]] | None = None,
                 progress: bool = True):
    """The run's teacher outputs: with ``cache.enabled``, a :class:`CachedTeacher` over the cache (built, finished
    or checked first, for ``splits`` = {"train": ..., "dev": ...}); otherwise the online teacher."""
    from whisperkd.distill.cached_teacher import CachedTeacher

    if not cache_config(cfg).enabled:
        return built.online_teacher(cfg, out_device)
    ensure_cache(cfg, built, splits, progress=progress)
    return CachedTeacher(cache_dir_of(cfg), None, built.teacher_needs(cfg), temperature=cfg.loss.temperature,
                         out_device=out_device, out_dtype=torch.float32, logits=cache_config(cfg).logits)
