"""On-disk layout of a teacher cache: safetensors shards (memory-mapped on read) and an index.

```
CACHE_DIR/
  cache.json                  key, key parts, settings, teacher facts, which splits are complete
  output_projection.safetensors  the teacher's output projection (V, d) float32: logits = final_states @ W.T
  skipped.jsonl               utterances that could not be cached (unreadable audio, too many tokens)
  <split>/shard-00000.safetensors
  <split>/index.json          utterance id -> [shard, row, token offset, token count]
  <split>-aug<k>/...          copy k of every utterance of <split> (data.augment.copies), a split of its own
```

Augmented copies (:class:`whisperkd.data.augment.AugmentedUtterance`) are cached in a split of their own per
copy index (:func:`cache_splits`), keyed like any split: changing an augmentation setting makes those splits
stale and leaves the clean one as it is; adding a copy computes only the new one.

A shard holds the utterances ``shard_size * i ...`` of its split (manifest order) that were usable. Tensors,
with ``T`` = the shard's counted label positions of all its utterances packed end to end:

| name | shape | dtype |
|---|---|---|
| ``topk_logprobs`` | (T, k) | float32 (log-probabilities at temperature T, docs/losses.md) |
| ``topk_indices`` | (T, k) | int32 |
| ``final_states`` | (T, d) | float32: the teacher decoder's last output (after the final layer norm) |
| ``labels`` / ``decoder_input_ids`` | (T,) | int64 |
| ``hidden_states`` | (T, n_layers_stored, d) | float16, optional |
| ``encoder_outputs`` | (N, 1500, d) | float16, optional: what the student's decoder consumes |

Shard metadata: the cache key, the utterance ids and token counts. A shard is written to a temporary file and
renamed, so a file with the right name and key is complete.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from whisperkd.data.atomic import atomic_path, atomic_write_text
from whisperkd.data.augment import AugmentedUtterance
from whisperkd.data.utterance import Utterance
from whisperkd.errors import UserError

CACHE_FILE = "cache.json"
INDEX_FILE = "index.json"
SKIPPED_FILE = "skipped.jsonl"
SHARD_GLOB = "shard-*.safetensors"
TOKEN_TENSORS = ("topk_logprobs", "topk_indices", "final_states", "labels", "decoder_input_ids", "hidden_states")
PROJECTION_FILE = "output_projection.safetensors"
UTTERANCE_TENSORS = ("encoder_outputs",)


def split_of(split: str, utt: Utterance) -> str:
    """The cached split that holds ``utt`` of run split ``split``: ``split`` itself, or ``<split>-aug<k>`` for
    augmented copy k."""
    return f"{split}-aug{utt.copy}" if isinstance(utt, AugmentedUtterance) else split


def copy_splits(split: str, names) -> list[str]:
    """The cached splits among ``names`` that hold augmented copies of ``split``."""
    prefix = f"{split}-aug"
    return [n for n in names if n.startswith(prefix) and n[len(prefix):].isdigit()]


def cache_splits(splits: Mapping[str, Sequence[Utterance]]) -> dict[str, list[Utterance]]:
    """The run's splits as cached: each split's clean utterances under its own name, its augmented copies under
    ``<split>-aug<k>`` (one split per copy index, in order). Without copies: the splits as they are."""
    out: dict[str, list[Utterance]] = {}
    for name, utts in splits.items():
        out[name] = [u for u in utts if not isinstance(u, AugmentedUtterance)]
        for utt in utts:
            if isinstance(utt, AugmentedUtterance):
                out.setdefault(split_of(name, utt), []).append(utt)
    return out


def shard_name(index: int) -> str:
    return f"shard-{index:05d}.safetensors"


def read_meta(cache_dir: str | Path) -> dict | None:
    """The cache's ``cache.json``, or None when there is none."""
    path = Path(cache_dir) / CACHE_FILE
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise UserError(f"{path}: damaged ({err.msg}); delete the cache folder and rebuild it") from None


def write_meta(cache_dir: str | Path, meta: dict) -> None:
    atomic_write_text(Path(cache_dir) / CACHE_FILE, json.dumps(meta, indent=1, ensure_ascii=False) + "\n")


def write_shard(path: Path, tensors: dict[str, torch.Tensor], key: str, ids: list[str], lengths: list[int]) -> int:
    """Write one shard atomically; returns its size in bytes."""
    metadata = {"key": key, "ids": json.dumps(ids, ensure_ascii=False), "lengths": json.dumps(lengths)}
    with atomic_path(path, suffix=".tmp") as tmp:
        save_file({name: t.contiguous() for name, t in tensors.items()}, str(tmp), metadata=metadata)
    return path.stat().st_size


