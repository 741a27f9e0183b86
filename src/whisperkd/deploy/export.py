"""``whisperkd export``: a student, HF Whisper directory or offline name as a verified, self-describing folder
in the Hugging Face or the CTranslate2 (faster-whisper) format.

The source is a run folder (its ``student_final/``: the merged student, LoRA folded in and the projector left
out by ``whisperkd distill``), an HF Whisper directory or an offline name (tiny.en, base). Everything is written
into a temporary folder next to ``--out`` and renamed to ``--out`` at the end (the folder is the atomic unit, its
files are written plainly): a failed or interrupted export leaves no half folder behind, and an existing
``--out``, replaced only with ``force``, stays as it was.

Every export is verified: the same clips (default: the six real recordings packaged in
``resources/real-speech``) are transcribed greedily with the source and with the export through
:func:`whisperkd.evaluate.engines.open_model`, each with its stored encoder window. For a lossless export
(hf float32, ct2 float32) the transcripts must be identical, character for character, on every clip, else the
export is not written (:class:`VerificationFailed`). For a quantised one (hf float16, ct2 int8 / int8_float32 /
float16) the WER of both against the clips' reference texts and their difference are reported. A CT2 export is
compared with the source's weights in float32 including the output layer (CTranslate2 quantises every layer by
``--quantization``; a student's int8 output layer is a choice of whisperkd's torch engine). The results go
into ``whisperkd_export.json`` and the model card (``README.md``, :mod:`whisperkd.deploy.model_card`).
"""

from __future__ import annotations

import datetime as _dt
import importlib.metadata
import json
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np

from whisperkd.data.audio import AudioSkip, DurationFilter, load_utterance
from whisperkd.data.sources import open_source
from whisperkd.deploy.export_ct2 import CT2_QUANTIZATIONS, HF_DTYPES, write_ct2, write_hf
from whisperkd.deploy.model_card import model_card
from whisperkd.errors import UserError
from whisperkd.evaluate.engines import CT2Whisper, open_model
from whisperkd.models.loading import resolve
from whisperkd.models.output_layer import CONFIG_KEY as OUTPUT_LAYER_KEY
from whisperkd.models.run_folder import CONFIG_FILE, STUDENT_DIR, has_student, run_folder
from whisperkd.models.window import CONFIG_KEY as WINDOW_KEY
from whisperkd.models.window import Window, resolve_window
from whisperkd.text import normalize, wer

logger = logging.getLogger(__name__)

FORMAT = "whisperkd-export-v1"
REPORT_FILE = "whisperkd_export.json"
CARD_FILE = "README.md"
QUANTIZATIONS = {"hf": tuple(HF_DTYPES), "ct2": CT2_QUANTIZATIONS}
DEFAULT_QUANTIZATION = {"hf": "float32", "ct2": "int8"}
LOSSLESS = {("hf", "float32"), ("ct2", "float32")}
RULE_LOSSLESS = "lossless: every clip's transcript identical to the source's, character for character"
RULE_QUANTISED = "quantised: WER of source and export against the clips' texts, and their difference, reported"
VERIFY_BATCH = 8


class VerificationFailed(Exception):
    """A lossless export whose transcripts differ from the source's (one line naming the clip)."""


def packaged_clips() -> Path:
    """The six real recordings shipped with whisperkd (``resources/real-speech``, with ``manifest.jsonl``)."""
    return Path(str(resources.files("whisperkd") / "resources" / "real-speech"))


@dataclass(frozen=True)
class ExportSource:
    """What is exported: ``hf_dir`` (a merged HF Whisper directory), the run folder it belongs to (or None), and
    ``kind``: "run", "hf" or "name"."""

    spec: str
    hf_dir: Path
    run: Path | None
    kind: str


