"""Evaluate several models on several sets in one process: accuracy, speed, memory, per-utterance results.

Models are measured *interleaved*: batch 1 of model A, batch 1 of model B, ..., then batch 2 (the order is
reversed every other batch), so that a machine that slows down for a while slows all models alike and
their speed ratio stays fair. Outputs in ``out_dir``: ``metrics.json``, ``metrics.md``,
``utterances.jsonl`` and, when inputs were refused, ``skipped.jsonl``.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import importlib.metadata
import json
import logging
import os
import platform
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from whisperkd.data.audio import AudioSkip, DurationFilter, load_utterance
from whisperkd.data.skiplog import SkipLog
from whisperkd.data.sources import open_source
from whisperkd.errors import UserError
from whisperkd.evaluate import memory
from whisperkd.evaluate.engines import is_ct2_dir, model_label, open_model
from whisperkd.evaluate.speed import clock, speed_stats
from whisperkd.evaluate.tables import metrics_markdown
from whisperkd.models.decode import Fallback
from whisperkd.models.loading import resolve
from whisperkd.text import Errors, corpus_errors, errors, normalize

logger = logging.getLogger(__name__)

FORMAT = "whisperkd-metrics-v1"
UNLABELLED = "(unlabelled)"


@dataclass
class EvalSet:
    """The usable utterances of one data source, decoded to 16 kHz arrays."""

    label: str
    path: Path
    utterances: list = field(default_factory=list)
    audios: list = field(default_factory=list)
    skipped: int = 0

    @property
    def audio_seconds(self) -> float:
        return sum(len(a) for a in self.audios) / 16_000


def _unique(labels: list[str]) -> list[str]:
    seen: dict[str, int] = defaultdict(int)
    out = []
    for label in labels:
        seen[label] += 1
        out.append(label if seen[label] == 1 else f"{label}#{seen[label]}")
    return out


def _set_label(path: Path) -> str:
    path = Path(path).resolve()
    if path.is_file() and path.stem in ("manifest", "metadata"):
        return path.parent.name
    return path.stem if path.is_file() else path.name


def load_set(path: str | Path, limit: int | None, skiplog, label: str | None = None) -> EvalSet:
    """Read a data source (manifest, LibriSpeech tree, HF dataset folder) and decode its audio (at most 30 s
    per utterance; unusable inputs go to ``skiplog``). UserError when nothing usable is left."""
    source = open_source(path)
    if len(source) == 0:
        raise UserError(f"{path}: the data set is empty; give a manifest with at least one utterance")
    return decode_utterances(source, label or _set_label(Path(path)), Path(path), limit, skiplog)


def decode_utterances(utterances, label: str, path: Path, limit: int | None, skiplog) -> EvalSet:
    """Decode the first ``limit`` usable utterances (all when None) to 16 kHz arrays of at most 30 s."""
    ev = EvalSet(label, Path(path))
    for utt in utterances:
        if limit is not None and len(ev.utterances) >= limit:
            break
        try:
            audio = load_utterance(utt, DurationFilter(0.0, 30.0))
        except AudioSkip as skip:
            skiplog.add(label, utt.id, utt.path, skip.reason, skip.detail)
            ev.skipped += 1
            continue
        ev.utterances.append(utt)
        ev.audios.append(audio)
    if not ev.utterances:
        raise UserError(f"{path}: no usable utterance ({ev.skipped} skipped: unreadable, silent or over 30 s); "
                        f"see skipped.jsonl")
    return ev


def check_model(spec: str) -> None:
    """UserError now when ``spec`` names no loadable model (an offline name is fetched here)."""
    if not is_ct2_dir(Path(spec).expanduser()):
        resolve(spec)


def machine_info(device: str) -> dict:
    """Where the figures were measured."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info = {
        "platform": platform.platform(),
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "usable_cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "device": device,
    }
    for name in ("transformers", "ctranslate2", "jiwer"):
        try:
            info[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            info[name] = None
    if device.startswith("cuda"):
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def _timed(engine, audios: list, device: str) -> tuple[list[str], float]:
    start = clock(device)
    texts = engine.transcribe(audios)
    return texts, clock(device) - start


def _batches(n: int, size: int) -> list[range]:
    return [range(i, min(i + size, n)) for i in range(0, n, size)]


def measure_set(engines: dict, ev: EvalSet, batch_size: int, repeats: int, latency: bool, device: str) -> dict:
    """Transcribe ``ev`` with every engine, interleaved; returns per-label texts, timings and memory."""
    labels = list(engines)
    batches = _batches(len(ev.audios), batch_size)
    out = {label: {"texts": [None] * len(ev.audios), "pass_seconds": [], "batch_seconds": [None] * len(ev.audios),
                   "latency": [[] for _ in ev.audios], "memory": {}, "decoded": [None] * len(ev.audios)}
           for label in labels}
    first = [ev.audios[i] for i in batches[0]]
    for label in labels:  # warm-up (untimed): also where the working memory is measured
        with memory.PeakRSS() as rss, memory.PeakCuda(device) as gpu:
            engines[label].transcribe(first)
        out[label]["memory"] = {"rss_peak_extra_bytes": rss.extra, "rss_method": rss.method,
                                "cuda_peak_extra_bytes": gpu.extra}
    for r in range(repeats):
        logger.info(f"  {ev.label}: pass {r + 1}/{repeats} (batch size {batch_size}, {len(batches)} batches)")
        totals = dict.fromkeys(labels, 0.0)
        for b, idx in enumerate(batches):
            audios = [ev.audios[i] for i in idx]
            for label in (labels if (b + r) % 2 == 0 else labels[::-1]):
                texts, seconds = _timed(engines[label], audios, device)
                totals[label] += seconds
                decoded = getattr(engines[label], "last_decoded", None) or [None] * len(texts)
                for i, text, how in zip(idx, texts, decoded):
                    if r == 0:
                        out[label]["texts"][i] = text
                        out[label]["batch_seconds"][i] = seconds
                        out[label]["decoded"][i] = how
                    if batch_size == 1:
                        out[label]["latency"][i].append(seconds)
        for label in labels:
            out[label]["pass_seconds"].append(totals[label])
    if latency and batch_size > 1:
        for r in range(repeats):
            logger.info(f"  {ev.label}: latency pass {r + 1}/{repeats} (batch size 1)")
            for i, audio in enumerate(ev.audios):
                for label in (labels if (i + r) % 2 == 0 else labels[::-1]):
                    out[label]["latency"][i].append(_timed(engines[label], [audio], device)[1])
    return out


def fallback_summary(decoded: list) -> dict | None:
    """How many utterances the temperature fallback decoded again, left empty as no speech, or kept although
    even the last temperature failed; None without a fallback."""
    if not decoded or None in decoded:
        return None
    return {"redecoded": sum(d.decodes > 1 for d in decoded), "no_speech": sum(d.skipped for d in decoded),
            "failed_all": sum(not d.passed for d in decoded), "utterances": len(decoded)}


def _errors_dict(e: Errors) -> dict:
    return {k: v for k, v in e.as_dict().items() if k != "rate"}


def score(ev: EvalSet, texts: list[str]) -> tuple[dict, list[dict]]:
    """Corpus WER/CER (after Whisper's normaliser), per-speaker WER, and one record per utterance."""
    refs, hyps = [normalize(u.text) for u in ev.utterances], [normalize(h) for h in texts]
    by_speaker: dict[str, list[int]] = defaultdict(list)
    rows = []
    for i, (utt, audio, hyp) in enumerate(zip(ev.utterances, ev.audios, texts)):
        w, c = errors(refs[i], hyps[i], "word"), errors(refs[i], hyps[i], "char")
        by_speaker[utt.speaker or UNLABELLED].append(i)
        rows.append({"id": utt.id, "speaker": utt.speaker, "duration": round(len(audio) / 16_000, 3),
                     "reference": utt.text, "hypothesis": hyp, "reference_normalized": refs[i],
                     "hypothesis_normalized": hyps[i], "word_errors": _errors_dict(w), "char_errors": _errors_dict(c),
                     "wer": w.rate, "cer": c.rate})
    words, chars = corpus_errors(refs, hyps, "word"), corpus_errors(refs, hyps, "char")
    speakers = {s: corpus_errors([refs[i] for i in idx], [hyps[i] for i in idx]) for s, idx in by_speaker.items()}
    summary = {"wer": words.rate, "cer": chars.rate, "words": _errors_dict(words), "chars": _errors_dict(chars),
               "by_speaker": {s: {"n": len(by_speaker[s]), "wer": e.rate, "words": _errors_dict(e)}
                              for s, e in sorted(speakers.items())}}
    return summary, rows


def _ratio(a, b):
    return a / b if a is not None and b not in (None, 0) else None


def add_ratios(results: list[dict]) -> None:
    """Compare each model with the first one evaluated on the same set (the reference, usually the teacher)."""
    reference: dict[str, dict] = {}
    for res in results:
        ref = reference.setdefault(res["set"], res)
        rs, ms = ref["speed"], res["speed"]
        res["vs_reference"] = {
            "reference": ref["model"],
            "speedup": _ratio(rs["processing_seconds"], ms["processing_seconds"]),
            "latency_speedup": _ratio(rs["latency_p50_s"], ms["latency_p50_s"]),
            "wer_difference": res["wer"] - ref["wer"],
            "wer_ratio": _ratio(res["wer"], ref["wer"]),
        }


def evaluate_models(models: Sequence[str | tuple[str, Callable]], data: Sequence[str | Path], out_dir: str | Path,
                    batch_size: int = 8,
                    repeats: int = 3, limit: int | None = None, device: str | None = None,
                    dtype: torch.dtype | None = None, latency: bool = True, loop_guard: bool = False,
                    encoder_window: str | int | None = None, fallback: Fallback | None = None) -> dict:
    """Evaluate every model on every set; write metrics.json, metrics.md and utterances.jsonl in ``out_dir``.
    A model is a spec that :func:`~whisperkd.evaluate.engines.open_model` opens, or ``(label, open)``: ``open()``
    returns an engine of another kind (a benchmark's faster-whisper, speculative decoding) with the same
    attributes and ``transcribe(audios) -> texts``; the first model is the reference of the speed-ups.
    ``loop_guard``: cut repetition loops out of every transcript before scoring (whisperkd.evaluate.loops);
    ``encoder_window``: run HF models' encoders on a shorter window (whisperkd.models.window);
    ``fallback``: Whisper's temperature fallback for HF models (whisperkd.models.decode.Fallback).

    Returns the metrics dictionary written to ``metrics.json``; progress goes to this module's logger.
    """
    if not models:
        raise UserError("give at least one model")
    if not data:
        raise UserError("give at least one data set (--data)")
    if batch_size < 1:
        raise UserError(f"--batch-size must be at least 1, got {batch_size}")
    if repeats < 1:
        raise UserError(f"--repeats must be at least 1, got {repeats}")
    if limit is not None and limit < 1:
        raise UserError(f"--limit must be at least 1, got {limit}")
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"--device {device}: CUDA is not available here; use --device cpu")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    skiplog = SkipLog(out_dir, reset=True)
    started = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    machine = machine_info(device)

    for spec in models:  # fail fast, before any audio is decoded
        if isinstance(spec, str):
            check_model(spec)
    set_labels = _unique([_set_label(Path(p)) for p in data])
    sets = [load_set(p, limit, skiplog, label) for p, label in zip(data, set_labels)]
    labels = _unique([model_label(m) if isinstance(m, str) else m[0] for m in models])
    engines, model_rows = {}, []
    for spec, label in zip(models, labels):
        logger.info(f"loading {label} ...")
        memory.release_free_memory()
        rss0, gpu0 = memory.current_rss(), memory.cuda_allocated(device)
        if isinstance(spec, str):
            engine = open_model(spec, device=device, dtype=dtype, loop_guard=loop_guard,
                                encoder_window=encoder_window, fallback=fallback)
        else:
            engine, spec = spec[1](), label
        rss1, gpu1 = memory.current_rss(), memory.cuda_allocated(device)
        engines[label] = engine
        model_rows.append({
            "label": label, "model": spec, "engine": engine.kind,
            "path": None if engine.path is None else str(engine.path), "device": engine.device,
            "dtype": engine.dtype, "parameters": engine.parameters, "trainable_parameters": engine.trainable_parameters,
            "disk_bytes": engine.disk_bytes,
            "rss_load_bytes": None if None in (rss0, rss1) else max(0, rss1 - rss0),
            "cuda_load_bytes": None if None in (gpu0, gpu1) else max(0, gpu1 - gpu0),
        })

    results, all_rows = [], []
    for ev in sets:
        logger.info(f"{ev.label}: {len(ev.audios)} utterances, {ev.audio_seconds:.1f} s of audio"
            + (f" ({ev.skipped} skipped)" if ev.skipped else ""))
        measured = measure_set(engines, ev, batch_size, repeats, latency, device)
        for label in labels:
            m = measured[label]
            summary, rows = score(ev, m["texts"])
            lat = [float(np.median(t)) for t in m["latency"]] if all(m["latency"]) else None
            for row, lat_s, batch_s, how in zip(rows, lat or [None] * len(rows), m["batch_seconds"], m["decoded"]):
                how = {"decodes": how.decodes, "temperature": how.temperature} if how else {}
                all_rows.append({"model": label, "set": ev.label, **row, "seconds": lat_s, "batch_seconds": batch_s,
                                 **how})
            results.append({"model": label, "set": ev.label, "n": len(ev.audios), "skipped": ev.skipped, **summary,
                            "speed": speed_stats(m["pass_seconds"], ev.audio_seconds, len(ev.audios), batch_size, lat),
                            "memory": m["memory"], "fallback": fallback_summary(m["decoded"])})
    add_ratios(results)
    metrics = {
        "format": FORMAT,
        "created": started,
        "machine": machine,
        "settings": {"batch_size": batch_size, "repeats": repeats, "limit": limit, "latency": latency,
                     "loop_guard": loop_guard, "encoder_window": encoder_window,
                     "fallback": dataclasses.asdict(fallback) if fallback else None,
                     "device": device, "normalizer": "whisper EnglishTextNormalizer (english_spelling.json)",
                     "decoding": "greedy, English, no timestamps" + (", temperature fallback" if fallback else "")},
        "models": model_rows,
        "sets": [{"label": ev.label, "path": str(ev.path), "utterances": len(ev.audios), "skipped": ev.skipped,
                  "audio_seconds": ev.audio_seconds} for ev in sets],
        "results": results,
        "process_peak_rss_bytes": memory.process_peak_rss(),
    }
    write_outputs(metrics, all_rows, out_dir)
    if skiplog.count:
        logger.info(skiplog.summary())
    return metrics


