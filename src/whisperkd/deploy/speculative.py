"""Lossless speculative decoding: the teacher's greedy transcripts, drafted by a distilled student.

The student proposes a few tokens; the teacher checks them all in one forward pass and keeps the longest prefix
that equals its own greedy choices, plus one token of its own. The text is therefore the teacher's greedy
text; only the time changes (transformers' assisted generation, ``generate(assistant_model=...)``, one
utterance at a time: assisted generation takes batch size 1).

Decoding is :func:`whisperkd.models.decode.transcribe_arrays` with ``window=30``, ``batch_size=1`` and no
fallback: greedy English (:func:`~whisperkd.models.decode.generate_kwargs`), log-mel features padded to 30 s, the
token cap :func:`~whisperkd.models.decode.max_new_tokens_for` of the clip's length. One thing is added back: with an
assistant, transformers 5.24's Whisper ``generate`` drops ``begin_suppress_tokens`` (a blank or end-of-text as the
first token) "so that the model can return eos"; :class:`_BeginSuppress` restores it, or the first token could
differ from the teacher's greedy one.

Two kinds of draft (decided once, at load, by comparing the encoders' tensors):

- the student keeps the teacher's encoder (the same weights, e.g. pruned from the teacher with a frozen encoder):
  its decoder alone becomes a ``WhisperForCausalLM``, distil-whisper's way. In transformers 5.24
  (``generation/candidate_generator.py``, ``AssistedCandidateGenerator.__init__``) a decoder-only assistant
  gets the teacher's ``encoder_outputs`` from the teacher's ``model_kwargs`` and drafts with ``input_ids`` =
  the teacher's decoder tokens, so the encoder runs once per utterance (tested by counting encoder calls).
  The student's stored encoder window (``whisperkd_window``) plays no part: the draft reads the teacher's 30-s
  encoder states;
- otherwise the whole student drafts, after its own encoder pass on the same 30-s features (a student trained
  for a shorter window then drafts outside it, which may cost accepted tokens, never the text).

A student with an int8 output layer (:mod:`whisperkd.models.output_layer`) drafts with it.
"""

from __future__ import annotations

import copy
import logging
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from transformers import WhisperForCausalLM, WhisperForConditionalGeneration
from transformers.generation.logits_process import SuppressTokensAtBeginLogitsProcessor
from transformers.utils import logging as hf_logging

from whisperkd.errors import UserError
from whisperkd.evaluate.engines import is_ct2_dir
from whisperkd.evaluate.loops import cut_repetition_loop
from whisperkd.evaluate.memory import directory_size
from whisperkd.models.decode import SAMPLE_RATE, generate_kwargs, max_new_tokens_for
from whisperkd.models.loading import load_model, load_processor, resolve
from whisperkd.models.output_layer import for_inference
from whisperkd.models.vocabulary import check_same_vocabulary, describe_vocabulary
from whisperkd.models.window import FULL_WINDOW_SECONDS


@dataclass(frozen=True)
class DraftStats:
    """One utterance's assisted decode: ``tokens`` the teacher generated (its end-of-text included), in ``rounds``
    teacher decoder passes; ``drafted`` tokens the student proposed (one draft decoder pass each). Every round
    keeps the accepted drafts plus one token of the teacher's, so ``accepted`` = tokens - rounds."""

    tokens: int
    rounds: int
    drafted: int

    @property
    def accepted(self) -> int:
        return self.tokens - self.rounds


class _BeginSuppress(SuppressTokensAtBeginLogitsProcessor):
    """Whisper's ``begin_suppress_tokens`` at the first generated position. Whisper's ``generate`` sets the begin
    index of every logits processor to its prompt length; an encoder-decoder draft runs Whisper's ``generate``
    again every round and would move it to the round's start, so the first index set is kept."""

    def __init__(self, tokens: list[int], device: torch.device):
        super().__init__(tokens, begin_index=None, device=device)

    def set_begin_index(self, begin_index):
        if self.begin_index is None:
            self.begin_index = begin_index


@contextmanager
def _quiet_transformers():
    """transformers' warnings at ERROR only: every draft round re-announces that both ``max_new_tokens`` and
    ``max_length`` are set (the candidate generator sets them, not us)."""
    level = hf_logging.get_verbosity()
    hf_logging.set_verbosity(logging.ERROR)
    try:
        yield
    finally:
        hf_logging.set_verbosity(level)


def same_encoder(teacher: WhisperForConditionalGeneration, student: WhisperForConditionalGeneration) -> bool:
    """True when the student's encoder is the teacher's: the same tensor names, shapes and values."""
    a, b = teacher.model.encoder.state_dict(), student.model.encoder.state_dict()
    return a.keys() == b.keys() and all(a[k].shape == b[k].shape and torch.equal(a[k], b[k]) for k in a)


def decoder_only(student: WhisperForConditionalGeneration) -> WhisperForCausalLM:
    """The student's decoder and output layer as a ``WhisperForCausalLM`` (tensors shared, not copied): a draft
    that reads encoder states it is given instead of computing its own."""
    config = copy.deepcopy(student.config)  # WhisperForCausalLM sets is_encoder_decoder=False on its config
    with torch.device("meta"):
        draft = WhisperForCausalLM(config)
    state = {f"model.decoder.{k}": v for k, v in student.model.decoder.state_dict().items()}
    state["proj_out.weight"] = student.proj_out.weight.detach()
    draft.load_state_dict(state, strict=True, assign=True)
    draft.tie_weights()  # one Parameter again for a tied output layer (as in the student), not two on one storage
    draft.generation_config = copy.deepcopy(student.generation_config)
    return draft.eval()


