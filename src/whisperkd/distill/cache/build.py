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

The cache is keyed (:mod:`whisperkd.distill.cache.key`) by the teacher weights, the data (ids, texts, audio
identity), the label token sequences and every setting; a changed input is rebuilt or refused, never reused.
An augmented copy (``data.augment``) is computed on its augmented audio and log-mel, like the online teacher
sees it, in a split of its own per copy index whose key covers the augmentation settings
(:func:`~whisperkd.distill.cache.store.cache_splits`).
Shards are written atomically, so an interrupted build resumes where it stopped. Layout:
:mod:`whisperkd.distill.cache.store`. Settings: the config's ``cache:`` section
(:class:`whisperkd.config.CacheConfig`) and the :class:`~whisperkd.distill.cache.key.CachePlan` derived from the
rest of the run's config.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors import safe_open
from tqdm import tqdm

from whisperkd.config import CacheConfig, Config
from whisperkd.data.audio import DurationFilter
from whisperkd.data.collate import WhisperCollator
from whisperkd.data.loader import SkippingDataLoader, SpeechDataset
from whisperkd.data.skiplog import SkipLog
from whisperkd.data.utterance import Utterance
from whisperkd.distill.cache import key as keys
from whisperkd.distill.cache import store
from whisperkd.distill.cache.key import CachePlan, cache_plan, key_parts, resolve_hidden_layers
from whisperkd.distill.cache.windowed import build_windowed
from whisperkd.errors import UserError

ON_STALE = ("rebuild", "refuse")


def check_settings(cache: CacheConfig, plan: CachePlan) -> None:
    """What the config's own checks cannot see: the training temperature the top-k would be taken at."""
    if cache.k and not plan.temperature > 0:
        raise UserError(f"cache temperature: got {plan.temperature}; use the training temperature (> 0)")


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
    windowed: str = ""  # the student's window when its windowed encoder outputs were built too
    windowed_computed: int = 0

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
                + (f" ({parts})" if parts else "")
                + f", plus the output projection {self.projection_bytes / 1e6:.1f} MB"
                + (f"; windowed encoder outputs ({self.windowed}): {self.windowed_computed} computed"
                   if self.windowed else ""))


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


def _compute_shard(teacher, processor, utterances: Sequence[Utterance], cache: CacheConfig, plan: CachePlan,
                   hidden_layers: list[int], student_encoder, skiplog: SkipLog, split: str, bar) -> tuple:
    dataset = SpeechDataset(utterances, processor, skiplog,
                            DurationFilter(plan.min_seconds, plan.max_seconds), split, plan.max_label_tokens)
    pad_id = processor.tokenizer.convert_tokens_to_ids("<|endoftext|>")
    batches = [list(range(i, min(i + cache.batch_size, len(utterances))))
               for i in range(0, len(utterances), cache.batch_size)]
    loader = SkippingDataLoader(dataset, batch_sampler=batches, collate_fn=WhisperCollator(pad_id),
                                num_workers=plan.num_workers)
    k = cache.k
    parts: dict[str, list[torch.Tensor]] = {name: [] for name in store.TOKEN_TENSORS + store.UTTERANCE_TENSORS}
    ids, lengths = [], []
    done = 0
    for batch in loader:
        out = teacher_forward(teacher, batch, plan.temperature, k, hidden_layers, student_encoder)
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
            if k:
                parts["topk_logprobs"].append(out["topk_logprobs"][row, :n].float())
                parts["topk_indices"].append(out["topk_indices"][row, :n].to(torch.int32))
            parts["final_states"].append(out["final_states"][row, :n].float())
            if hidden_layers:
                parts["hidden_states"].append(out["hidden_states"][row, :n].half())
            if plan.encoder_outputs:
                parts["encoder_outputs"].append(out["encoder_outputs"][row].half())
        bar.update(len(batch["ids"]))
        done += len(batch["ids"])
    bar.update(len(utterances) - done)  # skipped ones
    d, k_kept = teacher.config.d_model, min(k, teacher.config.vocab_size)
    empty = {"topk_logprobs": torch.zeros(0, k_kept), "topk_indices": torch.zeros(0, k_kept, dtype=torch.int32),
             "labels": torch.zeros(0, dtype=torch.long), "decoder_input_ids": torch.zeros(0, dtype=torch.long),
             "final_states": torch.zeros(0, d),
             "hidden_states": torch.zeros(0, len(hidden_layers), d, dtype=torch.float16),
             "encoder_outputs": torch.zeros(0, teacher.config.max_source_positions, d, dtype=torch.float16)}
    tensors = {}
    for name, pieces in parts.items():
        if (name == "hidden_states" and not hidden_layers or name == "encoder_outputs" and not plan.encoder_outputs
                or name.startswith("topk_") and not k):
            continue
        if name in store.UTTERANCE_TENSORS:
            tensors[name] = torch.stack(pieces) if pieces else empty[name]
        else:
            tensors[name] = torch.cat(pieces) if pieces else empty[name]
    return tensors, ids, lengths


