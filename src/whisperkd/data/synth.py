"""Build a synthetic speech corpus offline: sentences x voices -> LibriSpeech layout + manifest.jsonl.

Deterministic for a seed, resumable (an utterance's file name is derived from its voice and text, and
existing files are kept), parallel over ``jobs`` processes. See docs/data.md.
"""

from __future__ import annotations

import hashlib
import multiprocessing
import random
import tempfile
from collections import defaultdict
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path

import soundfile as sf
from tqdm import tqdm

from whisperkd.data.atomic import atomic_path, atomic_write_text
from whisperkd.data.audio import SAMPLE_RATE, AudioSkip, DurationFilter, load_audio
from whisperkd.data.manifest import write_manifest
from whisperkd.data.skiplog import SkipLog
from whisperkd.data.splits import split_sentences
from whisperkd.data.tts import check_engine, synthesize
from whisperkd.data.utterance import Utterance
from whisperkd.data.voices import Voice, parse_voice, split_voices
from whisperkd.errors import UserError

__all__ = ["PlannedUtterance", "plan_corpus", "synthesize_corpus", "split_sentences", "split_voices"]

CHAPTER = "0"
WORDS_PER_SECOND = 2.6  # rough speaking rate, only to turn --hours into a number of sentences
CHUNK = {"festival": 40, "piper": 20, "espeak": 20, "flite": 20}


@dataclass(frozen=True)
class PlannedUtterance:
    """One utterance to synthesise: ``audio`` is relative to the corpus folder."""

    id: str
    text: str
    voice: Voice

    @property
    def speaker(self) -> str:
        return self.voice.speaker

    @property
    def audio(self) -> str:
        return f"{self.speaker}/{CHAPTER}/{self.id}.flac"


def _utterance_id(voice: Voice, text: str) -> str:
    return f"{voice.speaker}-{CHAPTER}-{hashlib.sha1(text.encode('utf-8')).hexdigest()[:10]}"


def _estimated_seconds(text: str) -> float:
    return len(text.split()) / WORDS_PER_SECOND + 0.6