def export_source(spec: str | Path) -> ExportSource:
    """The HF directory behind a run folder, HF directory or offline name; a one-line UserError otherwise (a
    missing folder, a run folder whose student is not finished, a CTranslate2 folder, a hub id)."""
    text = str(spec)
    path = Path(text).expanduser()
    if path.is_dir() and (path / CONFIG_FILE).is_file() and not has_student(path):
        raise UserError(f"{path}: a run folder without a finished student (no {STUDENT_DIR}/config.json); finish it "
                        f"with `whisperkd distill --resume {path}`")
    hf_dir = resolve(text)
    if not isinstance(hf_dir, Path):
        raise UserError(f"{text}: no such run folder or model directory; pass a run folder, an HF Whisper directory "
                        f"or an offline name (tiny.en, base)")
    run = run_folder(path) if path.is_dir() else None
    return ExportSource(text, Path(hf_dir), run, "run" if run else "hf" if path.is_dir() else "name")


def check_out(out: Path, force: bool, source: ExportSource) -> None:
    """Refuse an ``--out`` that is a file, is a non-empty folder (without ``force``) or holds the source."""
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out}: exists and is not a folder; choose another --out")
    if out.is_dir() and any(out.iterdir()) and not force:
        raise UserError(f"--out {out}: exists and is not empty; pass --force to replace it, or choose another --out")
    target = out.resolve()
    for held in (source.hf_dir, source.run):
        if held is not None and (target == held.resolve() or target in held.resolve().parents):
            raise UserError(f"--out {out}: holds the source model {held}; choose another --out")


@dataclass
class Clips:
    """The verification clips: where they come from, their utterances and 16 kHz audio."""

    path: Path
    utterances: list
    audios: list


def load_clips(path: str | Path) -> Clips:
    """Every utterance of a data source (manifest, folder with manifest.jsonl, ...) as audio of at most 30 s."""
    source = open_source(Path(path).expanduser())
    if not len(source):
        raise UserError(f"--verify-clips {path}: no utterances; pass a folder with manifest.jsonl, or none")
    audios = []
    for utt in source:
        try:
            audios.append(load_utterance(utt, DurationFilter(0.0, 30.0)))
        except AudioSkip as skip:
            raise UserError(f"--verify-clips {path}: clip {utt.id} is unusable ({skip}); fix or remove it") from None
    return Clips(Path(path), list(source), audios)


def transcribe_all(spec: str | Path, audios: list[np.ndarray]) -> tuple[list[str], Window]:
    """Greedy transcripts of ``audios`` by the model at ``spec`` (engines.open_model, its stored window), in
    batches of VERIFY_BATCH; returns them and the window used."""
    engine = open_model(str(spec))
    texts = []
    for start in range(0, len(audios), VERIFY_BATCH):
        texts += engine.transcribe(audios[start:start + VERIFY_BATCH])
    window = engine.window if isinstance(engine, CT2Whisper) else resolve_window(engine.model, engine.encoder_window)
    return texts, window


def verify(reference: Path, export: Path, lossless: bool, clips: Clips) -> dict:
    """Transcribe ``clips`` with the reference (HF) and the export; compare as the export's rule says."""
    logger.info(f"verifying on {len(clips.audios)} clips of {clips.path} ...")
    source_texts, source_window = transcribe_all(reference, clips.audios)
    export_texts, export_window = transcribe_all(export, clips.audios)
    refs = [normalize(u.text) for u in clips.utterances]
    source_wer = wer(refs, [normalize(t) for t in source_texts])
    export_wer = wer(refs, [normalize(t) for t in export_texts])
    rows = [{"id": u.id, "reference": u.text, "source": s, "export": e, "identical": s == e}
            for u, s, e in zip(clips.utterances, source_texts, export_texts)]
    identical = sum(r["identical"] for r in rows)
    return {"clips": str(clips.path), "utterances": len(rows), "lossless": lossless,
            "rule": RULE_LOSSLESS if lossless else RULE_QUANTISED,
            "source_window": source_window.describe(), "export_window": export_window.describe(),
            "identical": identical, "passed": identical == len(rows) or not lossless,
            "source_wer": source_wer, "export_wer": export_wer, "wer_difference": export_wer - source_wer,
            "per_clip": rows}


