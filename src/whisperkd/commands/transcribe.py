"""``whisperkd transcribe MODEL INPUT...``: English transcripts of recordings of any length, from HF or
CTranslate2 Whisper models, as text, JSON lines, SubRip or WebVTT subtitles.

Inputs are audio files, folders (their audio files, recursively), quoted glob patterns and data sources
(manifest.jsonl/.csv, Kaldi and LibriSpeech folders). A recording that cannot be used is listed on stderr (and
in ``OUT_DIR/skipped.jsonl``) and skipped. Exit code: 0 when every recording was transcribed, 3 when some were
skipped (the others were transcribed), 2 for bad usage or when none could be transcribed.

Recordings that fit the model's encoder window are decoded as ``whisperkd evaluate`` decodes (greedy, Whisper's
temperature fallback on by default: an utterance whose greedy decode compresses too well or is too unlikely is
decoded again, sampling at a higher temperature, seeded; ``--no-fallback`` turns it off). Longer ones, and all
of them for srt/vtt, are decoded in sequential windows with timestamps, the way Whisper's own long-form
transcription works, with the same fallback per window (:mod:`whisperkd.deploy.hf_longform`,
:mod:`whisperkd.deploy.ct2_longform`). ``--no-timestamps`` (for students, distilled without timestamps) cuts
longer recordings into consecutive windows instead, one segment each."""

from __future__ import annotations

import re
import sys
import time

from whisperkd.errors import UserError

EXIT_SKIPPED = 3
DEVICE = re.compile(r"^(cpu|cuda(:\d+)?)$")


def register(sub) -> None:
    p = sub.add_parser("transcribe", help="transcribe recordings of any length with any Whisper model (HF or "
                                          "CTranslate2; txt, jsonl, srt, vtt)",
                       description="Transcribe recordings of any length (longer ones in sequential windows with "
                                   "timestamps). Unusable inputs are listed and skipped. Exit code: 0 all "
                                   "transcribed, 3 some inputs skipped, 2 bad usage or nothing usable.")
    p.add_argument("model", help="tiny.en, base, an HF Whisper directory, a run folder, a hub id, or a "
                                 "CTranslate2 (faster-whisper) directory")
    p.add_argument("audio", nargs="+", metavar="INPUT",
                   help="audio files (wav, flac, ogg, mp3, ...; any length), folders (searched recursively), "
                        "quoted glob patterns ('talks/**/*.flac'), manifests or data folders")
    p.add_argument("--format", choices=("txt", "jsonl", "srt", "vtt"), default=None,
                   help="txt (default): LABEL<TAB>TEXT lines, or NAME.txt files; jsonl: one object per recording "
                        "with timed segments; srt / vtt: subtitle files (need --out-dir)")
    p.add_argument("--jsonl", action="store_true", help="same as --format jsonl")
    p.add_argument("--out-dir", default=None, metavar="DIR",
                   help="write one file per recording (NAME.txt / .srt / .vtt, or one transcripts.jsonl) and "
                        "skipped.jsonl here instead of printing")
    p.add_argument("--device", default="cpu", help="cpu (default), cuda or cuda:N")
    p.add_argument("--batch-size", type=int, default=8, help="recordings decoded together (default 8)")
    p.add_argument("--quiet", action="store_true", help="no progress bar (shown only when stderr is a terminal) "
                                                        "and no summary line")
    p.add_argument("--loop-guard", action="store_true",
                   help="cut a transcript (each segment) where a word 4-gram starts for the 3rd time")
    p.add_argument("--no-fallback", dest="fallback", action="store_false",
                   help="plain greedy decoding, without Whisper's temperature fallback (on by default: a window "
                        "whose greedy decode compresses too well or is too unlikely is decoded again, sampling at "
                        "0.2 ... 1.0, seeded)")
    p.add_argument("--encoder-window", default=None, metavar="auto|off|SECONDS",
                   help="encoder window: seconds, auto (per recording, the shortest multiple of 5 s that holds it) "
                        "or off (30 s); longer recordings are decoded in windows of this length (auto: 30 s); "
                        "default: the window the model was trained for, else 30 s")
    p.add_argument("--no-timestamps", dest="timestamps", action="store_false",
                   help="for a model that does not predict timestamps (a student distilled without them): cut "
                        "recordings longer than the window into consecutive windows, one segment each (a word "
                        "across a window's edge can be cut); srt/vtt get one cue per window")
    p.add_argument("--assistant", default=None, metavar="MODEL",
                   help="speculative decoding: the teacher MODEL's greedy transcripts, drafted by this student "
                        "(HF models; no timestamps, so recordings over 30 s need --no-timestamps; no fallback)")
    p.set_defaults(func=run)


def _format(args) -> str:
    fmt = args.format or ("jsonl" if args.jsonl else "txt")
    if args.jsonl and fmt != "jsonl":
        raise UserError(f"--jsonl and --format {fmt} disagree; give one of them")
    if fmt in ("srt", "vtt") and not args.out_dir:
        raise UserError(f"--format {fmt} writes one subtitle file per recording: add --out-dir DIR")
    return fmt


