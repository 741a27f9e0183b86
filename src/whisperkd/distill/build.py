"""Everything a distillation run needs, built from the config: teacher, student (+ LoRA), projector, splits.

The dry run (sizing from the config alone) is :mod:`whisperkd.distill.dry_run`; the batches are
:mod:`whisperkd.data.batches`.
"""

from __future__ import annotations

import dataclasses
import random
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from transformers import BitsAndBytesConfig, WhisperForConditionalGeneration
from transformers.modeling_outputs import BaseModelOutput

from whisperkd.config import Config
from whisperkd.data.augment import AugmentSettings, augmented_copies
from whisperkd.data.pseudo_label import read_labelled
from whisperkd.data.sources import open_source
from whisperkd.data.splits import split_by_speaker
from whisperkd.distill.teacher import OnlineTeacher
from whisperkd.distill.teacher_batch import TeacherNeeds
from whisperkd.errors import UserError
from whisperkd.models.loading import load_model, load_processor, resolve
from whisperkd.models.lora import LoraSettings, apply_lora
from whisperkd.models.output_layer import mark_int8
from whisperkd.models.projector import Projector
from whisperkd.models.student import build_student_from_teacher, kept_layers, set_trainable
from whisperkd.models.vocabulary import check_same_vocabulary
from whisperkd.models.window import store_window

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


# ---------------------------------------------------------------- devices and precision

def resolve_device(choice: str, key: str) -> torch.device:
    """``auto`` -> cuda when available, else cpu; ``cuda`` without a GPU is a UserError naming ``key``."""
    if choice == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if choice == "cuda" and not torch.cuda.is_available():
        raise UserError(f"config {key}: cuda asked for but no CUDA GPU is available; use cpu or auto")
    return torch.device(choice)


def teacher_dtype(choice: str, device: torch.device) -> torch.dtype:
    if choice == "auto":
        return torch.bfloat16 if device.type == "cuda" and torch.cuda.is_bf16_supported() else torch.float32
    return DTYPES[choice]


def mixed_precision(choice: str, device: torch.device) -> str:
    """accelerate's mixed_precision: ``no`` on CPU (fp32 training), bf16 on CUDA when ``auto``."""
    if device.type != "cuda":
        return "no"
    if choice == "auto":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return choice


# ---------------------------------------------------------------- models

class DistillStudent(nn.Module):
    """The student (plain Whisper or its PEFT LoRA wrapper) and the projector to the teacher's width.

    One module, so accelerate prepares (and DDP wraps) both together. ``forward`` returns the student's
    logits and the projected outputs of the decoder layers ``align_layers``.
    """

    def __init__(self, student: nn.Module, projector: Projector) -> None:
        super().__init__()
        self.student = student
        self.projector = projector

    @property
    def whisper(self) -> WhisperForConditionalGeneration:
        """The Whisper model inside (with LoRA layers injected when LoRA is on): what ``generate`` runs."""
        return self.student.get_base_model() if hasattr(self.student, "get_base_model") else self.student

    def forward(self, input_features=None, decoder_input_ids=None, decoder_attention_mask=None,
                encoder_hidden_states=None, align_layers=()):
        inputs = ({"encoder_outputs": BaseModelOutput(last_hidden_state=encoder_hidden_states)}
                  if encoder_hidden_states is not None else {"input_features": input_features})
        out = self.student(**inputs, decoder_input_ids=decoder_input_ids,
                           decoder_attention_mask=decoder_attention_mask,
                           output_hidden_states=bool(align_layers), use_cache=False)
        hidden = [self.projector(out.decoder_hidden_states[j + 1]) for j in align_layers]
        return out.logits, hidden


@dataclass
class Built:
    """The models of a run; ``align_pairs`` = [(student decoder layer, teacher decoder layer)]."""

    teacher: WhisperForConditionalGeneration
    model: DistillStudent
    processor: object
    shares_encoder: bool
    align_pairs: list[tuple[int, int]]
    uses_lora: bool

    def teacher_needs(self, cfg: Config) -> TeacherNeeds:
        return TeacherNeeds(
            logits=cfg.loss.kl_weight > 0,
            full_logits=cfg.loss.kind == "taid",
            hidden_layers=tuple(t for _, t in self.align_pairs) if cfg.loss.align_weight > 0 else (),
            encoder=self.shares_encoder,
        )

    def online_teacher(self, cfg: Config, out_device, needs: TeacherNeeds | None = None) -> OnlineTeacher:
        """The teacher as a :class:`~whisperkd.distill.teacher.TeacherOutputs` (dev eval asks for logits too)."""
        return OnlineTeacher(self.teacher, needs or self.teacher_needs(cfg), out_device=out_device,
                             out_dtype=torch.float32, memo_size=cfg.teacher.memo_size)


def load_teacher(cfg: Config) -> WhisperForConditionalGeneration:
    """The frozen teacher in eval mode on ``teacher.device`` (int8 through bitsandbytes when asked, CUDA only)."""
    device = resolve_device(cfg.teacher.device, "teacher.device")
    if cfg.teacher.load_in_8bit:
        if device.type != "cuda":
            raise UserError("config teacher.load_in_8bit: int8 weights (bitsandbytes) need a CUDA GPU and the teacher "
                            f"device is {device.type}; set teacher.load_in_8bit=false")
        try:
            import bitsandbytes  # noqa: F401
        except ImportError:
            raise UserError("config teacher.load_in_8bit: bitsandbytes is not installed; "
                            "pip install 'whisperkd[cuda8bit]' or set teacher.load_in_8bit=false") from None
        teacher = WhisperForConditionalGeneration.from_pretrained(
            resolve(cfg.teacher.model), quantization_config=BitsAndBytesConfig(load_in_8bit=True),
            dtype=torch.float16, device_map={"": device.index or 0})
    else:
        teacher = load_model(cfg.teacher.model, dtype=teacher_dtype(cfg.teacher.dtype, device), device=device)
    teacher.requires_grad_(False)
    return teacher.eval()