def _refuse_ct2(spec: str, role: str) -> None:
    if is_ct2_dir(Path(spec).expanduser()):
        raise UserError(f"{role} {spec}: a CTranslate2 model; speculative decoding runs Hugging Face models "
                        f"(transformers' assisted generation): pass an HF directory or run folder, or convert it "
                        f"with `whisperkd models import-ct2 {spec} OUT_DIR`")


def _check_pair(teacher_spec: str, assistant_spec: str, teacher, assistant, t_proc, a_proc) -> None:
    try:
        check_same_vocabulary(t_proc, a_proc)
    except UserError:
        raise UserError(f"--assistant {assistant_spec} ({describe_vocabulary(a_proc.tokenizer)}) cannot draft for "
                        f"{teacher_spec} ({describe_vocabulary(t_proc.tokenizer)}): their vocabularies differ; "
                        f"use a student distilled from this teacher") from None
    for field in ("vocab_size", "num_mel_bins"):
        t, a = getattr(teacher.config, field), getattr(assistant.config, field)
        if t != a:
            raise UserError(f"--assistant {assistant_spec}: config {field} {a} differs from the teacher's ({t}) "
                            f"in {teacher_spec}; use a student distilled from this teacher")


class SpeculativeWhisper:
    """The teacher's greedy transcripts, decoded with a student drafting tokens; an engine like
    :class:`whisperkd.evaluate.engines.HFWhisper` (``transcribe(audios) -> texts``)."""

    kind = "hf-speculative"
    loop_guard = False  # True: cut repetition loops out of the text (whisperkd.evaluate.loops), as HFWhisper does
    trainable_parameters = None

    def __init__(self, teacher: WhisperForConditionalGeneration, processor, draft, shares_encoder: bool,
                 path: Path | None = None, assistant_path: Path | None = None):
        self.model, self.processor, self.draft, self.shares_encoder = teacher, processor, draft, shares_encoder
        self.path, self.assistant_path = path, assistant_path
        param = next(teacher.parameters())
        self.device, self.dtype = str(param.device), str(param.dtype).replace("torch.", "")
        self.parameters = sum(p.numel() for p in teacher.parameters()) + sum(p.numel() for p in draft.parameters())
        sizes = [directory_size(p) for p in (path, assistant_path)]
        self.disk_bytes = None if None in sizes else sum(sizes)
        self.last_stats: list[DraftStats] = []  # one per utterance of the last transcribe call
        self._calls = {"teacher": 0, "draft": 0}
        teacher.model.decoder.register_forward_hook(self._counter("teacher"))
        draft.model.decoder.register_forward_hook(self._counter("draft"))

    def _counter(self, name: str):
        def hook(module, args, output):
            self._calls[name] += 1
        return hook

    def _logits_processors(self) -> list:
        tokens = getattr(self.model.generation_config, "begin_suppress_tokens", None)
        return [_BeginSuppress(tokens, next(self.model.parameters()).device)] if tokens else []

    @torch.no_grad()
    def transcribe(self, audios: list[np.ndarray]) -> list[str]:
        """One transcript per 16 kHz mono float array (each at most 30 s), in order."""
        param = next(self.model.parameters())
        texts, self.last_stats = [], []
        for audio in audios:
            seconds = len(audio) / SAMPLE_RATE
            if seconds > FULL_WINDOW_SECONDS:
                raise UserError(f"speculative decoding: a clip of {seconds:.1f} s; it takes at most "
                                f"{FULL_WINDOW_SECONDS} s per call (cut longer audio into windows)")
            feats = self.processor.feature_extractor([audio], sampling_rate=SAMPLE_RATE,
                                                     return_tensors="pt").input_features
            cap = max_new_tokens_for(seconds)
            self._calls.update(teacher=0, draft=0)
            with _quiet_transformers():
                ids = self.model.generate(feats.to(param.device, param.dtype), max_new_tokens=cap,
                                          assistant_model=self.draft, logits_processor=self._logits_processors(),
                                          **generate_kwargs(self.model))
            # Whisper's generate returns the new tokens without the end-of-text; below the cap one ended them
            generated = int(ids.shape[-1]) + int(ids.shape[-1] < cap)
            self.last_stats.append(DraftStats(generated, self._calls["teacher"], self._calls["draft"]))
            texts.append(self.processor.tokenizer.decode(ids[0], skip_special_tokens=True).strip())
        return [cut_repetition_loop(t) for t in texts] if self.loop_guard else texts


def open_speculative(teacher: str, assistant: str, device: str = "cpu") -> SpeculativeWhisper:
    """The teacher (a name, HF directory or run folder) decoding with ``assistant`` (a student: run folder or
    HF directory) as its draft model; float32 on CPU, float16 on CUDA. UserError (one line) for a pair that
    cannot work: a CTranslate2 directory as either model, or different vocabularies."""
    _refuse_ct2(teacher, "teacher")
    _refuse_ct2(assistant, "--assistant")
    dtype = torch.float16 if str(device).startswith("cuda") else torch.float32
    t_proc, a_proc = load_processor(teacher), load_processor(assistant)
    t_model = load_model(teacher, dtype=dtype, device=device)
    student = load_model(assistant, dtype=dtype, device=device)
    _check_pair(teacher, assistant, t_model, student, t_proc, a_proc)
    shares = same_encoder(t_model, student)
    draft = for_inference(decoder_only(student) if shares else student)
    # The draft gets the teacher's logits processors (suppressed tokens, begin suppression) from transformers;
    # its own would be built a second time, and its begin suppression would apply at the start of every round.
    draft.generation_config.suppress_tokens = draft.generation_config.begin_suppress_tokens = None
    paths = [resolve(spec) for spec in (teacher, assistant)]
    paths = [p if isinstance(p, Path) else None for p in paths]
    return SpeculativeWhisper(for_inference(t_model), t_proc, draft, shares, paths[0], paths[1])
