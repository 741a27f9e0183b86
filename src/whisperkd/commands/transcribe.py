"""``whisperkd transcribe MODEL AUDIO...``: English transcripts, one line per file or JSONL.

Decoding is greedy with Whisper's temperature fallback by default (a guard against repetition loops: an
utterance whose greedy decode compresses too well or is too unlikely is decoded again, sampling at a higher
temperature, seeded); ``--no-fallback`` gives plain greedy decoding, as ``whisperkd evaluate`` uses by default."""

from __future__ import annotations

import json
import time

from whisperkd.errors import UserError


def register(sub) -> None:
    p = sub.add_parser("transcribe", help="transcribe audio files with any Whisper model (English; greedy with "
                                          "temperature fallback)")
    p.add_argument("model", help="tiny.en, base, an HF Whisper directory, a run folder or a hub id")
    p.add_argument("audio", nargs="+", help="audio files (wav, flac, ogg; at most 30 s each)")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--jsonl", action="store_true", help="print one JSON object per file")
    p.add_argument("--loop-guard", action="store_true",
                   help="cut a transcript where a word 4-gram starts for the 3rd time (repetition loops)")
    p.add_argument("--no-fallback", dest="fallback", action="store_false",
                   help="plain greedy decoding, without Whisper's temperature fallback (on by default: utterances "
                        "whose greedy decode compresses too well or is too unlikely are decoded again, sampling at "
                        "0.2 ... 1.0, seeded)")
    p.add_argument("--encoder-window", default=None, metavar="auto|SECONDS",
                   help="encoder window: seconds, auto (per utterance, the shortest multiple of 5 s that holds it) or off (30 s); "
                        "default: the window the model was trained for, else 30 s")
    p.set_defaults(func=run)


def run(args) -> int:
    from whisperkd.data.audio import AudioSkip, DurationFilter, load_audio
    from whisperkd.evaluate.loops import cut_repetition_loop
    from whisperkd.models.decode import Fallback, transcribe_arrays
    from whisperkd.models.loading import load_model, load_processor
    from whisperkd.models.output_layer import for_inference
    from whisperkd.models.window import window_option

    if args.batch_size < 1:
        raise UserError("--batch-size must be at least 1")
    window = window_option(args.encoder_window)
    audios = []
    for path in args.audio:
        try:
            audios.append(load_audio(path, durations=DurationFilter(0.0, 30.0)))
        except AudioSkip as skip:
            raise UserError(f"{path}: unusable audio ({skip}); pass a readable wav/flac/ogg file of at most 30 s") from None
    model, processor = for_inference(load_model(args.model)), load_processor(args.model)
    start = time.perf_counter()
    decoded: list = []
    texts = transcribe_arrays(model, processor, audios, batch_size=args.batch_size, window=window,
                              fallback=Fallback() if args.fallback else None, decoded=decoded)
    if args.loop_guard:
        texts = [cut_repetition_loop(t) for t in texts]
    seconds = time.perf_counter() - start
    for path, audio, text, how in zip(args.audio, audios, texts, decoded):
        if args.jsonl:
            print(json.dumps({"audio": path, "text": text, "duration": round(len(audio) / 16000, 3),
                              "temperature": how.temperature}))
        else:
            print(f"{path}\t{text}")
    if not args.jsonl:
        audio_s = sum(len(a) for a in audios) / 16000
        redecoded = sum(how.decodes > 1 for how in decoded)
        print(f"# {len(texts)} files, {audio_s:.1f} s of audio in {seconds:.2f} s (RTF {seconds / audio_s:.3f}); "
              + (f"temperature fallback: {redecoded} decoded again" if args.fallback else "greedy, no fallback"))
    return 0
