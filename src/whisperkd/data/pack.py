"""Pack several short utterances into one Whisper window: concatenated audio, concatenated transcripts.

Whisper's encoder always runs on a 30-s window, so a 4-s utterance pays for 26 s of padding. Packing
``k`` utterances into one window divides the teacher's encoder cost per sentence (the teacher cache's
main cost) by about ``k``; the decoder then learns the concatenated transcript.

Each window gets its own length target, drawn uniformly from (0, max_seconds], so windows hold 1, 2, 3, ...
utterances. Windows that are always full teach a student that a sentence is always followed by another:
packed to 28 s every time, the quick demo's student never stopped after a single sentence (dev WER 162 %).
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import soundfile as sf

from whisperkd.data.atomic import atomic_path
from whisperkd.data.audio import SAMPLE_RATE, AudioSkip, load_utterance, utterance_seconds
from whisperkd.data.manifest import write_manifest
from whisperkd.data.sources import open_source
from whisperkd.data.utterance import Utterance
from whisperkd.errors import UserError


def plan_packs(durations: Sequence[float], max_seconds: float, gap_seconds: float, seed: int = 0,
               varied: bool = True) -> list[list[int]]:
    """Groups of indices (a seeded shuffle, then greedy filling) whose durations plus the gaps between them
    fit in the window's target: ``max_seconds``, or with ``varied`` a target drawn per window uniformly from
    (0, max_seconds]. A window always takes at least one utterance (one longer than its target is alone)."""
    if max_seconds <= 0 or gap_seconds < 0:
        raise UserError(f"packing: max_seconds must be > 0 and gap_seconds >= 0 (got {max_seconds}, {gap_seconds})")
    rng = random.Random(seed)
    order = list(range(len(durations)))
    rng.shuffle(order)

    def target() -> float:
        return max_seconds * (1.0 - rng.random()) if varied else max_seconds

    groups: list[list[int]] = []
    current: list[int] = []
    length, limit = 0.0, target()
    for i in order:
        extra = durations[i] + (gap_seconds if current else 0.0)
        if current and length + extra > limit:
            groups.append(current)
            current, length, limit = [], 0.0, target()
            extra = durations[i]
        current.append(i)
        length += extra
    if current:
        groups.append(current)
    return groups


def pack_manifest(manifest: str | Path, out_dir: str | Path, max_seconds: float = 28.0, gap_seconds: float = 0.4,
                  seed: int = 0, varied: bool = True) -> Path:
    """Write packed windows (``packed-NNNNN.wav``) and their ``manifest.jsonl`` into ``out_dir``; returns the
    manifest. ``manifest`` is any data source :func:`~whisperkd.data.sources.open_source` reads (a manifest,
    LibriSpeech tree, Kaldi data folder or HF datasets folder). A window's file name carries a hash of its members
    (and of a segment's bounds) and gap, so a rerun reuses exactly the windows it would write again. A member
    shorter than the 1-s minimum of a training input is fine (the window is the input); unreadable or silent
    members raise UserError naming the file."""
    utterances = list(open_source(manifest))
    if not utterances:
        raise UserError(f"{manifest}: no utterances to pack")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    durations = []
    for utt in utterances:
        try:
            durations.append(utterance_seconds(utt))
        except AudioSkip as err:
            raise UserError(f"{utt.path or utt.id}: cannot pack ({err}); fix or drop it from {manifest}") from None
    gap = np.zeros(int(round(gap_seconds * SAMPLE_RATE)), dtype=np.float32)
    packed = []
    for n, group in enumerate(plan_packs(durations, max_seconds, gap_seconds, seed, varied)):
        members = [utterances[i] for i in group]
        names = [(u.id, u.start, u.end) if u.is_segment else u.id for u in members]  # a moved segment: new file
        digest = hashlib.sha1(repr((names, gap_seconds)).encode()).hexdigest()[:10]
        path = out_dir / f"packed-{n:05d}-{digest}.wav"
        if not path.is_file():
            pieces = []
            for utt in members:
                try:
                    pieces += [load_utterance(utt, durations=None), gap]
                except AudioSkip as err:
                    raise UserError(f"{utt.path or utt.id}: cannot pack ({err}); "
                                    f"fix or drop it from {manifest}") from None
            with atomic_path(path, ".wav") as tmp:
                sf.write(str(tmp), np.concatenate(pieces[:-1]), SAMPLE_RATE, subtype="PCM_16", format="WAV")
        seconds = sum(durations[i] for i in group) + gap_seconds * (len(group) - 1)
        speakers = sorted({u.speaker for u in members if u.speaker})
        packed.append(Utterance(id=f"packed-{n:05d}", audio=path, text=" ".join(u.text.strip() for u in members),
                                duration=seconds, speaker="+".join(speakers) or None))
    return write_manifest(out_dir / "manifest.jsonl", packed)
