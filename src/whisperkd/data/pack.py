"""Pack several short utterances into one Whisper window: concatenated audio, concatenated transcripts.

Whisper's encoder always runs on a 30-s window, so a 4-s utterance pays for 26 s of padding. Packing
``k`` utterances into one window divides the teacher's encoder cost per sentence (the teacher cache's
main cost) by about ``k``; the decoder then learns the concatenated transcript.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import soundfile as sf

from whisperkd.data.atomic import atomic_path
from whisperkd.data.audio import SAMPLE_RATE, AudioSkip, load_audio
from whisperkd.data.manifest import read_manifest, write_manifest
from whisperkd.data.utterance import Utterance
from whisperkd.errors import UserError


def plan_packs(durations: Sequence[float], max_seconds: float, gap_seconds: float, seed: int = 0) -> list[list[int]]:
    """Groups of indices (a seeded shuffle, then greedy filling) whose durations plus the gaps between
    them fit in ``max_seconds``; an utterance longer than that is a group of its own."""
    if max_seconds <= 0 or gap_seconds < 0:
        raise UserError(f"packing: max_seconds must be > 0 and gap_seconds >= 0 (got {max_seconds}, {gap_seconds})")
    order = list(range(len(durations)))
    random.Random(seed).shuffle(order)
    groups: list[list[int]] = []
    current: list[int] = []
    length = 0.0
    for i in order:
        extra = durations[i] + (gap_seconds if current else 0.0)
        if current and length + extra > max_seconds:
            groups.append(current)
            current, length = [], 0.0
            extra = durations[i]
        current.append(i)
        length += extra
    if current:
        groups.append(current)
    return groups


def pack_manifest(manifest: str | Path, out_dir: str | Path, max_seconds: float = 28.0, gap_seconds: float = 0.4,
                  seed: int = 0) -> Path:
    """Write packed windows (``packed-NNNNN.wav``) and their ``manifest.jsonl`` into ``out_dir``; returns the
    manifest. Reruns reuse the windows already written. Unreadable inputs raise UserError naming the file."""
    utterances = read_manifest(manifest)
    if not utterances:
        raise UserError(f"{manifest}: no utterances to pack")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    durations = []
    for utt in utterances:
        if utt.duration is None:
            utt.duration = sf.info(str(utt.audio)).duration
        durations.append(float(utt.duration))
    gap = np.zeros(int(round(gap_seconds * SAMPLE_RATE)), dtype=np.float32)
    packed = []
    for n, group in enumerate(plan_packs(durations, max_seconds, gap_seconds, seed)):
        members = [utterances[i] for i in group]
        path = out_dir / f"packed-{n:05d}.wav"
        if not path.is_file():
            pieces = []
            for utt in members:
                try:
                    pieces += [load_audio(utt.audio), gap]
                except AudioSkip as err:
                    raise UserError(f"{utt.audio}: cannot pack ({err}); fix or drop it from {manifest}") from None
            with atomic_path(path, ".wav") as tmp:
                sf.write(str(tmp), np.concatenate(pieces[:-1]), SAMPLE_RATE, subtype="PCM_16", format="WAV")
        seconds = sum(durations[i] for i in group) + gap_seconds * (len(group) - 1)
        speakers = sorted({u.speaker for u in members if u.speaker})
        packed.append(Utterance(id=f"packed-{n:05d}", audio=path, text=" ".join(u.text.strip() for u in members),
                                duration=seconds, speaker="+".join(speakers) or None))
    return write_manifest(out_dir / "manifest.jsonl", packed)
