"""The committed public-domain sentence lists (Jane Austen, Harvard sentences) and how they are cleaned.

The lists are made by ``scripts/build_sentences.py``; see docs/data.md for their source and licence.
"""

from __future__ import annotations

import re
from importlib import resources
from pathlib import Path

from whisperkd.errors import UserError

SENTENCE_SETS = ("austen", "harvard")
MIN_WORDS, MAX_WORDS = 4, 35
ABBREVIATIONS = {"mr", "mrs", "dr", "st", "col", "capt", "esq", "messrs", "rev", "gen", "sir", "no"}

_QUOTES = {"\u201c": '"', "\u201d": '"', "\u2018": "'", "\u2019": "'", "\u00b4": "'", "`": "'",
           "\u2014": "--", "\u2013": "-"}
_ALLOWED = re.compile(r"^[\"'(]?[A-Za-z][A-Za-z ,.;:!?'\"()-]*$")
_BOUNDARY = re.compile(r"([.!?][\"')]*)(?:\s+|--\s*)(?=[\"'(]*[A-Z])")
_EMPHASIS = re.compile(r"\b[A-Z]{2,}\b")
_HEADING = re.compile(r"^(chapter|volume|book|the end|finis|by jane austen)\b", re.IGNORECASE)


def ascii_quotes(text: str) -> str:
    """Curly quotes and long dashes as ASCII."""
    for fancy, plain in _QUOTES.items():
        text = text.replace(fancy, plain)
    return text


def split_sentences_text(paragraph: str) -> list[str]:
    """Split a paragraph into sentences at . ! ? followed by a capital, not after Mr., Mrs. and the like."""
    out, start = [], 0
    for match in _BOUNDARY.finditer(paragraph):
        before = paragraph[start:match.start()].split()
        last = before[-1].strip("\"'(").lower() if before else ""
        if paragraph[match.start()] == "." and (last in ABBREVIATIONS or len(last) == 1):
            continue
        out.append(paragraph[start:match.end(1)].strip())
        start = match.end()
    out.append(paragraph[start:].strip())
    return [s for s in out if s]


def clean_sentence(sentence: str) -> str | None:
    """A speakable, ASCII sentence of 4-35 words, or ``None`` when it should not be used."""
    s = ascii_quotes(sentence).replace("_", "")
    s = re.sub(r"\s*--+\s*", ", ", s)
    s = re.sub(r"\s+", " ", s).strip()
    s = re.sub(r"^[,;: ]+", "", s)
    s = re.sub(r",\s*([,.;:!?])", r"\1", s)
    if s.count('"') % 2:
        s = s.replace('"', "").strip()
    if s.count("(") != s.count(")"):
        return None
    if not s or _HEADING.match(s) or not _ALLOWED.match(s) or s.isupper():
        return None
    s = _EMPHASIS.sub(lambda m: m.group(0).lower(), s)  # "He WOULD have" -> "He would have"
    if not s.lstrip("\"'(")[0].isupper() or s[-1] not in ".!?\"')":
        return None
    if not MIN_WORDS <= len(s.split()) <= MAX_WORDS:
        return None
    return s


def paragraphs(lines: list[str]) -> list[str]:
    """Join wrapped lines into paragraphs (blank lines separate paragraphs)."""
    out, current = [], []
    for line in list(lines) + [""]:
        if line.strip():
            current.append(line.strip())
        elif current:
            out.append(" ".join(current))
            current = []
    return out


def sentences_file(name: str) -> Path:
    """Path of a committed sentence list (``austen`` or ``harvard``)."""
    return Path(str(resources.files("whisperkd") / "resources" / "sentences" / f"{name}.txt"))


def load_sentences(names: str | list[str] | tuple[str, ...] = SENTENCE_SETS) -> list[str]:
    """Sentences of the named committed lists, or of a text file (one sentence per line), in file order."""
    if isinstance(names, str):
        names = [n for n in names.split(",") if n]
    out = []
    for name in names:
        path = sentences_file(name) if name in SENTENCE_SETS else Path(name)
        if not path.is_file():
            raise UserError(f"sentences '{name}': not a built-in list ({', '.join(SENTENCE_SETS)}) nor a text file")
        out.extend(line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip())
    if not out:
        raise UserError(f"sentences {', '.join(names)}: no sentences found")
    return out