def _check_device(device: str, ct2: bool) -> None:
    import torch

    if not DEVICE.match(device):
        raise UserError(f"--device {device!r}: use cpu, cuda or cuda:N")
    if device == "cpu":
        return
    if ct2:
        import ctranslate2

        count = ctranslate2.get_cuda_device_count()
    else:
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    index = int(device.split(":")[1]) if ":" in device else 0
    if index >= count:
        raise UserError(f"--device {device}: {count} CUDA device(s) visible to "
                        f"{'CTranslate2' if ct2 else 'PyTorch'} here; use --device cpu")


def _decoder(args, ct2: bool):
    """The decoder for the model (and assistant) asked for."""
    from whisperkd.deploy.decoders import AssistedDecoder, CT2Decoder, HFDecoder
    from whisperkd.models.decode import Fallback
    from whisperkd.models.window import window_option

    window = window_option(args.encoder_window)
    fallback = Fallback() if args.fallback else None
    if args.assistant:
        from whisperkd.deploy.speculative import open_speculative

        return AssistedDecoder(open_speculative(args.model, args.assistant, device=args.device))
    if ct2:
        from whisperkd.evaluate.engines import open_model

        return CT2Decoder(open_model(args.model, device=args.device, encoder_window=window), fallback,
                          args.loop_guard)
    import torch

    from whisperkd.models import loading
    from whisperkd.models.output_layer import for_inference

    model = loading.load_model(args.model)
    if args.device != "cpu":
        model = model.to(device=args.device, dtype=torch.float16)
    return HFDecoder(for_inference(model), loading.load_processor(args.model), window, fallback, args.loop_guard)


def _skip_line(label: str, reason: str, detail: str) -> str:
    return f"skipped {label}: {reason}" + (f" ({detail})" if detail else "")


def run(args) -> int:
    from pathlib import Path

    from tqdm import tqdm

    from whisperkd.data.skiplog import SkipLog
    from whisperkd.deploy import writers
    from whisperkd.deploy.inputs import collect_inputs
    from whisperkd.deploy.transcriber import Transcriber, probe
    from whisperkd.evaluate.engines import is_ct2_dir

    if args.batch_size < 1:
        raise UserError("--batch-size must be at least 1")
    fmt = _format(args)
    if args.assistant and args.encoder_window is not None:
        raise UserError("--assistant decodes with 30-s windows (the teacher's); leave out --encoder-window")
    ct2 = is_ct2_dir(Path(args.model).expanduser())
    _check_device(args.device, ct2)

    items, unmatched = collect_inputs(args.audio)
    probed, bad = probe(items)
    skips = [(u.source, u.source, None, u.reason, u.detail) for u in unmatched]
    skips += [(i.source, i.label, i.audio, s.reason, s.detail) for i, s in bad]
    if not probed:
        if len(skips) == 1:
            _, label, _, reason, detail = skips[0]
            raise UserError(f"{label}: unusable audio ({reason}: {detail}); pass a readable audio file "
                            f"(wav, flac, ogg, mp3, ...), a folder, a glob pattern or a manifest")
        for _, label, _, reason, detail in skips:
            print(_skip_line(label, reason, detail), file=sys.stderr)
        raise UserError(f"none of the {len(skips)} inputs is usable (each is listed above)")
    if args.assistant and args.timestamps:
        long = next((p for p in probed if p.seconds > 30), None)
        if long:
            raise UserError(f"{long.item.label}: {long.seconds:.1f} s; --assistant (speculative decoding) has no "
                            f"timestamps: add --no-timestamps (30-s windows, one segment each) or leave out --assistant")

    out_dir = Path(args.out_dir) if args.out_dir else None
    log = SkipLog(out_dir, reset=True) if out_dir else None
    skipped: list[str] = []

    def skip(source, label, audio, reason, detail) -> None:
        tqdm.write(_skip_line(label, reason, detail), file=sys.stderr)  # above the progress bar
        if log:
            log.add(source, label, audio, reason, detail)
        skipped.append(label)

    for entry in skips:
        skip(*entry)
    decoder = _decoder(args, ct2)
    outputs = writers.Outputs(fmt, out_dir)
    timestamps = None if not args.timestamps else fmt in ("srt", "vtt")
    transcriber = Transcriber(decoder, args.batch_size, timestamps, progress=not args.quiet and sys.stderr.isatty())
    start = time.perf_counter()
    try:
        count = transcriber.run(probed, lambda p, t: outputs.add(p.index, p.item, t, p.seconds),
                                lambda item, s: skip(item.source, item.label, item.audio, s.reason, s.detail))
    finally:
        outputs.finish(sys.stdout)
    seconds = time.perf_counter() - start
    if count == 0:
        raise UserError(f"no input could be transcribed ({len(skipped)} skipped, each listed above)")
    if not args.quiet:
        audio_s = sum(r["duration"] for r in outputs.rows.values())
        how = ("speculative decoding, the teacher's greedy transcripts" if args.assistant else
               f"temperature fallback: {decoder.redecoded} decoded again" if args.fallback else "greedy, no fallback")
        print(f"# {count} files, {audio_s:.1f} s of audio in {seconds:.2f} s (RTF {seconds / max(audio_s, 1e-9):.3f}); "
              f"{how}; {len(skipped)} skipped" + (f"; written to {out_dir}" if out_dir else ""),
              file=sys.stdout if fmt == "txt" and not out_dir else sys.stderr)
    return EXIT_SKIPPED if skipped else 0
