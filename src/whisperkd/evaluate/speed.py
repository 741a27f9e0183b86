"""Speed figures from wall-clock timings: RTF, its inverse, latency percentiles, throughput.

Conventions (docs/evaluation.md): a *pass* transcribes a whole set once; the processing time of a set is
the **median over repeated passes** of the summed batch times (feature extraction + decoding, audio
already in memory); warm-up calls are never timed. Latency is measured at batch size 1: per utterance
the median over repeats, then p50/p95 over utterances.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Sequence

import numpy as np
import torch


def clock(device: str = "cpu") -> float:
    """``time.perf_counter()`` after the device finished its queued work."""
    if str(device).startswith("cuda"):
        torch.cuda.synchronize()
    return time.perf_counter()


def percentile(values: Sequence[float], q: float) -> float | None:
    """The q-th percentile (linear interpolation, as numpy's default); None for no values."""
    return float(np.percentile(np.asarray(values, dtype=float), q)) if len(values) else None


def speed_stats(pass_seconds: Sequence[float], audio_seconds: float, n_utterances: int, batch_size: int,
                latencies: Sequence[float] | None = None) -> dict:
    """The speed block of one model on one set.

    ``pass_seconds``: one total per timed pass; ``latencies``: per-utterance batch-1 seconds (or None).
    """
    if not pass_seconds or audio_seconds <= 0:
        raise ValueError("speed_stats needs at least one timed pass and some audio")
    seconds = statistics.median(pass_seconds)
    stats = {
        "processing_seconds": seconds,
        "audio_seconds": audio_seconds,
        "rtf": seconds / audio_seconds,
        "inverse_rtf": audio_seconds / seconds if seconds > 0 else None,
        "batch_size": batch_size,
        "throughput_utterances_per_s": n_utterances / seconds if seconds > 0 else None,
        "throughput_audio_s_per_s": audio_seconds / seconds if seconds > 0 else None,
        "repeats": len(pass_seconds),
        "pass_seconds": list(pass_seconds),
        "latency_p50_s": None,
        "latency_p95_s": None,
        "latency_mean_s": None,
    }
    if latencies:
        stats.update(latency_p50_s=percentile(latencies, 50), latency_p95_s=percentile(latencies, 95),
                     latency_mean_s=float(np.mean(latencies)))
    return stats