def plan_corpus(sentences: Sequence[str], voices: Sequence[Voice | str], seed: int = 0,
                utterances: int | None = None, hours: float | None = None) -> list[PlannedUtterance]:
    """Which sentence each voice speaks, deterministic for ``seed``.

    Sentences are taken in a seeded order (repeating when more utterances than sentences are asked);
    utterance ``i`` goes to engine ``i mod E`` and, within it, to the engine's voices in a seeded cycle.
    A longer plan with the same arguments starts with the shorter one, so corpora grow by resuming.
    """
    voices = [v if isinstance(v, Voice) else parse_voice(v) for v in voices]
    sentences = [s.strip() for s in sentences if s.strip()]
    if not voices:
        raise UserError("no voices to synthesise with")
    if not sentences:
        raise UserError("no sentences to synthesise")
    if (utterances is None) == (hours is None):
        raise UserError("give exactly one of --utterances N or --hours H")
    by_engine: dict[str, list[Voice]] = defaultdict(list)
    for voice in voices:
        by_engine[voice.engine].append(voice)
    engines = list(by_engine)
    for engine in engines:
        random.Random(f"assign-{engine}-{seed}").shuffle(by_engine[engine])
    rng = random.Random(f"sentences-{seed}")
    order: list[str] = []
    plan, seen, total_s = [], set(), 0.0
    i = 0
    limit = utterances if utterances is not None else float("inf")
    max_steps = 10 * (utterances or int(hours * 3600 / 2) + 1) + len(sentences)
    while len(plan) < limit and (hours is None or total_s < hours * 3600) and i < max_steps:
        if not order:
            order = list(sentences)
            rng.shuffle(order)
            order.reverse()
        text = order.pop()
        engine = engines[i % len(engines)]
        pool = by_engine[engine]
        voice = pool[(i // len(engines)) % len(pool)]
        i += 1
        item = PlannedUtterance(_utterance_id(voice, text), text, voice)
        if item.id in seen:
            continue
        seen.add(item.id)
        plan.append(item)
        total_s += _estimated_seconds(text)
    return plan


def _synth_chunk(voice_id: str, items: list[tuple[str, str]], durations: DurationFilter) -> list[tuple]:
    """Worker: speak ``items`` (text, flac path) with one voice; returns (path, seconds, reason, detail)."""
    voice = parse_voice(voice_id)
    out = []
    with tempfile.TemporaryDirectory(prefix="whisperkd-tts-") as work:
        results = synthesize(voice, [text for text, _ in items], Path(work))
    for (text, path), result in zip(items, results):
        if isinstance(result, str):
            out.append((path, None, "synthesis_failed", result))
            continue
        try:
            audio = load_audio(result[0], sample_rate=result[1], durations=durations)
        except AudioSkip as skip:
            out.append((path, None, skip.reason, skip.detail))
            continue
        with atomic_path(path, suffix=".flac") as tmp:
            sf.write(str(tmp), audio, SAMPLE_RATE, format="FLAC", subtype="PCM_16")
        out.append((path, len(audio) / SAMPLE_RATE, None, ""))
    return out


def _chunks(todo: list[PlannedUtterance], out: Path) -> list[tuple[str, list[tuple[str, str]]]]:
    by_voice: dict[Voice, list[PlannedUtterance]] = defaultdict(list)
    for item in todo:
        by_voice[item.voice].append(item)
    tasks = []
    for voice, items in by_voice.items():
        size = CHUNK[voice.engine]
        for start in range(0, len(items), size):
            tasks.append((voice.id, [(u.text, str(out / u.audio)) for u in items[start:start + size]]))
    return tasks


def _write_transcripts(out: Path, done: list[PlannedUtterance]) -> None:
    by_folder: dict[str, list[PlannedUtterance]] = defaultdict(list)
    for item in done:
        by_folder[item.speaker].append(item)
    for speaker, items in by_folder.items():
        lines = "".join(f"{u.id} {u.text}\n" for u in sorted(items, key=lambda u: u.id))
        atomic_write_text(out / speaker / CHAPTER / f"{speaker}-{CHAPTER}.trans.txt", lines)


def synthesize_corpus(out: str | Path, sentences: Sequence[str], voices: Sequence[Voice | str], seed: int = 0,
                      utterances: int | None = None, hours: float | None = None, jobs: int = 2,
                      progress: bool = True, durations: DurationFilter = DurationFilter(0.5, 30.0)) -> list[Utterance]:
    """Synthesise the plan of :func:`plan_corpus` into ``out`` (LibriSpeech layout, 16 kHz mono FLAC) and
    write ``out/manifest.jsonl``; failures go to ``out/skipped.jsonl``. Returns the utterances written."""
    out = Path(out).absolute()
    plan = plan_corpus(sentences, voices, seed, utterances, hours)
    for engine in dict.fromkeys(u.voice.engine for u in plan):
        check_engine(engine, {u.voice.name for u in plan if u.voice.engine == engine})
    out.mkdir(parents=True, exist_ok=True)
    skiplog = SkipLog(out, reset=True)
    todo = [u for u in plan if not (out / u.audio).is_file()]
    tasks = _chunks(todo, out)
    seconds: dict[str, float] = {}
    with tqdm(total=len(todo), unit="utt", desc="synthesising", disable=not progress) as bar:
        def collect(results, voice_id):
            for path, secs, reason, detail in results:
                if reason is None:
                    seconds[path] = secs
                else:
                    skiplog.add(voice_id, Path(path).stem, path, reason, detail)
            bar.update(len(results))

        if jobs <= 1:
            for voice_id, items in tasks:
                collect(_synth_chunk(voice_id, items, durations), voice_id)
        else:
            context = multiprocessing.get_context("spawn")
            with ProcessPoolExecutor(max_workers=jobs, mp_context=context) as pool:
                futures = {pool.submit(_synth_chunk, v, items, durations): v for v, items in tasks}
                for future in as_completed(futures):
                    collect(future.result(), futures[future])
    done = []
    for item in plan:
        path = out / item.audio
        if not path.is_file():
            continue
        secs = seconds.get(str(path))
        if secs is None:
            secs = sf.info(str(path)).duration
        done.append(Utterance(id=item.id, audio=path, text=item.text, duration=round(secs, 3), speaker=item.speaker))
    _write_transcripts(out, [u for u in plan if (out / u.audio).is_file()])
    write_manifest(out / "manifest.jsonl", done)
    return done
