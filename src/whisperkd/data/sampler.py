"""Deterministic batch order: shuffled by seed and epoch, optionally grouped by length."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
from torch.utils.data import Sampler


class SeededBatchSampler(Sampler[list[int]]):
    """Batches of indices whose order depends only on ``seed`` and the epoch (:meth:`set_epoch`).

    With ``length_grouped``, indices are shuffled, cut into windows of ``batch_size * window_batches``,
    each window sorted by length (longest first) and cut into batches, and the batches shuffled: batches
    hold similar lengths (less padding) while the order stays random. With ``groups`` (one key per index, e.g.
    the encoder window of each utterance) a batch only holds indices of one group: each group's indices, in the
    order above, are cut into batches, and the batches of all groups are shuffled together.
    """

    def __init__(self, lengths: Sequence[float], batch_size: int, seed: int = 0, shuffle: bool = True,
                 length_grouped: bool = False, drop_last: bool = False, window_batches: int = 50,
                 groups: Sequence[int] | None = None):
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        self.lengths = np.asarray(lengths, dtype=np.float64)
        self.batch_size, self.seed, self.shuffle = batch_size, seed, shuffle
        self.length_grouped, self.drop_last, self.window_batches = length_grouped, drop_last, window_batches
        self.groups = None if groups is None else np.asarray(groups)
        if self.groups is not None and len(self.groups) != len(self.lengths):
            raise ValueError("groups: one key per index")
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Choose the epoch whose order the next iteration gives."""
        self.epoch = epoch

    def batches(self) -> list[list[int]]:
        """All batches of the current epoch."""
        n = len(self.lengths)
        rng = np.random.default_rng([self.seed, self.epoch])
        order = rng.permutation(n) if self.shuffle else np.arange(n)
        if self.length_grouped:
            window = self.batch_size * self.window_batches
            order = np.concatenate([
                chunk[np.argsort(-self.lengths[chunk], kind="stable")]
                for chunk in (order[i:i + window] for i in range(0, n, window))
            ]) if n else order
        if self.groups is not None:
            batches = []
            for key in np.unique(self.groups):
                members = order[self.groups[order] == key]
                cut = [members[i:i + self.batch_size].tolist() for i in range(0, len(members), self.batch_size)]
                if self.drop_last and cut and len(cut[-1]) < self.batch_size:
                    cut.pop()
                batches += cut
            return [batches[i] for i in rng.permutation(len(batches))] if self.shuffle else batches
        batches = [order[i:i + self.batch_size].tolist() for i in range(0, n, self.batch_size)]
        if self.drop_last and batches and len(batches[-1]) < self.batch_size:
            batches.pop()
        if self.length_grouped and self.shuffle:
            batches = [batches[i] for i in rng.permutation(len(batches))]
        return batches

    def __iter__(self) -> Iterator[list[int]]:
        return iter(self.batches())

    def __len__(self) -> int:
        if self.groups is not None:
            return len(self.batches())
        n = len(self.lengths) // self.batch_size if self.drop_last else -(-len(self.lengths) // self.batch_size)
        return n
