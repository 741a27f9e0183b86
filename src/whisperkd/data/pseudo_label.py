"""Pseudo-labelling: the teacher transcribes the training audio, and its transcripts become the labels.

distil-whisper trains on the teacher's own transcripts and drops utterances where they disagree with the
ground truth by more than a WER threshold (normalised with Whisper's English normaliser): the student then
learns what the teacher would say, and hallucinated transcripts are filtered out.

A labelled manifest is a normal manifest whose ``text`` is the pseudo-label; the ground truth, when there was
one, is kept in ``text_original`` with the utterance's ``wer``. :func:`read_labelled` chooses which text
training uses: ``text`` (the pseudo-labels), ``original`` or ``both`` (each utterance twice when they differ).
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import soundfile as sf
from tqdm import tqdm

from whisperkd.data.atomic import atomic_path, atomic_write_text
from whisperkd.data.audio import SAMPLE_RATE, AudioSkip, DurationFilter, load_utterance
from whisperkd.data.loader import utterance_lengths
from whisperkd.data.manifest import read_manifest
from whisperkd.data.skiplog import SkipLog
from whisperkd.data.utterance import Utterance
from whisperkd.errors import UserError
from whisperkd.models.decode import transcribe_arrays
from whisperkd.text import Errors, corpus_errors, errors, normalize

LABEL_CHOICES = ("text", "original", "both")
ORIGINAL_SUFFIX = "#original"


@dataclass
class LabelReport:
    """Counts of a labelling run. ``wer``: the teacher's corpus WER (:func:`whisperkd.text.corpus_errors`) over all
    transcribed utterances with ground truth, before filtering."""

    total: int = 0
    kept: int = 0
    dropped_wer: int = 0
    dropped_empty: int = 0
    skipped_audio: int = 0
    with_ground_truth: int = 0
    word_errors: Errors = field(default_factory=Errors)
    seconds: float = 0.0
    audio_seconds: float = 0.0
    max_wer: float | None = None
    out: Path | None = None
    rows: list[dict] = field(default_factory=list, repr=False)

    @property
    def wer(self) -> float | None:
        return self.word_errors.rate if self.word_errors.reference else None

    def summary(self) -> str:
        wer = f"; teacher WER on the ground truth {100 * self.wer:.2f}%" if self.wer is not None else \
            "; no ground truth (nothing filtered by WER)"
        threshold = f" (WER > {self.max_wer:g})" if self.max_wer is not None else ""
        rtf = f", RTF {self.seconds / self.audio_seconds:.3f}" if self.audio_seconds else ""
        where = f"{self.out}: " if self.out else ""
        return (f"{where}{self.kept} of {self.total} utterances kept; {self.dropped_wer} dropped{threshold}, "
                f"{self.dropped_empty} with an empty transcript, {self.skipped_audio} unusable audio{wer}; "
                f"{self.seconds:.1f} s{rtf}")


def _safe_name(uid: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]", "_", uid)[:120]


def _audio_file(utt: Utterance, audio: np.ndarray, audio_dir: Path | None) -> Path:
    """The utterance's audio file; in-memory audio (HF datasets) and segments of longer recordings (Kaldi) are
    written as 16 kHz FLAC under ``audio_dir``."""
    if utt.path is not None and not utt.is_segment:
        return utt.path
    if audio_dir is None:
        raise UserError(f"utterance {utt.id!r}: its audio is not a file of its own; "
                        f"give an output folder for the audio")
    # A segment's file name carries its bounds, so a changed segment is cut again instead of reused.
    bounds = f"_{utt.start or 0:.3f}-{'end' if utt.end is None else f'{utt.end:.3f}'}" if utt.is_segment else ""
    path = audio_dir / f"{_safe_name(utt.id)}{bounds}.flac"
    if not path.is_file():
        with atomic_path(path, suffix=".flac") as tmp:
            sf.write(str(tmp), audio, SAMPLE_RATE, format="FLAC")
    return path


def pseudo_label(model, processor, utterances: Sequence[Utterance], batch_size: int = 8,
                 max_wer: float | None = None, durations: DurationFilter | None = DurationFilter(0.0, 30.0),
                 skiplog: SkipLog | None = None, audio_dir: Path | None = None, progress: bool = True,
                 model_name: str = "", window: str | int | None = None) -> LabelReport:
    """Transcribe ``utterances`` with ``model`` (greedy, batched, English) and filter by WER.

    Returns a report whose ``rows`` are the kept manifest rows (in input order): ``text`` = the transcript,
    ``text_original`` and ``wer`` when the utterance had a ground-truth text. An utterance is dropped when its
    normalised WER exceeds ``max_wer`` (None: never) or its transcript is empty. ``window``: the encoder window
    (:mod:`whisperkd.models.window`; None = 30 s, "auto" = per batch).
    """

    if batch_size < 1:
        raise UserError("--batch-size must be at least 1")
    if max_wer is not None and max_wer < 0:
        raise UserError(f"--max-wer: got {max_wer}; use a fraction such as 0.1 (10%)")
    skiplog = skiplog if skiplog is not None else SkipLog()
    report = LabelReport(total=len(utterances), max_wer=max_wer)
    order = np.argsort(utterance_lengths(utterances), kind="stable")  # similar lengths batch together
    results: dict[int, dict] = {}
    start = time.perf_counter()
    with tqdm(total=len(utterances), unit="utt", desc="pseudo-labelling", disable=not progress) as bar:
        for begin in range(0, len(order), batch_size):
            chunk, audios = [], []
            for i in order[begin:begin + batch_size]:
                utt = utterances[int(i)]
                try:
                    audio = load_utterance(utt, durations)
                except AudioSkip as skip:
                    skiplog.add("label", utt.id, utt.path, skip.reason, skip.detail)
                    report.skipped_audio += 1
                    continue
                chunk.append(int(i))
                audios.append(audio)
            if audios:
                texts = transcribe_arrays(model, processor, audios, batch_size=len(audios), window=window)
                for i, audio, text in zip(chunk, audios, texts):
                    results[i] = {"text": text, "audio": audio}
                    report.audio_seconds += len(audio) / SAMPLE_RATE
            bar.update(len(order[begin:begin + batch_size]))
    report.seconds = time.perf_counter() - start
    for i, utt in enumerate(utterances):
        if i not in results:
            continue
        text, audio = results[i]["text"].strip(), results[i]["audio"]
        row = {"id": utt.id, "audio": str(Path(_audio_file(utt, audio, audio_dir)).absolute()), "text": text,
               "duration": round(utt.duration if utt.duration is not None else len(audio) / SAMPLE_RATE, 3)}
        if utt.speaker is not None:
            row["speaker"] = utt.speaker
        truth = utt.text.strip()
        if truth:
            pair = [normalize(truth)], [normalize(text)]
            wer = errors(pair[0][0], pair[1][0]).rate
            report.with_ground_truth += 1
            report.word_errors = report.word_errors + corpus_errors(*pair)
            row["text_original"], row["wer"] = truth, round(wer, 4) if pair[0][0].split() else None
        if model_name:
            row["label_model"] = model_name
        if not normalize(text).strip():
            skiplog.add("label", utt.id, utt.path, "empty_transcript", "the model transcribed nothing")
            report.dropped_empty += 1
            continue
        if truth and max_wer is not None and not wer <= max_wer:
            skiplog.add("label", utt.id, utt.path, "wer_above_threshold", f"WER {wer:.3f} > {max_wer:g}: {text!r}")
            report.dropped_wer += 1
            continue
        report.rows.append(row)
    report.kept = len(report.rows)
    return report


def write_labelled_manifest(path: str | Path, rows: Sequence[dict]) -> Path:
    """Write rows as JSONL atomically; audio below the manifest's folder is written relative to it, other audio
    with its absolute path."""
    path = Path(path)
    base = path.parent.resolve()
    lines = []
    for row in rows:
        row = dict(row)
        audio = Path(row["audio"])
        try:
            relative = os.path.relpath(audio, base)
        except ValueError:  # another drive on Windows
            relative = ".."
        row["audio"] = str(audio) if relative.startswith("..") else relative.replace(os.sep, "/")
        lines.append(json.dumps(row, ensure_ascii=False) + "\n")
    return atomic_write_text(path, "".join(lines))


def read_labelled(path: str | Path, labels: str = "text") -> list[Utterance]:
    """Utterances of a (pseudo-)labelled JSONL manifest with the chosen training text.

    ``text``: the ``text`` field (the pseudo-label); ``original``: ``text_original`` where present, else ``text``;
    ``both``: the pseudo-labelled utterance, plus a copy with id ``<id>#original`` and the original text when the
    two differ after normalisation. Any manifest works (without ``text_original`` all three give ``text``).
    """
    if labels not in LABEL_CHOICES:
        raise UserError(f"labels: got {labels!r}; use one of {', '.join(LABEL_CHOICES)}")
    path = Path(path)
    utterances = read_manifest(path)
    if labels == "text":
        return utterances
    originals: list[str | None] = []
    if path.suffix.lower() in (".jsonl", ".json"):
        with open(path, encoding="utf-8") as f:
            originals = [json.loads(line).get("text_original") for line in f if line.strip()]
    else:
        originals = [None] * len(utterances)
    out = []
    for utt, original in zip(utterances, originals):
        if labels == "original":
            out.append(Utterance(utt.id, utt.audio, original if original else utt.text, utt.duration, utt.speaker))
            continue
        out.append(utt)
        if original and normalize(original) != normalize(utt.text):
            out.append(Utterance(utt.id + ORIGINAL_SUFFIX, utt.audio, original, utt.duration, utt.speaker))
    return out