def write_projection(cache_dir: Path, weight: torch.Tensor, key: str) -> None:
    """Store the teacher's output projection (V, d) once, float32: logits = final_states @ weight.T."""
    path = Path(cache_dir) / PROJECTION_FILE
    if projection_key(path) == key:
        return
    with atomic_path(path, suffix=".tmp") as tmp:
        save_file({"weight": weight.detach().float().cpu().contiguous()}, str(tmp), metadata={"key": key})


def projection_key(path: Path) -> str | None:
    if not path.is_file():
        return None
    try:
        with safe_open(str(path), framework="pt") as f:
            return (f.metadata() or {}).get("key")
    except Exception:
        return None


def read_projection(cache_dir: Path) -> torch.Tensor:
    path = Path(cache_dir) / PROJECTION_FILE
    if not path.is_file():
        raise UserError(f"{path}: missing; rebuild the cache with `whisperkd cache CONFIG`")
    with safe_open(str(path), framework="pt") as f:
        return f.get_tensor("weight")


def shard_metadata(path: Path) -> dict | None:
    """A shard's metadata (key, ids, lengths), or None when the file is missing or unreadable."""
    if not path.is_file():
        return None
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
    except Exception:  # a damaged file is treated as absent and rebuilt
        return None
    if "key" not in meta:
        return None
    return {"key": meta["key"], "ids": json.loads(meta["ids"]), "lengths": json.loads(meta["lengths"])}


def write_index(split_dir: Path, shards: list[tuple[str, list[str], list[int]]]) -> dict:
    """Write ``index.json`` from (shard file, ids, token counts); returns the id -> entry mapping."""
    index: dict[str, list] = {}
    for name, ids, lengths in shards:
        offset = 0
        for row, (uid, length) in enumerate(zip(ids, lengths)):
            if uid in index:
                raise UserError(f"{split_dir.name}: utterance id {uid!r} appears twice; ids must be unique")
            index[uid] = [name, row, offset, length]
            offset += length
    atomic_write_text(split_dir / INDEX_FILE, json.dumps({"utterances": index}) + "\n")
    return index


def remove_split_files(split_dir: Path) -> None:
    """Delete one split's shards and index (and the folder when nothing else is in it)."""
    for path in [*split_dir.glob(SHARD_GLOB), *split_dir.glob(".shard-*"), split_dir / INDEX_FILE]:
        path.unlink(missing_ok=True)
    try:
        split_dir.rmdir()
    except OSError:
        pass


def remove_cache_files(cache_dir: Path) -> None:
    """Delete what a cache build wrote (shards, indexes, meta, skip log), nothing else."""
    for split_dir in [p for p in cache_dir.iterdir() if p.is_dir()] if cache_dir.is_dir() else []:
        remove_split_files(split_dir)
    for name in (CACHE_FILE, SKIPPED_FILE, PROJECTION_FILE):
        (cache_dir / name).unlink(missing_ok=True)


def directory_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in Path(path).rglob("*") if p.is_file())


class CacheSplit:
    """Random access to one cached split; shards are memory-mapped and kept open (at most ``max_open``)."""

    def __init__(self, split_dir: Path, max_open: int = 64):
        self.dir = Path(split_dir)
        index_path = self.dir / INDEX_FILE
        if not index_path.is_file():
            raise UserError(f"{self.dir}: the cache of this split is incomplete (no {INDEX_FILE}); "
                            "run `whisperkd cache CONFIG` to finish it")
        self.index: dict[str, list] = json.loads(index_path.read_text(encoding="utf-8"))["utterances"]
        self._open: OrderedDict[str, object] = OrderedDict()
        self.max_open = max_open

    def __len__(self) -> int:
        return len(self.index)

    def __getstate__(self) -> dict:  # DataLoader workers reopen the shards they read
        return {**self.__dict__, "_open": OrderedDict()}

    def __contains__(self, uid: str) -> bool:
        return uid in self.index

    def _handle(self, name: str):
        handle = self._open.get(name)
        if handle is None:
            path = self.dir / name
            if not path.is_file():
                raise UserError(f"{path}: shard missing; rebuild the cache with `whisperkd cache CONFIG`")
            handle = safe_open(str(path), framework="pt")
            self._open[name] = handle
            while len(self._open) > self.max_open:
                self._open.popitem(last=False)
        else:
            self._open.move_to_end(name)
        return handle

    def get(self, uid: str, names: tuple[str, ...]) -> dict[str, torch.Tensor]:
        """The named tensors of one utterance (token tensors cut to its counted positions)."""
        entry = self.index.get(uid)
        if entry is None:
            raise UserError(f"{self.dir}: utterance {uid!r} is not in the teacher cache; the data changed since "
                            "the cache was built: rebuild it with `whisperkd cache CONFIG`")
        name, row, offset, length = entry
        handle = self._handle(name)
        out = {}
        for tensor in names:
            piece = handle.get_slice(tensor)
            out[tensor] = piece[row:row + 1][0] if tensor in UTTERANCE_TENSORS else piece[offset:offset + length]
        return out
