"""The demo's real speech: a real training corpus pseudo-labelled by the teacher, and fixed real dev subsets.

The corpus is a folder with ``train/`` and ``dev/`` data sources (any source :func:`open_source` reads) from
different speakers; by default speechocean762 (real non-native English read speech, CC BY 4.0), found next to
the repository as ``../shared/data/speechocean762`` or named by ``WHISPERKD_REAL_CORPUS`` / ``--real-corpus``.

- **Training** (:func:`prepare_real_train`): a seeded subset of ``train/`` is transcribed by the teacher
  (greedy, encoder window ``auto``; :mod:`whisperkd.data.pseudo_label`) once; the labelled manifest keeps the
  corpus text and each utterance's WER. Which text the student learns (``labels``) is then a choice:
  ``pseudo`` (the teacher's transcripts, utterances above ``max_wer`` dropped: distil-whisper's recipe, and the
  student writes as Whisper writes, not in the corpus's capitals), ``original`` (the corpus text) or ``both``.
  The chosen utterances are packed into windows like the synthetic ones.
- **Dev** (:func:`real_dev_subsets`): two disjoint fixed subsets of ``dev/``, chosen by a hash of the utterance id
  (the same for every seed): one small, for choosing the best checkpoint during training, one larger, for the
  demo's table. Neither is ever trained on.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, replace
from pathlib import Path

from whisperkd.data.atomic import atomic_write_text
from whisperkd.data.manifest import read_manifest, write_manifest
from whisperkd.data.pack import pack_manifest
from whisperkd.data.pseudo_label import ORIGINAL_SUFFIX, pseudo_label, read_labelled, write_labelled_manifest
from whisperkd.data.sources import open_source
from whisperkd.data.utterance import Utterance
from whisperkd.errors import UserError
from whisperkd.models.loading import load_model, load_processor

REAL_CORPUS_ENV = "WHISPERKD_REAL_CORPUS"
REAL_CORPUS_NAME = "speechocean762"
LABEL_CHOICES = ("pseudo", "original", "both")
DEV_SALT = "whisperkd-real-dev"


def find_real_corpus(given: str | Path | None = None) -> Path | None:
    """The real corpus folder: ``given`` (``none`` = no real corpus), else ``$WHISPERKD_REAL_CORPUS``, else
    ``../shared/data/speechocean762`` from the current directory or from the repository; None when absent."""
    if given is None:
        given = os.environ.get(REAL_CORPUS_ENV) or None
    if given is not None:
        if str(given).lower() in ("none", "off", ""):
            return None
        path = Path(given)
        for split in ("train", "dev"):
            if not (path / split).exists():
                raise UserError(f"real corpus {path}: no {split}/ folder; give a folder with train/ and dev/ data "
                                f"sources (e.g. ../shared/data/{REAL_CORPUS_NAME}) or 'none'")
        return path
    for base in (Path.cwd() / "..", Path(__file__).resolve().parents[3]):
        path = (base / "shared" / "data" / REAL_CORPUS_NAME).resolve()
        if (path / "train").is_dir() and (path / "dev").is_dir():
            return path
    return None


def hash_order(utterances: list[Utterance], salt: str) -> list[Utterance]:
    """``utterances`` in the order of sha1(salt:id): a fixed pseudo-random order that does not depend on the file."""
    return sorted(utterances, key=lambda u: hashlib.sha1(f"{salt}:{u.id}".encode()).hexdigest())


def real_dev_subsets(corpus: Path, out: Path, n_select: int, n_report: int) -> tuple[Path, Path]:
    """Two disjoint fixed subsets of ``corpus/dev`` as manifests: ``n_select`` utterances for checkpoint
    selection and the next ``n_report`` for the table."""
    ordered = hash_order(list(open_source(corpus / "dev")), DEV_SALT)
    if len(ordered) < n_select + n_report:
        raise UserError(f"real corpus {corpus}/dev: {len(ordered)} utterances, the demo needs {n_select + n_report}")
    select = write_manifest(out / "real-dev-select" / "manifest.jsonl", ordered[:n_select])
    report = write_manifest(out / "real-dev" / "manifest.jsonl", ordered[n_select:n_select + n_report])
    return select, report


def _label_once(corpus: Path, out: Path, n: int, seed: int, teacher: str) -> tuple[Path, list[str]]:
    """The teacher's transcripts of a seeded ``n``-utterance subset of ``corpus/train`` (a labelled manifest that
    already holds them is kept), and the subset's ids. Subsets of other sizes share their first utterances."""
    subset = hash_order(list(open_source(corpus / "train")), f"train:{seed}")[:n]
    ids = [u.id for u in subset]
    path = out / "labelled.jsonl"
    if path.is_file():
        with open(path, encoding="utf-8") as f:
            done = {json.loads(line)["id"] for line in f if line.strip()}
        if done >= set(ids) - _skipped(out):
            return path, ids
    model, processor = load_model(teacher), load_processor(teacher)
    report = pseudo_label(model, processor, subset, batch_size=8, max_wer=None, audio_dir=out / "audio",
                          progress=False, model_name=teacher, window="auto")
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "skipped.json", json.dumps(sorted(set(ids) - {r["id"] for r in report.rows})))
    report.out = write_labelled_manifest(path, report.rows)
    atomic_write_text(out / "label_report.txt", report.summary() + "\n")
    return report.out, ids


