"""The student's frozen encoder under its short window, computed once per utterance (``student.encoder_window``).

A student trained for a short encoder window (:mod:`whisperkd.models.window`) keeps the teacher's encoder,
frozen, but runs it on the shortest window that holds each utterance plus a margin; its decoder learns to read
those outputs while the teacher's targets still come from the full 30 s (the teacher cache, unchanged). The
windowed outputs are one more pass of the frozen encoder per utterance, so they are cached next to the teacher
cache, in a store of their own with its own keys: changing the window recomputes them and leaves the teacher
cache valid.

```
CACHE_DIR/windowed-encoder/<window>/<split>/shard-*.safetensors   windowed_encoder (frames of all rows, d) float16
CACHE_DIR/windowed-encoder/<window>/<split>/index.json            utterance id -> [shard, row, frame offset, frames]
```

``<window>`` is :meth:`Window.tag <whisperkd.models.window.Window.tag>` (``auto-step5-margin0.5``, ``10s``): runs that
compare windows share one teacher cache and keep one store per window.

A shard's key covers the encoder weights, the log-mel settings, the window, the data filters and the shard's
split data (the same fingerprints as the teacher cache), so a stale shard is recomputed. An utterance the
filters reject is left out (the teacher cache lists it as skipped). :class:`WindowedEncoder` reads the outputs
back; its :meth:`~WindowedEncoder.frames` let the trainer batch utterances of one window together.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict
from pathlib import Path

import torch
from tqdm.auto import tqdm

from whisperkd.data.audio import DurationFilter
from whisperkd.data.loader import SpeechDataset
from whisperkd.data.skiplog import SkipLog
from whisperkd.data.utterance import Utterance
from whisperkd.distill.cache import key as keys
from whisperkd.distill.cache import store
from whisperkd.distill.cache.key import CachePlan
from whisperkd.errors import UserError
from whisperkd.models.window import Window, encoder_window

WINDOWED_DIR = "windowed-encoder"
TENSOR = "windowed_encoder"


def window_key(model, processor, window: Window, plan: CachePlan, audio_identity: str) -> dict:
    """What every windowed shard depends on besides its split's data."""
    return {"format": keys.FORMAT_VERSION, "encoder": keys.teacher_fingerprint(model.model.encoder),
            "features": keys.feature_extractor_fingerprint(processor.feature_extractor), "window": asdict(window),
            "durations": [plan.min_seconds, plan.max_seconds], "max_label_tokens": plan.max_label_tokens,
            "audio_identity": audio_identity, "dtype": "float16"}


@torch.no_grad()
def _compute_shard(model, processor, utterances: Sequence[Utterance], window: Window, plan: CachePlan,
                   split: str) -> tuple[torch.Tensor, list[str], list[int]]:
    dataset = SpeechDataset(utterances, processor, SkipLog(), DurationFilter(plan.min_seconds, plan.max_seconds),
                            split, plan.max_label_tokens)
    param = next(model.parameters())
    outputs, ids, frames = [], [], []
    for i in range(len(dataset)):
        example = dataset[i]
        if example is None:  # the teacher cache lists it as skipped
            continue
        features = torch.as_tensor(example["input_features"])[None]
        with encoder_window(model, window.for_audio(example["seconds"])) as n:
            out = model.model.encoder(features[..., :n].to(param.device, param.dtype)).last_hidden_state[0]
        outputs.append(out.half().cpu())
        ids.append(example["id"])
        frames.append(out.shape[0])
    d = model.config.d_model
    return (torch.cat(outputs) if outputs else torch.zeros(0, d, dtype=torch.float16)), ids, frames