def build_cache(teacher, processor, splits: Mapping[str, Sequence[Utterance]], cache_dir: str | Path,
                cache: CacheConfig | None = None, plan: CachePlan | None = None, on_stale: str | None = None,
                student_encoder=None, progress: bool = True, teacher_name: str | None = None,
                teacher_hash: str | None = None) -> CacheReport:
    """Compute (or finish, or check) the teacher cache of ``splits`` in ``cache_dir``.

    ``cache``: the config's ``cache:`` section (top-k, shard and batch size, audio identity; default: the
    defaults); ``plan``: what the run asks of it (:func:`~whisperkd.distill.cache.key.cache_plan`; default: T = 1,
    all layers, encoder outputs, the default data filters). A cache built from other inputs is deleted and
    rebuilt (``on_stale="rebuild"``; None: ``cache.on_stale``) or refused with a UserError that lists what
    changed (``"refuse"``). Finished shards of an interrupted build are kept. ``student_encoder``: the
    student's frozen encoder when it differs from the teacher's (its outputs are then stored instead of the
    teacher's). ``teacher_hash`` skips hashing the weights when known.
    """
    cache, plan = cache or CacheConfig(), plan or CachePlan()
    check_settings(cache, plan)
    on_stale = on_stale or cache.on_stale
    if on_stale not in ON_STALE:
        raise UserError(f"on_stale: got {on_stale!r}; use one of {', '.join(ON_STALE)}")
    splits = store.cache_splits(splits)  # augmented copies: a split of their own per copy index
    _check_splits(splits)
    cache_dir = Path(cache_dir)
    teacher.eval()
    parts = key_parts(teacher, processor, splits, cache, plan, student_encoder, teacher_hash)
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
        # A split this run does not use (e.g. augmented copies another config asks for) is left on disk: its
        # shards carry their keys, so a later run that wants it again reuses them.
        if global_changed:
            store.remove_cache_files(cache_dir)
            old = None
        else:
            for name in changed:
                store.remove_split_files(cache_dir / name)
    hidden_layers = resolve_hidden_layers(plan.hidden_layers, teacher.config.decoder_layers)
    k = cache.k
    use_student_encoder = None
    if plan.encoder_outputs and parts["student_encoder"] != "teacher":
        use_student_encoder = student_encoder
    meta = {
        "format": keys.FORMAT_VERSION, "key": key, "parts": parts,
        "settings": {"k": k, "temperature": plan.temperature, "hidden_layers": hidden_layers,
                     "encoder_outputs": plan.encoder_outputs, "shard_size": cache.shard_size,
                     "batch_size": cache.batch_size, "min_seconds": plan.min_seconds, "max_seconds": plan.max_seconds,
                     "max_label_tokens": plan.max_label_tokens, "audio_identity": cache.audio_identity,
                     "num_workers": plan.num_workers},
        "teacher": {"name": teacher_name or getattr(teacher.config, "_name_or_path", "") or "",
                    "vocab_size": teacher.config.vocab_size, "d_model": teacher.config.d_model,
                    "decoder_layers": teacher.config.decoder_layers,
                    "encoder_frames": teacher.config.max_source_positions},
        "temperature": float(plan.temperature) if k else None,
        "k": min(k, teacher.config.vocab_size),
        "hidden_layers": hidden_layers, "encoder_outputs": bool(plan.encoder_outputs),
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
            for i in range(0, max(len(utts), 1), cache.shard_size):
                chunk = utts[i:i + cache.shard_size]
                path = split_dir / store.shard_name(i // cache.shard_size)
                found = store.shard_metadata(path)
                if found is not None and found["key"] == split_keys[name]:
                    shards.append((path.name, found["ids"], found["lengths"]))
                    report.shards_reused += 1
                    bar.update(len(chunk))
                    continue
                bar.set_description(f"teacher cache {name} {path.stem}")
                tensors, ids, lengths = _compute_shard(teacher, processor, chunk, cache, plan, hidden_layers,
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
                cache: CacheConfig | None = None, plan: CachePlan | None = None, student_encoder=None,
                teacher_hash: str | None = None) -> list[str]:
    """What differs between the cache in ``cache_dir`` and these inputs (empty list: up to date and complete)."""
    meta = store.read_meta(cache_dir)
    if meta is None:
        return [f"{cache_dir}: no teacher cache"]
    splits = store.cache_splits(splits)
    parts = key_parts(teacher, processor, splits, cache or CacheConfig(), plan or CachePlan(), student_encoder,
                      teacher_hash)
    if meta.get("key") != keys.cache_key(parts):
        return keys.describe_changes(meta.get("parts", {}), parts) or ["key differs"]
    missing = [name for name in splits if not meta.get("complete", {}).get(name)]
    return [f"split {name} incomplete" for name in missing]


# ---------------------------------------------------------------- from the distillation config

def cache_dir_of(cfg: Config) -> Path:
    """Where the run's teacher cache lives: ``cache.dir``, else ``<output.dir>/teacher_cache``."""
    return Path(cfg.cache.dir).expanduser() if cfg.cache.dir else Path(cfg.output.dir) / "teacher_cache"


def run_splits(train: Sequence[Utterance], dev: Sequence[Utterance]) -> dict[str, Sequence[Utterance]]:
    """The splits a run caches: ``{"train": ..., "dev": ...}`` (no dev split when there is no dev data)."""
    return {"train": train, "dev": dev} if dev else {"train": train}


def ensure_cache(cfg: Config, built, splits: Mapping[str, Sequence[Utterance]], on_stale: str | None = None,
                 progress: bool = True) -> CacheReport:
    """Build, finish or check the run's teacher cache (what ``whisperkd cache CONFIG``, distill and tune call).

    ``built``: the run's models (:func:`whisperkd.distill.build.build_models`); ``splits``: :func:`run_splits` of
    :func:`whisperkd.distill.build.read_splits`. ``on_stale`` (None: ``cache.on_stale``). With
    ``student.encoder_window`` the student's windowed encoder outputs are built too (:mod:`.windowed`).
    """
    plan = cache_plan(cfg, built)
    report = build_cache(built.teacher, built.processor, splits, cache_dir_of(cfg), cfg.cache, plan,
                         on_stale=on_stale, progress=progress, teacher_name=cfg.teacher.model)
    window = cfg.student.window()
    if window is not None:
        report.windowed = window.describe()
        report.windowed_computed = sum(build_windowed(
            built.model.whisper, built.processor, splits, cache_dir_of(cfg), window, plan, cfg.cache.shard_size,
            cfg.cache.audio_identity, progress).values())
    return report
