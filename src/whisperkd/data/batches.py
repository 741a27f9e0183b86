"""Training and dev batches for a distillation run: a seeded order per epoch that resumes at a position.

The examples come from any map-style dataset (the audio :class:`~whisperkd.data.loader.SpeechDataset`, or a
teacher cache's audio-free dataset) with its collate function; the order depends only on the seed, the
epoch and the utterance lengths, so audio and cache give the same batches.
"""

from __future__ import annotations

import torch
from accelerate import skip_first_batches
from torch.utils.data import DataLoader, Dataset

from whisperkd.data.sampler import SeededBatchSampler
from whisperkd.data.skiplog import SkipLog
from whisperkd.errors import UserError


class OnceSkipLog(SkipLog):
    """A SkipLog that records each (source, id) once per process, not once per epoch."""

    def __init__(self, run_dir):
        super().__init__(run_dir)
        self._seen = {(r["source"], r["id"]) for r in self.records()}

    def add(self, source, id, path, reason, detail=""):
        if (str(source), str(id)) in self._seen:
            return
        self._seen.add((str(source), str(id)))
        super().add(source, id, path, reason, detail)


class MemoDataset(Dataset):
    """A dataset that keeps up to ``size`` examples in memory (single process: num_workers=0)."""

    def __init__(self, dataset, size: int):
        self.dataset, self.size, self.memo = dataset, size, {}

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int):
        if index in self.memo:
            return self.memo[index]
        example = self.dataset[index]
        if len(self.memo) < self.size:
            self.memo[index] = example
        return example


class TrainBatches:
    """Training batches in a seeded order per epoch that resume at a position ``{"epoch", "batch"}``.

    ``batch`` counts the batches of the epoch already consumed (a batch whose every utterance was skipped
    counts too), so a resumed run skips exactly the batches already seen, without loading them
    (accelerate's ``skip_first_batches``). With several processes each takes every ``world``-th batch (the
    epoch is cut to a multiple of ``world``). ``groups``: one key per utterance; a batch holds one key only
    (:class:`~whisperkd.data.sampler.SeededBatchSampler`).
    """

    def __init__(self, dataset, collate, lengths, batch_size: int, seed: int, length_grouped: bool = False,
                 num_workers: int = 0, world: int = 1, rank: int = 0, groups=None):
        self.dataset, self.collate = dataset, collate
        self.sampler = SeededBatchSampler(lengths, batch_size, seed, shuffle=True, length_grouped=length_grouped,
                                          groups=groups)
        self.num_workers, self.world, self.rank = num_workers, world, rank

    def epoch(self, epoch: int) -> list[list[int]]:
        self.sampler.set_epoch(epoch)
        batches = self.sampler.batches()
        batches = batches[: len(batches) - len(batches) % self.world]
        if not batches:
            raise UserError(f"data.train: {len(self.dataset)} utterances make no batch for {self.world} process(es)")
        return batches[self.rank:: self.world]

    def iterate(self, position: dict):
        """Yield batches forever from ``position``, advancing it as each batch is consumed."""
        while True:
            start = position["batch"]
            loader = DataLoader(self.dataset, batch_sampler=self.epoch(position["epoch"]), collate_fn=self.collate,
                                num_workers=self.num_workers, generator=torch.Generator())  # keeps the global RNG
            usable = 0
            for batch in skip_first_batches(loader, start) if start else loader:
                position["batch"] += 1
                if batch is None:
                    continue
                usable += 1
                yield batch
            if usable == 0 and start == 0:
                raise UserError("data.train: every training utterance was skipped; see skipped.jsonl in the run folder")
            position["epoch"] += 1
            position["batch"] = 0


def dev_batches(dataset, collate, batch_size: int, num_workers: int = 0, groups=None) -> list[dict]:
    """The dev subset as batches, loaded once and kept in memory; with ``groups`` (one key per utterance) a
    batch holds one key only (in input order within a key)."""
    if len(dataset) == 0:
        return []
    sampler = SeededBatchSampler([0.0] * len(dataset), batch_size, shuffle=False, groups=groups) if groups else None
    loader = DataLoader(dataset, batch_size=1 if sampler else batch_size, shuffle=False, batch_sampler=sampler,
                        collate_fn=collate, num_workers=num_workers, generator=torch.Generator())
    return [batch for batch in loader if batch is not None]