def _skipped(out: Path) -> set[str]:
    path = out / "skipped.json"
    return set(json.loads(path.read_text())) if path.is_file() else set()


def training_utterances(labelled: Path, labels: str, max_wer: float | None, ids: list[str] | None = None
                        ) -> list[Utterance]:
    """The training utterances of a labelled manifest for a ``labels`` choice (see the module docstring), only
    those in ``ids`` (None: all); :func:`whisperkd.data.pseudo_label.read_labelled` makes the examples."""
    if labels not in LABEL_CHOICES:
        raise UserError(f"real labels {labels!r}: use one of {', '.join(LABEL_CHOICES)}")
    with open(labelled, encoding="utf-8") as f:
        wers = {row["id"]: row.get("wer") for row in (json.loads(line) for line in f if line.strip())}
    keep = None if ids is None else set(ids)
    out = []
    for utt in read_labelled(labelled, {"pseudo": "text", "original": "original", "both": "both"}[labels]):
        uid = utt.id.removesuffix(ORIGINAL_SUFFIX)
        wer = wers.get(uid)
        if keep is not None and uid not in keep:
            continue
        if labels != "original" and max_wer is not None and wer is not None and wer > max_wer:
            continue
        out.append(utt)
    return out


@dataclass
class RealTrain:
    """The packed real training windows and what went into them."""

    manifest: Path
    utterances: int
    labelled: Path


def prepare_real_train(corpus: Path, out: Path, n: int, seed: int, teacher: str, labels: str = "pseudo",
                       max_wer: float | None = None, pack_seconds: float = 28.0) -> RealTrain:
    """Label a seeded subset of the real training set with the teacher, choose its text, pack it into windows."""
    labelled, ids = _label_once(corpus, out / "real-train", n, seed, teacher)
    chosen = training_utterances(labelled, labels, max_wer, ids)
    if not chosen:
        raise UserError(f"real corpus {corpus}: no training utterance left with labels={labels}, max_wer={max_wer}")
    name = (labels if max_wer is None or labels == "original" else f"{labels}-wer{max_wer:g}") + f"-{n}"
    chosen_manifest = write_manifest(out / "real-train" / f"{name}.jsonl", chosen)
    packed = pack_manifest(chosen_manifest, out / f"real-train-packed-{name}", max_seconds=pack_seconds, seed=seed)
    return RealTrain(packed, len(chosen), labelled)


def mix_manifests(parts: dict[str, Path], out: Path) -> Path:
    """One manifest of several, each utterance id prefixed by its part's name (packed ids repeat across parts)."""
    mixed = []
    for name, manifest in parts.items():
        mixed += [replace(u, id=f"{name}/{u.id}", audio=Path(u.audio).absolute()) for u in read_manifest(manifest)]
    return write_manifest(out, mixed)
