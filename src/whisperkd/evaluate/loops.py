"""A guard against repetition loops in a transcript: cut the text where a word n-gram comes back too often.

Greedy decoding of a small student sometimes falls into a loop ("ask what you can do for you, ask what you
can do for you, ...") until the token cap stops it; one loop can cost more errors than the rest of a test
set. Whisper's own guard is a gzip compression-ratio check followed by sampling at a higher temperature;
this one is deterministic: at the ``max_count + 1``-th occurrence of any word ``n``-gram, the text ends.
"""

from __future__ import annotations

import re

from whisperkd.text import normalize, wer

_WORD = re.compile(r"\S+")


def _key(word: str) -> str:
    return re.sub(r"[^\w']", "", word.lower())


def cut_repetition_loop(text: str, n: int = 4, max_count: int = 2) -> str:
    """``text`` up to (not including) the word where some n-gram (case and punctuation ignored) starts for
    the ``max_count + 1``-th time; unchanged when no n-gram repeats that often."""
    if n < 1 or max_count < 1:
        raise ValueError("cut_repetition_loop: n and max_count must be >= 1")
    spans = [m.span() for m in _WORD.finditer(text)]
    keys = [_key(text[a:b]) for a, b in spans]
    seen: dict[tuple[str, ...], int] = {}
    for i in range(len(keys) - n + 1):
        gram = tuple(keys[i:i + n])
        if not all(gram):
            continue
        seen[gram] = seen.get(gram, 0) + 1
        if seen[gram] > max_count:
            return text[:spans[i][0]].rstrip(" ,;:")
    return text


def wer_with_guard(utterance_rows: list[dict], n: int = 4, max_count: int = 2) -> float:
    """Corpus WER of ``utterances.jsonl`` rows (one model, one set) after cutting loops in the hypotheses."""
    return wer([r["reference_normalized"] for r in utterance_rows],
               [normalize(cut_repetition_loop(r["hypothesis"], n, max_count)) for r in utterance_rows])
