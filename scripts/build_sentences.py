#!/usr/bin/env python3
"""Build the committed sentence lists src/whisperkd/resources/sentences/{austen,harvard}.txt.

Sources (Debian main, read with the PyPI package ``rdata``; no R needed):
- ``r-cran-janeaustenr``: Jane Austen's six novels (public-domain texts; package MIT);
- ``r-cran-stringr``: the 720 Harvard sentences, IEEE 1969 (public domain; package GPL-2).

Usage: python scripts/build_sentences.py [--debs DIR] [--austen-count 3000] [--seed 0]
Without --debs the two packages are fetched with ``apt-get download`` into a temporary folder.
Sentences that overlap the real-speech evaluation clips (six-word runs) are left out.
"""

from __future__ import annotations

import argparse
import glob
import random
import struct
import subprocess
import sys
import tempfile
import zlib
from pathlib import Path

import rdata

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from whisperkd.data.atomic import atomic_write_text  # noqa: E402
from whisperkd.data.sentences import clean_sentence, paragraphs, split_sentences_text  # noqa: E402
from whisperkd.data.text import exclude_overlap, normalize_text  # noqa: E402

PACKAGES = ("r-cran-janeaustenr", "r-cran-stringr")
NOVELS = ("sensesensibility", "prideprejudice", "mansfieldpark", "emma", "northangerabbey", "persuasion")
# Transcripts of the real-speech clips (../shared/data/real-speech/manifest.jsonl, LibriVox Sense and
# Sensibility ch. 2): evaluation material that must never appear in synthetic training text.
EVAL_TEXTS = (
    "and mister john dashwood had then leisure to consider how much there might be prudently in his power to do for them",
    "he was not an ill disposed young man",
    "unless to be rather cold hearted and rather selfish is to be ill disposed",
    "had he married a more a amiable woman he might have been made still more respectable than he was",
    "he might even have been made amiable himself",
)
OVERLAP_WORDS = 6


def fetch_debs(folder: Path) -> Path:
    subprocess.run(["apt-get", "download", *PACKAGES], cwd=folder, check=True)
    root = folder / "x"
    for deb in glob.glob(str(folder / "*.deb")):
        subprocess.run(["dpkg", "-x", deb, str(root)], check=True)
    return root


def read_rdata(root: Path, package: str) -> dict:
    """The objects of an R lazy-load database (``data/Rdata.rdx`` + ``.rdb``)."""
    data = root / "usr/lib/R/site-library" / package / "data"
    index = rdata.read_rds(data / "Rdata.rdx")
    blob = (data / "Rdata.rdb").read_bytes()
    out = {}
    for name, (offset, length) in index["variables"].items():
        chunk = blob[offset:offset + length]
        size = struct.unpack(">I", chunk[:4])[0]
        raw = zlib.decompress(chunk[4:])
        assert len(raw) == size, f"{package}/{name}: bad chunk"
        out[str(name)] = rdata.conversion.convert(rdata.parser.parse_data(raw))
    return out


def unique(sentences: list[str]) -> list[str]:
    seen, out = set(), []
    for s in sentences:
        key = normalize_text(s)
        if key not in seen:
            seen.add(key)
            out.append(s)
    return out


def austen(root: Path, count: int, seed: int) -> list[str]:
    books = read_rdata(root, "janeaustenr")
    per_book = {}
    for novel in NOVELS:
        found = [clean_sentence(s) for p in paragraphs([str(x) for x in books[novel]]) for s in split_sentences_text(p)]
        per_book[novel] = exclude_overlap([s for s in found if s], EVAL_TEXTS, ngram=OVERLAP_WORDS)
    total = sum(len(v) for v in per_book.values())
    print(f"austen: {total} usable sentences in {len(NOVELS)} novels", file=sys.stderr)
    rng = random.Random(seed)
    chosen = []
    for novel in NOVELS:  # the same share from each novel, in book order
        found = per_book[novel]
        take = round(count * len(found) / total)
        keep = sorted(rng.sample(range(len(found)), min(take, len(found))))
        chosen.extend(found[i] for i in keep)
    return unique(chosen)


def harvard(root: Path) -> list[str]:
    found = [clean_sentence(str(s)) for s in read_rdata(root, "stringr")["sentences"]]
    return unique(exclude_overlap([s for s in found if s], EVAL_TEXTS, ngram=OVERLAP_WORDS))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--debs", type=Path, help="folder where the two .deb files were extracted with dpkg -x")
    parser.add_argument("--austen-count", type=int, default=3000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=REPO / "src/whisperkd/resources/sentences")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = args.debs or fetch_debs(Path(tmp))
        lists = {"austen": austen(root, args.austen_count, args.seed), "harvard": harvard(root)}
    for name, sentences in lists.items():
        path = atomic_write_text(args.out / f"{name}.txt", "\n".join(sentences) + "\n")
        print(f"{path}: {len(sentences)} sentences, {path.stat().st_size // 1024} KiB", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