def _failure(verification: dict, out: Path) -> VerificationFailed:
    first = next(r for r in verification["per_clip"] if not r["identical"])
    return VerificationFailed(
        f"verification failed, {out} not written: clip {first['id']} of {verification['clips']}: the source says "
        f"{first['source']!r}, the export {first['export']!r} ({verification['identical']}/"
        f"{verification['utterances']} clips identical)")


def _files(folder: Path) -> dict[str, int]:
    return {p.name: p.stat().st_size for p in sorted(folder.iterdir()) if p.is_file()}


def _version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def _versions() -> dict:
    return {name: _version(name) for name in ("whisperkd", "transformers", "ctranslate2", "torch")}


def model_facts(model) -> dict:
    """Architecture and stored choices of a (saved) WhisperForConditionalGeneration, for the report and card."""
    config = model.config
    return {"encoder_layers": config.encoder_layers, "decoder_layers": config.decoder_layers,
            "d_model": config.d_model, "vocab_size": config.vocab_size,
            "multilingual": config.vocab_size >= 51865,
            "parameters": sum(p.numel() for p in model.parameters()),
            "window": getattr(config, WINDOW_KEY, None), "output_layer": getattr(config, OUTPUT_LAYER_KEY, "float32")}


def _install(stage: Path, out: Path, scratch: Path) -> None:
    """Move the finished ``stage`` to ``out``; an existing ``out`` is moved into ``scratch`` first (deleted later)."""
    if out.exists():
        os.rename(out, scratch / "replaced")
    os.rename(stage, out)


def export_model(source: str | Path, fmt: str, out: str | Path, quantization: str | None = None,
                 verify_clips: str | Path | None = None, verify_export: bool = True, force: bool = False) -> dict:
    """Export ``source`` to ``out`` in ``fmt`` ("hf" or "ct2") with weights in ``quantization`` (default float32
    for hf, int8 for ct2), verified on ``verify_clips`` (default: :func:`packaged_clips`) unless
    ``verify_export`` is False. Returns the report written to ``out/whisperkd_export.json``.

    Raises UserError for bad input and :class:`VerificationFailed` when a lossless export differs from its
    source on a clip (nothing is written then)."""
    if fmt not in QUANTIZATIONS:
        raise UserError(f"--format {fmt}: use hf or ct2")
    quantization = quantization or DEFAULT_QUANTIZATION[fmt]
    if quantization not in QUANTIZATIONS[fmt]:
        raise UserError(f"--quantization {quantization}: the {fmt} format takes {', '.join(QUANTIZATIONS[fmt])}")
    src = export_source(source)
    out = Path(out).expanduser()
    check_out(out, force, src)
    clips = load_clips(verify_clips or packaged_clips()) if verify_export else None
    out.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.export-"))
    try:
        stage = scratch / "export"
        logger.info(f"exporting {src.hf_dir} ({fmt} {quantization}) ...")
        if fmt == "hf":
            model, reference = write_hf(src.hf_dir, stage, quantization), src.hf_dir
        else:
            # The converter reads the merged student as an HF directory in float32 (its output layer too): that
            # folder is also the reference the CTranslate2 model is verified against.
            reference = scratch / "hf-float32"
            model = write_hf(src.hf_dir, reference, "float32", output_layer="float32")
            write_ct2(reference, stage, quantization, getattr(model.config, WINDOW_KEY, None))
        facts = model_facts(model)
        if fmt == "ct2":
            facts["output_layer"] = quantization  # CTranslate2 quantises every layer, the output layer too
        del model
        lossless = (fmt, quantization) in LOSSLESS
        verification = verify(reference, stage, lossless, clips) if clips is not None else None
        if verification is not None and not verification["passed"]:
            raise _failure(verification, out)
        report = {
            "format": FORMAT,
            "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "source": {"spec": src.spec, "kind": src.kind, "hf_dir": str(src.hf_dir),
                       "run": None if src.run is None else str(src.run)},
            "export": {"format": fmt, "quantization": quantization, "files": _files(stage)},
            "model": facts,
            "verification": verification,
            "versions": _versions(),
        }
        (stage / REPORT_FILE).write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        (stage / CARD_FILE).write_text(model_card(report, src.run), encoding="utf-8")
        _install(stage, out, scratch)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return report
