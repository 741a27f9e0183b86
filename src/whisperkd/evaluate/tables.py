"""Markdown tables of a metrics dictionary (``metrics.md`` and the evaluation part of ``report.md``)."""

from __future__ import annotations


def _num(value, fmt: str, scale: float = 1.0, none: str = "–") -> str:
    if value is None:
        return none
    return format(value * scale, fmt)


def _mb(value) -> str:
    return _num(value, ".0f", 1 / 2**20)


def _millions(value) -> str:
    return _num(value, ".2f", 1e-6)


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def results_table(metrics: dict, set_label: str) -> str:
    """One row per model on one set: accuracy, speed and the comparison with the first model."""
    results = [r for r in metrics["results"] if r["set"] == set_label]
    ref = results[0]["vs_reference"]["reference"] if results and "vs_reference" in results[0] else None
    header = ["model", "WER %", "CER %", "S / D / I (words)", "RTF", "× real time", "latency p50 / p95 s",
              "utt/s", f"speed-up vs {ref}", f"ΔWER vs {ref} (points)"]
    rows = []
    for r in results:
        s, w, v = r["speed"], r["words"], r.get("vs_reference", {})
        rows.append([
            r["model"], _num(r["wer"], ".2f", 100), _num(r["cer"], ".2f", 100),
            f"{w['substitutions']} / {w['deletions']} / {w['insertions']}",
            _num(s["rtf"], ".3f"), _num(s["inverse_rtf"], ".1f"),
            f"{_num(s['latency_p50_s'], '.3f')} / {_num(s['latency_p95_s'], '.3f')}",
            _num(s["throughput_utterances_per_s"], ".2f"),
            _num(v.get("speedup"), ".2f") + "×" if v.get("speedup") is not None else "–",
            _num(v.get("wer_difference"), "+.2f", 100),
        ])
    return _table(header, rows)


def models_table(metrics: dict) -> str:
    """Size and memory of each model (working memory: the largest over the sets)."""
    header = ["model", "engine", "device / dtype", "parameters M", "trainable M", "disk MB", "load RSS MB",
              "working RSS MB", "CUDA load / working MB"]
    rows = []
    for m in metrics["models"]:
        mine = [r["memory"] for r in metrics["results"] if r["model"] == m["label"]]
        work = max((x["rss_peak_extra_bytes"] for x in mine if x.get("rss_peak_extra_bytes") is not None), default=None)
        cuda = max((x["cuda_peak_extra_bytes"] for x in mine if x.get("cuda_peak_extra_bytes") is not None), default=None)
        rows.append([m["label"], m["engine"], f"{m['device']} / {m['dtype']}", _millions(m["parameters"]),
                     _millions(m["trainable_parameters"]), _mb(m["disk_bytes"]), _mb(m["rss_load_bytes"]),
                     _mb(work), f"{_mb(m['cuda_load_bytes'])} / {_mb(cuda)}"])
    return _table(header, rows)


def overall_speed(metrics: dict) -> dict[str, tuple[float, float | None]]:
    """Per model label, speed over all sets together: ``(rtf, latency)``: total processing seconds of the batched
    passes over total audio, and the per-set latency p50 at batch 1 weighted by the sets' utterances (None when
    latency was not measured)."""
    sets = metrics["sets"]
    audio, utterances = sum(s["audio_seconds"] for s in sets), sum(s["utterances"] for s in sets)
    out = {}
    for m in metrics["models"]:
        res = {r["set"]: r["speed"] for r in metrics["results"] if r["model"] == m["label"]}
        rtf = sum(res[s["label"]]["rtf"] * s["audio_seconds"] for s in sets) / audio
        lat = [res[s["label"]].get("latency_p50_s") for s in sets]
        out[m["label"]] = (rtf, None if None in lat else sum(x * s["utterances"] for x, s in zip(lat, sets)) / utterances)
    return out


def metrics_markdown(metrics: dict, title: str = "Evaluation", level: int = 1) -> str:
    """The whole of ``metrics.md``."""
    h = "#" * level
    s, mach = metrics["settings"], metrics["machine"]
    parts = [f"{h} {title}\n",
             f"Measured {metrics['created']} on {mach['cpu']} ({mach['usable_cpus']} usable CPUs, "
             f"{mach['torch_threads']} torch threads, device {mach['device']}"
             + (f", {mach['gpu']}" if mach.get("gpu") else "") + f"); torch {mach['torch']}, "
             f"transformers {mach['transformers']}, ctranslate2 {mach['ctranslate2']}.\n",
             f"Greedy English decoding; WER/CER after Whisper's English normaliser. Speed: median of "
             f"{s['repeats']} timed passes at batch size {s['batch_size']} after a warm-up batch; RTF = processing "
             f"time / audio time; latency at batch size 1. Process peak RSS "
             f"{_mb(metrics.get('process_peak_rss_bytes'))} MB.\n"]
    for entry in metrics["sets"]:
        skipped = f", {entry['skipped']} skipped" if entry["skipped"] else ""
        parts.append(f"{h}# {entry['label']} ({entry['utterances']} utterances, "
                     f"{entry['audio_seconds']:.1f} s of audio{skipped})\n")
        parts.append(results_table(metrics, entry["label"]))
    parts.append(f"{h}# Models\n")
    parts.append(models_table(metrics))
    return "\n".join(parts)
