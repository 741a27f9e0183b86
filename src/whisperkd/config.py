"""The distillation config: one YAML file of typed sections, plus dotted overrides on the command line.

    teacher, student, lora, loss (with loss.taid), optim, train, data (with data.augment), eval, output, cache

Every key has a type and a default (the dataclasses below are the schema; docs/distill.md lists them).
``load_config("run.yaml", ["optim.lr=1e-4", "student.decoder_layers=[0,3]"])`` reads the file, applies the
overrides (values parsed as YAML scalars), checks every key and type, and returns a :class:`Config`.
A mistake is one :class:`UserError` line naming the key, e.g.
``config optim.lrr: unknown key; valid keys: lr, weight_decay, ...``.

The YAML is read by ruamel.yaml (:mod:`whisperkd.config_yaml`: YAML 1.2, JSON's types only, no key twice).
The sections are pydantic dataclasses (:mod:`whisperkd.config_schema`): :func:`validate` checks keys and
types (strict: no ``"1"`` -> 1; an integer is a number; no inf/nan) and turns pydantic's first error into
that one line; :func:`_check` then checks the values across keys.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import field
from pathlib import Path
from typing import Literal

from pydantic import StrictBool, StrictFloat, StrictInt, StrictStr
from pydantic.dataclasses import dataclass

from whisperkd.config_schema import SCHEMA, Section, validate
from whisperkd.config_yaml import parse_value, read_yaml_file
from whisperkd.errors import UserError
from whisperkd.models.fetch import BROKEN_MODELS, OFFLINE_MODELS
from whisperkd.models.lora import LoraSettings
from whisperkd.models.window import Window, parse_window

DEFAULT_TOPK = 64  # top-k size when top-k is asked for (cache.logits=topk); docs/cache.md: not within 1% at T=2


@dataclass(config=SCHEMA)
class TeacherConfig:
    """The frozen teacher."""

    model: StrictStr = "tiny.en"  # offline name (tiny.en, base), HF Whisper directory, run folder or hub id
    device: Literal["auto", "cpu", "cuda"] = "auto"  # auto: cuda when available
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"  # auto: bfloat16 on cuda, float32 on cpu
    load_in_8bit: StrictBool = False  # bitsandbytes int8 weights; CUDA only
    memo_size: StrictInt = 0  # keep the teacher's outputs for up to N utterances in memory by id (0 = off)


@dataclass(config=SCHEMA)
class StudentConfig:
    """The student: layers kept from the teacher (or another checkpoint) and which parts train."""

    init: StrictStr = "teacher"  # "teacher" (prune the teacher) or a model with the teacher's tokenizer
    decoder_layers: StrictInt | list[StrictInt] | None = None  # count (maximally spaced) or teacher layer indices
    encoder_layers: StrictInt | list[StrictInt] | None = None  # null: keep the whole encoder
    train_encoder: StrictBool = False  # full fine-tuning choices (used when lora.enabled is false)
    train_decoder: StrictBool = True
    train_embeddings: StrictBool = False
    gradient_checkpointing: StrictBool = False
    encoder_window: StrictStr | StrictInt | None = None  # null (30 s), auto or seconds: docs/distill.md
    window_step: StrictInt = 5  # auto: the shortest multiple of window_step s holding the audio + window_margin
    window_margin: StrictFloat = 0.5
    output_layer: Literal["float32", "int8"] = "float32"  # int8 on CPU at load time (models/output_layer.py)

    def window(self):
        """The :class:`~whisperkd.models.window.Window` this student trains for, or None (30 s)."""
        if self.encoder_window is None:
            return None
        seconds = parse_window(self.encoder_window)
        return Window(None if seconds == "auto" else seconds, self.window_step, self.window_margin)


@dataclass(config=SCHEMA)
class LoraConfig:
    """LoRA on the student (PEFT); when enabled only the LoRA matrices (and the projector) train."""

    enabled: StrictBool = False
    presets: list[StrictStr] = field(default_factory=lambda: ["decoder-self-qv"])
    rank: StrictInt = 8
    alpha: StrictFloat = 16.0
    dropout: StrictFloat = 0.05


@dataclass(config=SCHEMA)
class TaidConfig:
    """TAID settings (used when loss.kind is taid); see docs/losses.md."""

    t_start: StrictFloat = 0.4
    t_end: StrictFloat = 1.0
    alpha: StrictFloat = 5e-4
    beta: StrictFloat = 0.99
    mode: Literal["adaptive", "linear"] = "adaptive"
    divergence: Literal["forward", "reverse"] = "forward"


@dataclass(config=SCHEMA)
class LossConfig:
    """loss = ce_weight * CE + w(step) * KD + align_weight * alignment; KD is KL at temperature T or TAID."""

    kind: Literal["kl", "taid"] = "kl"
    ce_weight: StrictFloat = 1.0
    kl_weight: StrictFloat = 0.8  # weight of the KD term (KL or TAID); 0 = CE only (sequence-level KD)
    kl_warmup_steps: StrictInt = 0  # w(step) rises linearly from 0 to kl_weight over these steps
    temperature: StrictFloat = 2.0  # KL temperature (TAID uses none)
    align_weight: StrictFloat = 0.0  # hidden-state alignment of decoder layers; 0 = off
    align_kind: Literal["geodesic", "cosine", "mse"] = "geodesic"
    align_layers: list[StrictInt] | None = None  # student decoder layers to align (null = all)
    taid: Section[TaidConfig] = field(default_factory=TaidConfig)


@dataclass(config=SCHEMA)
class OptimConfig:
    """AdamW with a linear warm-up then cosine decay to 0 at train.max_steps."""

    lr: StrictFloat = 1e-4
    weight_decay: StrictFloat = 0.01
    betas: list[StrictFloat] = field(default_factory=lambda: [0.9, 0.999])
    eps: StrictFloat = 1e-8
    warmup_steps: StrictInt = 100
    grad_clip: StrictFloat = 1.0  # max gradient norm; 0 = no clipping


@dataclass(config=SCHEMA)
class TrainConfig:
    """The loop: optimizer steps, batch, accumulation, precision."""

    max_steps: StrictInt = 1000
    batch_size: StrictInt = 8
    grad_accum_steps: StrictInt = 1
    mixed_precision: Literal["auto", "no", "bf16", "fp16"] = "auto"  # auto: bf16 on cuda; cpu is always fp32
    device: Literal["auto", "cpu", "cuda"] = "auto"
    seed: StrictInt = 0
    log_every: StrictInt = 10
    max_consecutive_nonfinite: StrictInt = 5  # stop after this many non-finite losses in a row
    progress: StrictBool = True


@dataclass(config=SCHEMA)
class AugmentConfig:
    """Augmented copies of every training utterance (docs/data.md, "Augmentation"); mirrors
    :class:`whisperkd.data.augment.AugmentSettings`. Probabilities are per copy; ranges are [low, high]."""

    copies: StrictInt = 0  # augmented copies next to each clean training utterance (0 = off)
    seed: StrictInt = 0  # with the utterance id and copy index, decides every draw
    noise_prob: StrictFloat = 0.5  # white Gaussian noise at an SNR drawn from noise_snr_db
    noise_snr_db: list[StrictFloat] = field(default_factory=lambda: [10.0, 30.0])
    speed_prob: StrictFloat = 0.5  # Kaldi-style speed perturbation (tempo and pitch), never past 30 s
    speed_range: list[StrictFloat] = field(default_factory=lambda: [0.9, 1.1])
    reverb_prob: StrictFloat = 0.3  # synthetic room impulse response with an RT60 drawn from reverb_rt60
    reverb_rt60: list[StrictFloat] = field(default_factory=lambda: [0.2, 0.8])
    specaugment_prob: StrictFloat = 0.5  # SpecAugment; mask_* mean what transformers' WhisperConfig's do
    mask_time_prob: StrictFloat = 0.05
    mask_time_length: StrictInt = 10
    mask_feature_prob: StrictFloat = 0.0
    mask_feature_length: StrictInt = 10


@dataclass(config=SCHEMA)
class DataConfig:
    """Training and dev data: a manifest (.jsonl/.csv), LibriSpeech tree, Kaldi data folder or HF save_to_disk
    folder."""

    train: StrictStr | None = None
    dev: StrictStr | None = None  # null: hold out dev_fraction of the training speakers
    dev_fraction: StrictFloat = 0.1
    split_seed: StrictInt = 0
    min_seconds: StrictFloat = 0.5
    max_seconds: StrictFloat = 30.0
    max_label_tokens: StrictInt = 448
    length_grouped: StrictBool = False
    num_workers: StrictInt = 0
    memo_size: StrictInt = 0  # keep up to N decoded training examples (log-mel + tokens, ~1 MB each) in memory
    labels: Literal["text", "original", "both"] = "text"  # with a `whisperkd label` manifest: pseudo-labels
    # (text), the ground truth kept in text_original (original), or both as two examples (both)
    augment: Section[AugmentConfig] = field(default_factory=AugmentConfig)  # training data only


@dataclass(config=SCHEMA)
class EvalConfig:
    """Periodic dev loss and greedy dev WER on a fixed dev subset; keep the best student by WER."""

    every: StrictInt = 200  # optimizer steps between evaluations (0: only at the end)
    at_start: StrictBool = True  # evaluate the untrained student at step 0
    max_utterances: StrictInt = 64
    batch_size: StrictInt = 8
    wer: StrictBool = True
    keep_best: StrictBool = True  # final = best dev WER (dev loss when wer is false); false: final = last


@dataclass(config=SCHEMA)
class OutputConfig:
    """The run folder and its checkpoints."""

    dir: StrictStr = "runs/distill"
    overwrite: StrictBool = False
    checkpoint_every: StrictInt = 500
    keep_checkpoints: StrictInt = 2
    tensorboard: StrictBool = True


@dataclass(config=SCHEMA)
class CacheConfig:
    """The offline teacher cache (docs/cache.md)."""

    enabled: StrictBool = False  # train from the offline cache (built or checked at the start of distill)
    dir: StrictStr | None = None  # null: <output.dir>/teacher_cache; point several runs (tuning) at one folder
    logits: Literal["full", "topk"] = "full"  # full: exact logits from stored final states; topk: top-k + tail
    topk: StrictInt | None = None  # top-k log-probs per position (null: 64 with logits=topk, else none)
    hidden_layers: Literal["all", "needed"] = "all"  # decoder hidden states stored for alignment
    on_stale: Literal["rebuild", "refuse"] = "rebuild"  # inputs changed since the cache was built
    shard_size: StrictInt = 64  # utterances per shard (the unit of resuming)
    batch_size: StrictInt = 8  # teacher batch while building
    audio_identity: Literal["stat", "content"] = "stat"  # stat: name, size, mtime; content: sha256

    @property
    def k(self) -> int:
        """Top-k entries to store."""
        if self.topk is not None:
            return self.topk
        return DEFAULT_TOPK if self.logits == "topk" else 0


@dataclass(config=SCHEMA)
class Config:
    teacher: Section[TeacherConfig] = field(default_factory=TeacherConfig)
    student: Section[StudentConfig] = field(default_factory=StudentConfig)
    lora: Section[LoraConfig] = field(default_factory=LoraConfig)
    loss: Section[LossConfig] = field(default_factory=LossConfig)
    optim: Section[OptimConfig] = field(default_factory=OptimConfig)
    train: Section[TrainConfig] = field(default_factory=TrainConfig)
    data: Section[DataConfig] = field(default_factory=DataConfig)
    eval: Section[EvalConfig] = field(default_factory=EvalConfig)
    output: Section[OutputConfig] = field(default_factory=OutputConfig)
    cache: Section[CacheConfig] = field(default_factory=CacheConfig)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


# ---------------------------------------------------------------- checks across keys

def _check(cfg: Config) -> Config:
    def need(ok: bool, key: str, message: str) -> None:
        if not ok:
            raise UserError(f"config {key}: {message}")

    t, s, lo, ls, o, tr, d, e, out, c = (cfg.teacher, cfg.student, cfg.lora, cfg.loss, cfg.optim, cfg.train,
                                         cfg.data, cfg.eval, cfg.output, cfg.cache)
    need(bool(t.model.strip()), "teacher.model", "empty; give tiny.en, base, a Whisper directory or a hub id")
    need(t.memo_size >= 0, "teacher.memo_size", "must be 0 (off) or a positive count")
    if s.init == "teacher":
        need(s.decoder_layers is not None, "student.decoder_layers",
             "required when student.init is teacher: a layer count (e.g. 2) or teacher layer indices (e.g. [0, 3])")
    else:
        need(s.decoder_layers is None and s.encoder_layers is None, "student.decoder_layers",
             "must be null when student.init is a model (it is used with all its layers)")
    try:
        s.window()
    except ValueError as err:
        raise UserError(f"config student.encoder_window: {err}") from None
    need(s.encoder_window is None or c.enabled, "student.encoder_window", "training for a window reads the windowed "
         "encoder outputs from the teacher cache; set cache.enabled=true")
    if not lo.enabled:
        need(s.train_encoder or s.train_decoder or s.train_embeddings, "student.train_decoder",
             "nothing trains: enable lora or set one of student.train_encoder/train_decoder/train_embeddings")
    else:
        LoraSettings(presets=lo.presets, rank=lo.rank, alpha=lo.alpha, dropout=lo.dropout)
    for key in ("ce_weight", "kl_weight", "align_weight"):
        need(getattr(ls, key) >= 0, f"loss.{key}", "must be 0 or positive")
    need(ls.ce_weight + ls.kl_weight + ls.align_weight > 0, "loss.ce_weight", "every loss weight is 0")
    need(ls.temperature > 0, "loss.temperature", "must be positive (e.g. 2.0)")
    need(ls.kl_warmup_steps >= 0, "loss.kl_warmup_steps", "must be 0 or positive")
    if ls.kind == "taid":
        need(0 <= ls.taid.t_start < ls.taid.t_end <= 1, "loss.taid.t_start", "need 0 <= t_start < t_end <= 1")
    need(ls.align_layers is None or len(ls.align_layers) > 0, "loss.align_layers",
         "empty list; give student decoder layer indices or null for all")
    need(o.lr > 0, "optim.lr", "must be positive (e.g. 1e-4)")
    need(len(o.betas) == 2 and all(0 <= b < 1 for b in o.betas), "optim.betas", "give two numbers in [0, 1)")
    need(o.weight_decay >= 0 and o.eps > 0, "optim.weight_decay", "weight_decay >= 0 and eps > 0")
    need(o.grad_clip >= 0, "optim.grad_clip", "must be 0 (off) or positive")
    need(0 <= o.warmup_steps <= tr.max_steps, "optim.warmup_steps", f"must be in 0..train.max_steps ({tr.max_steps})")
    for key in ("max_steps", "batch_size", "grad_accum_steps", "log_every", "max_consecutive_nonfinite"):
        need(getattr(tr, key) >= 1, f"train.{key}", "must be at least 1")
    need(0 <= d.dev_fraction < 1, "data.dev_fraction", "must be in [0, 1)")
    need(0 <= d.min_seconds < d.max_seconds <= 30, "data.min_seconds", "need 0 <= min_seconds < max_seconds <= 30")
    need(2 < d.max_label_tokens <= 448, "data.max_label_tokens", "must be in 3..448")
    need(d.num_workers >= 0, "data.num_workers", "must be 0 or positive")
    need(d.memo_size >= 0, "data.memo_size", "must be 0 (off) or a positive count")
    need(d.memo_size == 0 or d.num_workers == 0, "data.memo_size", "needs data.num_workers=0 (workers cannot "
         "share the memo)")
    a = d.augment
    need(a.copies >= 0, "data.augment.copies", "must be 0 (off) or a positive count")
    for key in ("noise_prob", "speed_prob", "reverb_prob", "specaugment_prob", "mask_time_prob", "mask_feature_prob"):
        need(0 <= getattr(a, key) <= 1, f"data.augment.{key}", "must be a probability in [0, 1]")
    for key, low, example in (("noise_snr_db", -math.inf, "[10, 30] dB"), ("speed_range", 0, "[0.9, 1.1]"),
                              ("reverb_rt60", 0, "[0.2, 0.8] s")):
        pair = getattr(a, key)
        need(len(pair) == 2 and low < pair[0] <= pair[1], f"data.augment.{key}",
             f"give [low, high] with {'' if low < 0 else '0 < '}low <= high, e.g. {example}")
    need(1 <= a.mask_time_length <= 3000, "data.augment.mask_time_length", "must be in 1..3000 (log-mel frames)")
    need(1 <= a.mask_feature_length <= 80, "data.augment.mask_feature_length", "must be in 1..80 (mel bins)")
    need(e.every >= 0, "eval.every", "must be 0 (only at the end) or positive")
    need(e.max_utterances >= 1 and e.batch_size >= 1, "eval.max_utterances", "max_utterances, batch_size >= 1")
    need(bool(out.dir.strip()), "output.dir", "empty; give a run folder such as runs/tiny")
    need(out.checkpoint_every >= 1, "output.checkpoint_every", "must be at least 1")
    need(out.keep_checkpoints >= 1, "output.keep_checkpoints", "must be at least 1")
    need(c.topk is None or c.topk >= 0, "cache.topk", "must be null, 0 or positive")
    need(c.logits != "topk" or c.topk != 0, "cache.topk", "0 stores no top-k, but cache.logits is topk; give k "
         "(e.g. 64)")
    need(c.shard_size >= 1, "cache.shard_size", "must be at least 1")
    need(c.batch_size >= 1, "cache.batch_size", "must be at least 1")
    return cfg


# ---------------------------------------------------------------- public API

def apply_override(raw: dict, assignment: str) -> None:
    """Set ``section.key[.key]=value`` in the raw mapping (value parsed by :func:`parse_value`)."""
    key, sep, text = assignment.partition("=")
    key = key.strip()
    if not sep or not key or any(not part for part in key.split(".")):
        raise UserError(f"override {assignment!r}: expected KEY=VALUE with a dotted key such as optim.lr=1e-4")
    parts = key.split(".")
    node = raw
    for depth, part in enumerate(parts[:-1]):
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            raise UserError(f"config {'.'.join(parts[:depth + 1])}: is a value, not a section; cannot set {key}")
        node = child
    try:
        node[parts[-1]] = parse_value(text)
    except UserError as err:
        raise UserError(f"config {key}: {err}") from None


# Keys renamed since they were first used: old dotted key -> new one (the value moves over).
RENAMED = {"teacher.encoder_memo_size": "teacher.memo_size"}


def _move_renamed(raw: dict) -> None:
    for old, new in RENAMED.items():
        (section, old_key), (_, new_key) = old.split("."), new.split(".")
        part = raw.get(section)
        if isinstance(part, dict) and old_key in part:
            value = part.pop(old_key)
            part.setdefault(new_key, value)


def config_from_dict(raw: dict, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Validate a raw mapping (plus overrides) into a :class:`Config`."""
    raw = json.loads(json.dumps(raw)) if raw else {}
    for assignment in overrides:
        apply_override(raw, assignment)
    _move_renamed(raw)
    return _check(validate(Config, raw))


