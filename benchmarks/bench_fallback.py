"""What Whisper's temperature fallback (the default of ``whisperkd transcribe``) does to WER and time.

    nice -n 10 python benchmarks/bench_fallback.py --models base tiny.en

For every model and set: greedy decoding against greedy + temperature fallback
(``whisperkd.models.decode.Fallback()``: transformers' ``generate`` with temperatures 0.0, 0.2, ..., 1.0, token
compression ratio > 1.35 or mean log-probability < -1.0 triggers a re-decode), measured with the evaluation
runner's own helpers: the two decodings take turns batch by batch (``measure_set``, batch 8, warm-up untimed,
``--repeats`` passes, transcripts of the first), WER is ``whisperkd.text``'s corpus WER after Whisper's normaliser (``score``). Also shown: the WER of
the greedy transcripts cut by ``--loop-guard`` (``whisperkd.evaluate.loops``), how many hypotheses hold a loop by
that guard's definition (a word 4-gram starting a third time), how many utterances were decoded again and how
many kept a decode that failed even at temperature 1.0, and the time ratio fallback / greedy.

Sets: the first ``--n`` utterances of speechocean762 dev by sorted sha1 of the utterance id (real non-native
speech, children and L2 adults, where base is known to loop) and the six real clips.
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import json
import statistics
import sys
from pathlib import Path

import transformers

from whisperkd.cli import quiet_libraries
from whisperkd.data.skiplog import SkipLog
from whisperkd.data.sources import open_source
from whisperkd.evaluate.engines import open_model
from whisperkd.evaluate.loops import cut_repetition_loop
from whisperkd.evaluate.runner import decode_utterances, fallback_summary, load_set, measure_set, score
from whisperkd.models.decode import Fallback

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


def speechocean_sample(path: Path, n: int):
    """The first ``n`` utterances of ``path`` by sorted sha1 of the id, decoded."""
    utterances = sorted(open_source(path), key=lambda u: hashlib.sha1(u.id.encode()).hexdigest())[:n]
    return decode_utterances(utterances, f"speechocean762 dev ({n}, sha1)", path, None, SkipLog(None))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["base", "tiny.en"])
    parser.add_argument("--speechocean", type=Path, default=SHARED / "speechocean762" / "dev" / "manifest.jsonl")
    parser.add_argument("--real", type=Path, default=SHARED / "real-speech")
    parser.add_argument("--n", type=int, default=100, help="speechocean utterances (default 100)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=1, help="timed passes; the time ratio is of their medians")
    parser.add_argument("--sets", nargs="+", choices=("speechocean", "real"), default=["speechocean", "real"])
    parser.add_argument("--dump", type=Path, default=None, help="write every utterance's transcripts here (JSONL)")
    args = parser.parse_args(argv)
    quiet_libraries()
    transformers.logging.set_verbosity_error()  # quiet_libraries comes after transformers is imported here
    sets = [speechocean_sample(args.speechocean, args.n) if name == "speechocean"
            else load_set(args.real, None, SkipLog(None), "real clips (6)") for name in args.sets]
    print("| model | set | utterances | WER greedy | WER fallback | WER greedy + --loop-guard "
          "| loops greedy → fallback | decoded again | failed at 1.0 | time fallback / greedy |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for spec in args.models:
        greedy = open_model(spec, device="cpu")
        guarded = copy.copy(greedy)  # the same weights, decoded with the fallback
        guarded.fallback = Fallback()
        for ev in sets:
            m = measure_set({"greedy": greedy, "fallback": guarded}, ev, args.batch_size, repeats=args.repeats,
                            latency=False, device="cpu")
            texts, fb = m["greedy"]["texts"], m["fallback"]["texts"]
            cut = [cut_repetition_loop(t) for t in texts]
            loops = [sum(cut_repetition_loop(t) != t for t in hyps) for hyps in (texts, fb)]
            summary = fallback_summary(m["fallback"]["decoded"])
            wers = [100 * score(ev, hyps)[0]["wer"] for hyps in (texts, fb, cut)]
            ratio = statistics.median(m["fallback"]["pass_seconds"]) / statistics.median(m["greedy"]["pass_seconds"])
            if args.dump:
                with open(args.dump, "a", encoding="utf-8") as f:
                    for utt, g, h, how in zip(ev.utterances, texts, fb, m["fallback"]["decoded"]):
                        f.write(json.dumps({"model": spec, "set": ev.label, "id": utt.id, "reference": utt.text,
                                            "greedy": g, "fallback": h, "decodes": how.decodes,
                                            "temperature": how.temperature, "passed": how.passed}) + "\n")
            print(f"| {spec} | {ev.label} | {len(ev.audios)} | {wers[0]:.2f} % | {wers[1]:.2f} % | {wers[2]:.2f} % "
                  f"| {loops[0]} → {loops[1]} | {summary['redecoded']} | {summary['failed_all']} | {ratio:.2f}x |",
                  flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