def build_windowed(model, processor, splits: Mapping[str, Sequence[Utterance]], cache_dir: str | Path,
                   window: Window, plan: CachePlan, shard_size: int = 256, audio_identity: str = "stat",
                   progress: bool = True) -> dict[str, int]:
    """Compute (or finish, or check) the windowed encoder outputs of ``splits`` (run splits; augmented copies
    get splits of their own, as in the teacher cache) under ``CACHE_DIR/windowed-encoder``. ``model``: the
    student Whisper (its encoder is the teacher's, frozen). Returns the number of utterances computed per split."""
    root = Path(cache_dir) / WINDOWED_DIR / window.tag()
    shared = window_key(model, processor, window, plan, audio_identity)
    computed: dict[str, int] = {}
    splits = store.cache_splits(splits)
    total = sum(len(u) for u in splits.values())
    with tqdm(total=total, unit="utt", desc=f"windowed encoder ({window.describe()})", disable=not progress) as bar:
        for name, utts in splits.items():
            split_dir = root / name
            split_dir.mkdir(parents=True, exist_ok=True)
            fingerprints = keys.utterance_fingerprints(utts, audio_identity)
            shards, computed[name] = [], 0
            for i in range(0, max(len(utts), 1), shard_size):
                chunk = utts[i:i + shard_size]
                key = keys.digest([shared, name, fingerprints[i:i + shard_size]])
                path = split_dir / store.shard_name(i // shard_size)
                found = store.shard_metadata(path)
                if found is None or found["key"] != key:
                    tensor, ids, frames = _compute_shard(model, processor, chunk, window, plan, name)
                    store.write_shard(path, {TENSOR: tensor}, key, ids, frames)
                    found = {"ids": ids, "lengths": frames}
                    computed[name] += len(chunk)
                shards.append((path.name, found["ids"], found["lengths"]))
                bar.update(len(chunk))
            n_shards = len(shards)
            for extra in split_dir.glob(store.SHARD_GLOB):  # shards of a longer earlier version of the split
                if int(extra.stem.rpartition("-")[2]) >= n_shards:
                    extra.unlink()
            store.write_index(split_dir, shards)
    return computed


class WindowedEncoder:
    """The windowed encoder outputs of a cache's splits (and their augmented copies' splits), by utterance id."""

    def __init__(self, cache_dir: str | Path, window: Window, splits: Sequence[str]):
        root = Path(cache_dir) / WINDOWED_DIR / window.tag()
        names = [n for n in sorted(p.name for p in root.iterdir() if p.is_dir())
                 if n in splits or any(n in store.copy_splits(s, [n]) for s in splits)] if root.is_dir() else []
        if not names:
            raise UserError(f"{root}: no windowed encoder outputs; they are built with the teacher cache "
                            "(`whisperkd cache CONFIG` with student.encoder_window set)")
        self.splits = [store.CacheSplit(root / n) for n in names]

    def _find(self, uid: str) -> store.CacheSplit:
        for split in self.splits:
            if uid in split:
                return split
        raise UserError(f"windowed encoder outputs: utterance {uid!r} is not cached; rebuild with "
                        "`whisperkd cache CONFIG`")

    def frames(self, uid: str) -> int | None:
        """The number of encoder frames stored for ``uid`` (50 per second of its window), None if not stored."""
        for split in self.splits:
            entry = split.index.get(uid)
            if entry is not None:
                return int(entry[3])
        return None

    def batch(self, ids: Sequence[str]) -> torch.Tensor:
        """(B, frames, d) float16 encoder outputs of ``ids``, which must share one window."""
        rows = [self._find(uid).get(uid, (TENSOR,))[TENSOR] for uid in ids]
        if len({r.shape[0] for r in rows}) != 1:
            raise UserError("windowed encoder outputs: a batch mixes windows "
                            f"({sorted({r.shape[0] // 50 for r in rows})} s); batches must be grouped by window")
        return torch.stack(rows)


class WindowedTeacher:
    """A cached teacher whose ``encoder_hidden_states`` are the student's windowed encoder outputs (float32 on
    ``out_device``), not the teacher's 30-s ones; everything else comes from ``teacher`` unchanged."""

    def __init__(self, teacher, windowed: WindowedEncoder, needs, out_device: torch.device | str = "cpu"):
        self.teacher, self.windowed, self.needs = teacher, windowed, needs
        self.out_device = torch.device(out_device)

    def windows(self, utterances: Sequence[Utterance]) -> list[int]:
        """Each utterance's stored encoder frames (0 when not stored): the keys batches are grouped by."""
        return [self.windowed.frames(u.id) or 0 for u in utterances]

    def __call__(self, batch: dict):
        out = self.teacher(batch)
        out.encoder_hidden_states = self.windowed.batch(batch["ids"]).to(self.out_device, torch.float32)
        return out
