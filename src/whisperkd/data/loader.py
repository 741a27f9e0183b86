"""A DataLoader of Whisper batches from utterances: decode, filter, log-mel, tokenize, pad."""

from __future__ import annotations

import os
from collections.abc import Sequence

from torch.utils.data import DataLoader, Dataset

from whisperkd.data.audio import SAMPLE_RATE, AudioSkip, DurationFilter, load_utterance
from whisperkd.data.augment import AugmentedUtterance, feature_frames
from whisperkd.data.collate import MAX_TARGET_POSITIONS, TokenEncoder, WhisperCollator, log_mel
from whisperkd.data.sampler import SeededBatchSampler
from whisperkd.data.skiplog import SkipLog
from whisperkd.data.utterance import Utterance


class SpeechDataset(Dataset):
    """Examples ``{id, text, input_features, tokens, seconds}`` (``seconds``: the audio's length as the model
    hears it, after any speed change); an unusable utterance is logged and gives ``None``.
    An augmented copy (:class:`~whisperkd.data.augment.AugmentedUtterance`) gets its effects on the samples and
    on the log-mel; its tokens are those of its transcript, as for any utterance."""

    def __init__(self, utterances: Sequence[Utterance], processor, skiplog: SkipLog | None = None,
                 durations: DurationFilter | None = DurationFilter(), source: str = "data",
                 max_label_tokens: int = MAX_TARGET_POSITIONS):
        self.utterances = utterances
        self.feature_extractor = processor.feature_extractor
        self.encode = TokenEncoder(processor.tokenizer, max_label_tokens)
        self.skiplog = skiplog if skiplog is not None else SkipLog()
        self.durations, self.source = durations, source

    def __len__(self) -> int:
        return len(self.utterances)

    def __getitem__(self, index: int) -> dict | None:
        utt = self.utterances[index]
        try:
            tokens = self.encode(utt.text)
            audio = load_utterance(utt, self.durations)
        except AudioSkip as skip:
            self.skiplog.add(self.source, utt.id, utt.path, skip.reason, skip.detail)
            return None
        if not isinstance(utt, AugmentedUtterance):
            return {"id": utt.id, "text": utt.text, "input_features": log_mel(self.feature_extractor, audio),
                    "tokens": tokens, "seconds": audio.shape[0] / SAMPLE_RATE}
        audio = utt.augment_audio(audio)
        features = log_mel(self.feature_extractor, audio)
        features = utt.augment_features(features, feature_frames(audio.shape[0], self.feature_extractor.hop_length))
        return {"id": utt.id, "text": utt.text, "input_features": features, "tokens": tokens,
                "seconds": audio.shape[0] / SAMPLE_RATE}


class SkippingDataLoader(DataLoader):
    """A DataLoader that leaves out batches in which every utterance was skipped."""

    def __iter__(self):
        for batch in super().__iter__():
            if batch is not None:
                yield batch


def utterance_lengths(utterances: Sequence[Utterance]) -> list[float]:
    """Duration in seconds when known, else the transcript length in characters / 15 (a rough proxy)."""
    return [u.duration if u.duration is not None else len(u.text) / 15.0 for u in utterances]


def make_loader(utterances: Sequence[Utterance], processor, batch_size: int = 8, seed: int = 0,
                shuffle: bool = True, length_grouped: bool = False, num_workers: int | None = None,
                skiplog: SkipLog | None = None, durations: DurationFilter | None = DurationFilter(),
                source: str = "data", drop_last: bool = False) -> SkippingDataLoader:
    """Batches (see :mod:`whisperkd.data.collate`) in an order fixed by ``seed``; call
    ``loader.batch_sampler.set_epoch(e)`` for epoch ``e``. Skips go to ``skiplog`` (give it a run folder
    when ``num_workers > 0`` so the workers' records reach the file)."""
    dataset = SpeechDataset(utterances, processor, skiplog, durations, source)
    sampler = SeededBatchSampler(utterance_lengths(utterances), batch_size, seed, shuffle, length_grouped, drop_last)
    if num_workers is None:
        num_workers = min(2, os.cpu_count() or 1)
    pad_id = processor.tokenizer.convert_tokens_to_ids("<|endoftext|>")
    return SkippingDataLoader(dataset, batch_sampler=sampler, collate_fn=WhisperCollator(pad_id),
                              num_workers=num_workers, persistent_workers=False)
