"""Timed segments from an HF Whisper, for recordings of any length: transformers' own long-form transcription.

transformers 5.24 (``models/whisper/generation_whisper.py``, ``WhisperGenerationMixin.generate``) runs
Whisper's sequential algorithm when the log-mel features are longer than the encoder's window: decode a window
with timestamp tokens, keep the segments that the timestamps close, seek to the end of the last complete one
(or by the whole window when the decode ends on a single timestamp, or has no pair of timestamps: then the
window is one segment), and decode the next window from there. It does so for a batch at once (each row seeks
on its own; rows leave the batch as their audio ends), given features that are not cut
(``truncation=False, padding="longest"``) and their attention mask. With a :class:`~whisperkd.models.decode.Fallback`
every window is checked (compression ratio of its tokens, mean log-probability) and decoded again, sampling
at the next temperature, when it fails: the guard against hallucination and repetition loops, per window.
Windows are not conditioned on the previous window's text (``condition_on_prev_tokens=False``): a distilled
student never saw a previous-text prompt in training, and a loop in one window cannot carry into the next.

The window is the model's encoder window (:func:`whisperkd.models.window.encoder_window`): transformers reads
the window from ``config.max_source_positions``, which the context manager sets, so a student trained for a
10-s window transcribes in 10-s windows.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import nullcontext

import torch

from whisperkd.deploy.transcript import Segment, segment_text
from whisperkd.errors import UserError
from whisperkd.models import decode
from whisperkd.models.window import FRAMES_PER_SECOND, encoder_window


def timestamp_begin(model) -> int:
    """The id of ``<|0.00|>``; UserError when the model's generation config cannot give timestamps."""
    no_timestamps = getattr(model.generation_config, "no_timestamps_token_id", None)
    if no_timestamps is None:
        raise UserError("the model's generation_config.json has no no_timestamps_token_id, which timestamps "
                        "(srt, vtt, audio longer than the encoder window) need; copy its teacher's "
                        "generation_config.json into the model folder")
    return int(no_timestamps) + 1


@torch.no_grad()
def hf_segments(model, processor, audios: list, seconds: int, fallback: decode.Fallback | None = None,
                seed_offset: int = 0, progress: Callable[[float], None] | None = None
                ) -> tuple[list[list[Segment]], int]:
    """Timed segments of each 16 kHz array (any length), decoded in ``seconds``-long windows; and how many
    windows the fallback decoded again. ``progress`` receives the seconds of audio done since its last call."""
    first_timestamp = timestamp_begin(model)
    param = next(model.parameters())
    inputs = processor.feature_extractor(audios, sampling_rate=decode.SAMPLE_RATE, truncation=False,
                                         padding="longest", return_attention_mask=True, return_tensors="pt")
    done = [0.0]

    def monitor(seek_and_end: torch.Tensor) -> None:
        now = float(seek_and_end.min(dim=1).values.sum()) / FRAMES_PER_SECOND
        if progress is not None and now > done[0]:
            progress(now - done[0])
            done[0] = now

    kwargs = decode.generate_kwargs(model) | (fallback.generate_kwargs() if fallback else {})
    calls: list = []
    devices = [param.device] if param.device.type == "cuda" else []
    # sampling draws from torch's global generator: seeded, inside fork_rng (the caller's state is kept)
    seeded = torch.random.fork_rng(devices=devices) if fallback else nullcontext()
    spied = decode._decisions(model, calls) if fallback else nullcontext()
    with seeded, encoder_window(model, seconds), spied:
        if fallback:
            torch.manual_seed(fallback.seed + seed_offset)
        out = model.generate(inputs.input_features.to(param.device, param.dtype),
                             attention_mask=inputs.attention_mask.to(param.device), return_timestamps=True,
                             return_segments=True, condition_on_prev_tokens=False, monitor_progress=monitor,
                             **kwargs)
    tokenizer = processor.tokenizer
    found = [[Segment(float(s["start"]), float(s["end"]),
                      segment_text(tokenizer, s["tokens"].tolist(), first_timestamp)) for s in row]
             for row in out["segments"]]
    redecoded = sum(1 for temperature, _, _ in calls if temperature > 0)
    return found, redecoded
