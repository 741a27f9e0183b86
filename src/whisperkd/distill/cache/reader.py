"""The teacher, read back from an offline cache through the same call as :class:`OnlineTeacher`.

``CachedTeacher(cache_dir, None, needs)(batch) -> TeacherBatch`` looks the batch's utterances up by id
and gives the teacher's full logits (rebuilt from the stored final decoder states) or its top-k
log-probabilities, the stored decoder hidden states and the frozen encoder outputs, padded to the batch's
label length. With ``needs.encoder`` the trainer hands those encoder
outputs to the student's decoder, so a training step runs neither the teacher nor the frozen encoder.

:class:`CachedSpeechDataset` and :class:`CachedCollator` go one step further: the training batches themselves
(labels, decoder inputs, ids, texts) straight from the cache, with no audio decoding or log-mel, for a student
whose encoder is frozen and shared with the teacher. They replace :class:`~whisperkd.data.loader.SpeechDataset`
and :class:`~whisperkd.data.collate.WhisperCollator` under the same batch sampler, so the batches are the same;
:func:`cache_loader` is :func:`~whisperkd.data.loader.make_loader` on them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import torch
from torch.utils.data import Dataset

from whisperkd.data.collate import IGNORE_INDEX, WhisperCollator
from whisperkd.data.loader import SkippingDataLoader, utterance_lengths
from whisperkd.data.sampler import SeededBatchSampler
from whisperkd.data.skiplog import SkipLog
from whisperkd.data.utterance import Utterance
from whisperkd.distill.cache import store
from whisperkd.distill.teacher_batch import TeacherBatch, TeacherNeeds
from whisperkd.errors import UserError

LOGITS_MODES = ("full", "topk")


def open_cache_meta(cache_dir: str | Path) -> dict:
    meta = store.read_meta(cache_dir)
    if meta is None:
        raise UserError(f"{cache_dir}: no teacher cache here; build it with `whisperkd cache CONFIG`")
    return meta


def check_needs(meta: dict, needs: TeacherNeeds, temperature: float | None, where: str,
                logits: str = "full") -> None:
    """Refuse a cache that cannot give what the trainer needs (one line saying what to change)."""
    if logits not in LOGITS_MODES:
        raise UserError(f"{where}: logits {logits!r}; use one of {', '.join(LOGITS_MODES)}")
    if logits == "topk" and needs.logits and needs.full_logits:
        raise UserError(f"{where}: TAID needs the teacher's full logits; top-k log-probs cannot give them "
                        "(use cache.logits=full)")
    if logits == "topk" and needs.logits and not meta.get("k"):
        raise UserError(f"{where}: no top-k log-probs stored (built with k = 0); use cache.logits=full or rebuild "
                        "with cache.topk=64")
    if logits == "topk" and temperature is not None and needs.logits and not math.isclose(
            float(meta["temperature"]), float(temperature), rel_tol=0, abs_tol=1e-9):
        raise UserError(f"{where}: top-k built at temperature {meta['temperature']:g}, training uses {temperature:g}; "
                        "the tail mass cannot be recovered at another temperature: rebuild the cache "
                        "(or use cache.logits=full, which serves any temperature)")
    missing = [i for i in needs.hidden_layers if i not in meta.get("hidden_layers", [])]
    if missing:
        raise UserError(f"{where}: teacher decoder layers {missing} are not stored (stored: "
                        f"{meta.get('hidden_layers', [])}); rebuild the cache with cache.hidden_layers=all")
    if needs.encoder and not meta.get("encoder_outputs"):
        raise UserError(f"{where}: no frozen-encoder outputs stored; rebuild the cache with encoder outputs")


class CachedTeacher:
    """A :class:`~whisperkd.distill.teacher.TeacherOutputs` that reads a teacher cache.

    ``logits="full"`` (default): the teacher's full logits, rebuilt exactly as ``final_states @ W.T`` from the
    stored float32 final decoder states and output projection (one matmul per batch; any temperature, TAID
    too). ``logits="topk"``: the stored top-k log-probabilities at the cache's temperature (the KL is then the
    tail-bucket approximation of docs/losses.md; docs/cache.md measures how far it is from the full KL).
    ``splits``: the cached split(s) to look utterances up in, with their augmented copies' splits (None: all, so
    one object serves training and dev evaluation). ``temperature``: the training temperature (checked in top-k
    mode). Tensors come out on ``out_device`` (float32 logits/log-probs, int64 ids; hidden states and encoder
    outputs in ``out_dtype``, default float32). A batch whose labels differ from the cached ones is refused
    (stale cache).
    """

    def __init__(self, cache_dir: str | Path, splits: str | Sequence[str] | None,
                 needs: TeacherNeeds, temperature: float | None = None,
                 out_device: torch.device | str = "cpu", out_dtype: torch.dtype | None = None, logits: str = "full"):
        self.cache_dir = Path(cache_dir)
        self.meta = open_cache_meta(self.cache_dir)
        self.where = f"teacher cache {self.cache_dir}"
        available = list(self.meta.get("complete", {}))
        names = available if splits is None else [splits] if isinstance(splits, str) else list(splits)
        unknown = [n for n in names if n not in available]
        if unknown:
            raise UserError(f"{self.where}: no split {unknown[0]!r} (has: {', '.join(available)})")
        names += [m for n in list(names) for m in store.copy_splits(n, available) if m not in names]
        check_needs(self.meta, needs, temperature, self.where, logits)
        self.needs, self.mode = needs, logits
        self.splits = [store.CacheSplit(self.cache_dir / n) for n in names]
        self.out_device = torch.device(out_device)
        self.out_dtype = out_dtype or torch.float32
        self.k = int(self.meta["k"])
        self.temperature = None if self.meta.get("temperature") is None else float(self.meta["temperature"])
        self._layer_pos = {layer: i for i, layer in enumerate(self.meta.get("hidden_layers", []))}
        self.projection = None
        if needs.logits and logits == "full":
            self.projection = store.read_projection(self.cache_dir).to(self.out_device)

    def _names(self) -> tuple[str, ...]:
        names = ["labels"]
        if self.needs.logits:
            names += ["final_states"] if self.mode == "full" else ["topk_logprobs", "topk_indices"]
        if self.needs.hidden_layers:
            names.append("hidden_states")
        if self.needs.encoder:
            names.append("encoder_outputs")
        return tuple(names)

    def row(self, uid: str, labels: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """The cached tensors of one utterance (unpadded, CPU). With ``labels`` (the batch row, -100 padded) the
        entry must have been built on exactly those labels; else the cache is stale (UserError)."""
        counted = None if labels is None else labels[labels != IGNORE_INDEX].cpu()
        found = False
        for split in self.splits:
            if uid not in split:
                continue
            found = True
            row = split.get(uid, self._names())
            if counted is None or torch.equal(counted, row["labels"]):
                return row
        if not found:
            raise UserError(f"{self.where}: utterance {uid!r} is not cached; the data changed since the cache was "
                            "built: rebuild it with `whisperkd cache CONFIG`")
        raise UserError(f"{self.where}: utterance {uid!r} has other labels than when the cache was built (text, "
                        "tokenizer or label settings changed); rebuild it with `whisperkd cache CONFIG`")

    def __call__(self, batch: dict) -> TeacherBatch:
        ids = batch.get("ids")
        if ids is None:
            raise UserError(f"{self.where}: the batch has no utterance ids; a cache looks entries up by id")
        labels = batch["labels"]
        length = labels.shape[1]
        rows = [self.row(uid, batch_labels) for uid, batch_labels in zip(ids, labels)]
        out = TeacherBatch()
        b = len(rows)
        if self.needs.logits and self.mode == "full":
            states = torch.zeros((b, length, self.projection.shape[1]), dtype=torch.float32)
            for i, row in enumerate(rows):
                states[i, :row["labels"].shape[0]] = row["final_states"]
            out.logits = states.to(self.out_device) @ self.projection.T  # padding positions: all-zero logits
        elif self.needs.logits:
            k = self.k
            # Padding positions get a uniform top-k (finite everywhere, so masked terms stay 0, not NaN).
            logprobs = torch.full((b, length, k), -math.log(k), dtype=torch.float32)
            indices = torch.arange(k, dtype=torch.long).expand(b, length, k).clone()
            for i, row in enumerate(rows):
                n = row["labels"].shape[0]
                logprobs[i, :n] = row["topk_logprobs"]
                indices[i, :n] = row["topk_indices"].long()
            out.topk_logprobs = logprobs.to(self.out_device)
            out.topk_indices = indices.to(self.out_device)
            out.topk_temperature = self.temperature
        if self.needs.hidden_layers:
            d = rows[0]["hidden_states"].shape[-1]
            stacked = torch.zeros((b, length, len(self._layer_pos), d), dtype=torch.float16)
            for i, row in enumerate(rows):
                stacked[i, :row["labels"].shape[0]] = row["hidden_states"]
            for layer in self.needs.hidden_layers:
                out.hidden_states[layer] = stacked[:, :, self._layer_pos[layer]].to(self.out_device, self.out_dtype)
        if self.needs.encoder:
            out.encoder_hidden_states = torch.stack([row["encoder_outputs"] for row in rows]).to(
                self.out_device, self.out_dtype)
        return out


class CachedSpeechDataset(Dataset):
    """:class:`~whisperkd.data.loader.SpeechDataset` from the cache: example ``index`` is ``utterances[index]`` as
    ``{id, text, tokens}`` (the token sequence the cached labels were built from), read from ``split`` of the
    cache, no audio: :class:`~whisperkd.data.collate.WhisperCollator` batches it with ``input_features=None``. An utterance the build skipped (unreadable audio, outside the duration filter, too many tokens:
    the cache's ``skipped.jsonl``) gives None and is recorded in ``skiplog`` under ``source``, as SpeechDataset
    does; one the cache does not know at all is a stale cache (UserError). The cache must hold the frozen encoder
    outputs (the student's decoder reads them instead of audio features). An augmented copy is read from its
    own cached split (``<split>-aug<k>``), whose encoder outputs are those of the augmented input."""

    def __init__(self, cache_dir: str | Path, utterances: Sequence[Utterance], split: str = "train",
                 skiplog: SkipLog | None = None, source: str = "train"):
        cache_dir = Path(cache_dir)
        meta = open_cache_meta(cache_dir)
        if not meta.get("encoder_outputs"):
            raise UserError(f"teacher cache {cache_dir}: no frozen-encoder outputs stored, so training from it "
                            "still needs the audio; such a cache serves a student that keeps the teacher's "
                            "whole encoder frozen")
        self.cache_dir, self.name = cache_dir, split
        self.split = store.CacheSplit(cache_dir / split)
        self.splits = {split: self.split}  # and the augmented copies' splits, opened when first read
        self.pad_id = int(meta["parts"]["labels"]["eot"])
        self.utterances, self.skiplog, self.source = utterances, skiplog, source
        names = {split, *store.copy_splits(split, meta.get("complete", {}))}
        self.skipped = {r["id"]: r for r in SkipLog(cache_dir, filename=store.SKIPPED_FILE).records()
                        if r["source"] in names}

    def __len__(self) -> int:
        return len(self.utterances)

    def _split(self, utt: Utterance) -> store.CacheSplit:
        name = store.split_of(self.name, utt)
        if name not in self.splits:
            self.splits[name] = store.CacheSplit(self.cache_dir / name)
        return self.splits[name]

    def __getitem__(self, index: int) -> dict | None:
        utt = self.utterances[index]
        split = self._split(utt)
        if utt.id not in split and utt.id in self.skipped:
            record = self.skipped[utt.id]
            if self.skiplog is not None:
                self.skiplog.add(self.source, utt.id, utt.path, record["reason"], record.get("detail", ""))
            return None
        row = split.get(utt.id, ("labels", "decoder_input_ids"))
        tokens = torch.cat([row["decoder_input_ids"], row["labels"][-1:]])  # labels are the inputs shifted by one
        return {"id": utt.id, "text": utt.text, "tokens": tokens}


def cache_loader(cache_dir: str | Path, utterances: Sequence[Utterance], batch_size: int = 8, seed: int = 0,
                 shuffle: bool = True, length_grouped: bool = False, drop_last: bool = False, split: str = "train",
                 num_workers: int = 0, skiplog: SkipLog | None = None) -> SkippingDataLoader:
    """:func:`whisperkd.data.loader.make_loader` without audio: the same batches of ``utterances`` (same seeded
    order, lengths and skips; ``input_features=None``), read from ``split`` of the cache."""
    dataset = CachedSpeechDataset(cache_dir, utterances, split, skiplog, source=split)
    sampler = SeededBatchSampler(utterance_lengths(utterances), batch_size, seed, shuffle, length_grouped, drop_last)
    return SkippingDataLoader(dataset, batch_sampler=sampler, collate_fn=WhisperCollator(dataset.pad_id),
                              num_workers=num_workers)