def finite(obj):
    """``obj`` with inf/NaN floats (a rate over an empty reference) replaced by None: strict JSON."""
    if isinstance(obj, float):
        return obj if np.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [finite(v) for v in obj]
    return obj


def write_outputs(metrics: dict, rows: list[dict], out_dir: Path) -> None:
    """``metrics.json``, ``metrics.md`` and ``utterances.jsonl`` in ``out_dir``."""
    text = json.dumps(finite(metrics), indent=2, ensure_ascii=False, allow_nan=False)
    (out_dir / "metrics.json").write_text(text + "\n", encoding="utf-8")
    (out_dir / "metrics.md").write_text(metrics_markdown(metrics), encoding="utf-8")
    with open(out_dir / "utterances.jsonl", "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(finite(row), ensure_ascii=False, allow_nan=False) + "\n")


def read_metrics(path: str | Path) -> dict:
    """A ``metrics.json`` written by :func:`evaluate_models` (or a folder holding one)."""
    path = Path(path)
    if path.is_dir():
        path = path / "metrics.json"
    if not path.is_file():
        raise UserError(f"{path}: no metrics.json; run `whisperkd evaluate ... --out {path.parent}` first")
    try:
        metrics = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as err:
        raise UserError(f"{path}: not valid JSON ({err})") from None
    if not isinstance(metrics, dict) or metrics.get("format") != FORMAT:
        raise UserError(f"{path}: not a whisperkd metrics file (format {FORMAT!r} expected)")
    return metrics