def _student_base(cfg: Config, teacher, processor) -> WhisperForConditionalGeneration:
    s = cfg.student
    if s.init != "teacher":
        check_same_vocabulary(processor, load_processor(s.init), "teacher", f"student.init {s.init}")
        return load_model(s.init, dtype=torch.float32, device="cpu")
    source = teacher
    if cfg.teacher.load_in_8bit:  # prune an unquantised copy: the student must not inherit int8 weights
        source = load_model(cfg.teacher.model, dtype=torch.float32, device="cpu")
    student = build_student_from_teacher(source, s.decoder_layers, s.encoder_layers)
    return student.float().to("cpu")


def _align_pairs(cfg: Config, student: WhisperForConditionalGeneration) -> list[tuple[int, int]]:
    if cfg.loss.align_weight == 0:
        return []
    teacher_layers = kept_layers(student, "decoder")
    chosen = cfg.loss.align_layers if cfg.loss.align_layers is not None else range(len(teacher_layers))
    bad = [j for j in chosen if not 0 <= j < len(teacher_layers)]
    if bad:
        raise UserError(f"config loss.align_layers: {bad} out of range; the student has decoder layers "
                        f"0..{len(teacher_layers) - 1}")
    return [(j, teacher_layers[j]) for j in chosen]


def build_models(cfg: Config, teacher=None, processor=None) -> Built:
    """Teacher (frozen), student with its trainable parts or LoRA, projector; seeded by the caller."""
    processor = processor if processor is not None else load_processor(cfg.teacher.model)
    teacher = teacher if teacher is not None else load_teacher(cfg)
    student = _student_base(cfg, teacher, processor)
    pairs = _align_pairs(cfg, student)
    if cfg.lora.enabled:
        student.requires_grad_(False)
        lo = cfg.lora
        model = apply_lora(student, LoraSettings(presets=lo.presets, rank=lo.rank, alpha=lo.alpha, dropout=lo.dropout))
    else:
        set_trainable(student, cfg.student.train_encoder, cfg.student.train_decoder, cfg.student.train_embeddings)
        model = student
    if cfg.student.gradient_checkpointing:
        student.config.use_cache = False
        enable = getattr(student, "activation_checkpointing_enable", None)  # transformers >= 5.x name
        if enable is not None:
            enable(activation_checkpointing_kwargs={"use_reentrant": False})
        else:
            student.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    encoder_trains = any(p.requires_grad for p in student.model.encoder.parameters())
    shares = (cfg.student.init == "teacher" and not cfg.teacher.load_in_8bit and not encoder_trains
              and student.config.encoder_layers == teacher.config.encoder_layers)
    window = cfg.student.window()
    if window is not None:
        if not shares:
            raise UserError("config student.encoder_window: needs the teacher's whole encoder, frozen and shared "
                            "(student.init=teacher, encoder_layers=null, train_encoder=false, no encoder LoRA, no "
                            "8-bit teacher); a trained encoder under a window is not supported yet")
        store_window(student, window)  # saved with the student: decoding uses it without being told
    if cfg.student.output_layer != "float32":
        mark_int8(student, cfg.student.output_layer)  # applied when the saved student is loaded to transcribe
    projector = Projector(student.config.d_model, teacher.config.d_model)
    projector.requires_grad_(cfg.loss.align_weight > 0)
    return Built(teacher, DistillStudent(model, projector), processor, shares, pairs, cfg.lora.enabled)


# ---------------------------------------------------------------- data

def read_splits(cfg: Config) -> tuple[list, list]:
    """Training utterances and the fixed dev subset (``eval.max_utterances``, seeded choice). With
    ``data.augment.copies`` N > 0 the training list holds every utterance once clean, then N augmented copies
    (:func:`whisperkd.data.augment.augmented_copies`); dev data is never augmented."""
    d = cfg.data
    if d.train is None:
        raise UserError("config data.train: required to train; give a manifest (.jsonl/.csv), a LibriSpeech folder, "
                        "a Kaldi data folder or a Hugging Face save_to_disk folder (or use --dry-run)")
    source = open_source(d.train)
    if d.labels != "text":
        if source.kind != "manifest":
            raise UserError(f"config data.labels: {d.labels} needs a JSONL manifest written by `whisperkd label`; "
                            f"{d.train} is a {source.kind}")
        manifest = source.path / "manifest.jsonl" if Path(source.path).is_dir() else source.path
        train = read_labelled(manifest, d.labels)
    else:
        train = list(source)
    if d.dev is not None:
        dev = list(open_source(d.dev))
    elif d.dev_fraction > 0:
        parts = split_by_speaker(train, {"train": 1 - d.dev_fraction, "dev": d.dev_fraction}, seed=d.split_seed)
        train, dev = parts["train"], parts["dev"]
    else:
        dev = []
    if not train:
        raise UserError(f"config data.train: {d.train} holds no utterances")
    if len(dev) > cfg.eval.max_utterances:
        dev = random.Random(d.split_seed).sample(dev, cfg.eval.max_utterances)
    return list(augmented_copies(train, augment_settings(cfg))), dev


def augment_settings(cfg: Config) -> AugmentSettings:
    """The config's ``data.augment`` section as the data layer's :class:`~whisperkd.data.augment.AugmentSettings`."""
    return AugmentSettings(**dataclasses.asdict(cfg.data.augment))