def read_config_file(path: str | Path) -> dict:
    """The raw mapping of a YAML (or JSON) config file (read by :func:`whisperkd.config_yaml.read_yaml_file`)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: config file not found")
    raw = read_yaml_file(path)
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise UserError(f"{path}: expected a mapping of sections (teacher:, student:, ...), got {type(raw).__name__}")
    return raw


def load_config(path: str | Path | None, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Read ``path`` (None: defaults only), apply ``overrides``, validate."""
    return config_from_dict(read_config_file(path) if path is not None else {}, overrides)


def _absolute_if_exists(value: str | None, base: Path) -> str | None:
    if value is None or value in OFFLINE_MODELS or value in BROKEN_MODELS:  # names, as load_model reads them
        return value
    path = (base / Path(value).expanduser())
    return str(path.resolve()) if path.exists() else value


def with_absolute_paths(cfg: Config, base: str | Path | None = None) -> Config:
    """A copy where data paths, model directories and output.dir are absolute (so a run resumes from anywhere)."""
    base = Path(base) if base is not None else Path.cwd()
    cfg = dataclasses.replace(cfg, teacher=dataclasses.replace(cfg.teacher), student=dataclasses.replace(cfg.student),
                              data=dataclasses.replace(cfg.data), output=dataclasses.replace(cfg.output),
                              cache=dataclasses.replace(cfg.cache))
    cfg.teacher.model = _absolute_if_exists(cfg.teacher.model, base)
    if cfg.student.init != "teacher":
        cfg.student.init = _absolute_if_exists(cfg.student.init, base)
    cfg.data.train = _absolute_if_exists(cfg.data.train, base)
    cfg.data.dev = _absolute_if_exists(cfg.data.dev, base)
    cfg.output.dir = str((base / Path(cfg.output.dir).expanduser()).resolve())
    if cfg.cache.dir is not None:
        cfg.cache.dir = str((base / Path(cfg.cache.dir).expanduser()).resolve())
    return cfg
