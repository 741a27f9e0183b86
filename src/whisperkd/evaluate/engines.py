"""Open any model ``whisperkd evaluate`` accepts and give it one call: ``transcribe(audios) -> texts``.

- a Hugging Face Whisper: an offline name (tiny.en, base), an HF directory, a run folder (its
  ``student_final/``) or a hub id, through :func:`whisperkd.models.loading.load_model`;
- a CTranslate2 (faster-whisper) directory (it holds ``model.bin``), run with ``ctranslate2.models.Whisper``.

Both decode greedily in English from log-mel features (HF's WhisperFeatureExtractor) with the same token cap,
:func:`whisperkd.models.decode.max_new_tokens_for` (looked up at call time), and the same encoder window
(:mod:`whisperkd.models.window`): the one asked for, else the one the model was trained for (an HF config's
``whisperkd_window``; the same dict in a CTranslate2 ``config.json``, written by ``whisperkd export``), else 30 s.
CTranslate2's ``Whisper.generate`` takes the shorter log-mel window as it is. HF models can decode with
Whisper's temperature fallback instead (``fallback``); CTranslate2 ones cannot.
"""

from __future__ import annotations

import json
import logging
import struct
from pathlib import Path
from types import SimpleNamespace

import ctranslate2
import numpy as np
import torch
from safetensors import safe_open
from transformers import WhisperFeatureExtractor, WhisperTokenizer

from whisperkd.errors import UserError
from whisperkd.evaluate.loops import cut_repetition_loop
from whisperkd.evaluate.memory import directory_size
from whisperkd.models import decode as _transcribe
from whisperkd.models.loading import load_model, load_processor, resolve
from whisperkd.models.output_layer import for_inference
from whisperkd.models.run_folder import ADAPTER_DIR, read_run_config, run_folder
from whisperkd.models.tokenizer import build_tokenizer
from whisperkd.models.window import CONFIG_KEY as WINDOW_KEY
from whisperkd.models.window import FRAMES_PER_SECOND, Window, resolve_window, window_batches

CT2_MAX_LENGTH = 448


def is_ct2_dir(path: str | Path) -> bool:
    """True for a directory that holds a CTranslate2 ``model.bin`` (or its part files)."""
    path = Path(path)
    return path.is_dir() and ((path / "model.bin").is_file() or any(path.glob("model.bin.part*")))


def _safetensors_numel(path: Path) -> int:
    with safe_open(str(path), framework="pt") as f:
        return sum(int(np.prod(f.get_slice(k).get_shape())) for k in f.keys())


def run_trainable_parameters(run: Path) -> int | None:
    """Parameters the run trained: tensors of ``adapter_final/`` (LoRA adapter + projector), else the
    ``trainable_parameters`` the run recorded in ``training_config.json``; None when neither exists."""
    files = [run / ADAPTER_DIR / name for name in ("adapter_model.safetensors", "projector.safetensors")]
    files = [f for f in files if f.is_file()]
    if files:
        return sum(_safetensors_numel(f) for f in files)
    value = read_run_config(run).get("trainable_parameters")
    return value if isinstance(value, int) else None


def _guarded(engine, texts: list[str]) -> list[str]:
    return [cut_repetition_loop(t) for t in texts] if engine.loop_guard else texts


class HFWhisper:
    """A transformers WhisperForConditionalGeneration with its processor."""

    kind = "hf"
    loop_guard = False  # cut repetition loops out of the text (whisperkd.evaluate.loops)
    encoder_window: str | int | None = None  # None: 30 s; seconds or "auto" (whisperkd.models.window)
    fallback: _transcribe.Fallback | None = None  # None: greedy; else Whisper's temperature fallback
    last_decoded: list | None = None  # with a fallback: how each utterance of the last call was decoded

    def __init__(self, spec: str, device: str = "cpu", dtype: torch.dtype = torch.float32):
        source = resolve(spec)
        self.path = Path(source) if isinstance(source, Path) else None
        self.model = for_inference(load_model(spec, dtype=dtype, device=device))
        self.processor = load_processor(spec)
        self.device, self.dtype = str(device), str(dtype).replace("torch.", "")
        run = run_folder(spec)
        self.parameters = sum(p.numel() for p in self.model.parameters())
        self.trainable_parameters = run_trainable_parameters(run) if run else None
        self.disk_bytes = directory_size(self.path)

    def transcribe(self, audios: list[np.ndarray]) -> list[str]:
        self.last_decoded = [] if self.fallback else None
        return _guarded(self, _transcribe.transcribe_arrays(self.model, self.processor, audios,
                                                            batch_size=max(1, len(audios)),
                                                            window=self.encoder_window, fallback=self.fallback,
                                                            decoded=self.last_decoded))


def _ct2_vocab_size(path: Path) -> int:
    if (path / "vocabulary.json").is_file():
        return len(json.loads((path / "vocabulary.json").read_text(encoding="utf-8")))
    if (path / "vocabulary.txt").is_file():
        lines = (path / "vocabulary.txt").read_text(encoding="utf-8").split("\n")
        return len(lines) - (lines[-1] == "")  # blank lines are tokens (id 50256 of the multilingual vocabulary)
    raise UserError(f"{path}: no vocabulary.txt or vocabulary.json; not a complete CTranslate2 Whisper directory")


def ct2_tokenizer(path: Path):
    """The tokenizer of a CTranslate2 directory: an HF tokenizer saved there, else the repaired ``tokenizer.json``."""
    if (path / "tokenizer_config.json").is_file():
        return WhisperTokenizer.from_pretrained(str(path))
    file = path / "tokenizer.json"
    if not file.is_file():
        raise UserError(f"{path}: no tokenizer.json; copy the model's tokenizer.json next to model.bin")
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except ValueError as err:
        raise UserError(f"{file}: not valid JSON ({err})") from None
    return build_tokenizer(data, _ct2_vocab_size(path), label=str(file))


def ct2_parameter_count(model_bin: Path) -> int:
    """Elements of the stored tensors of a CTranslate2 ``model.bin`` (scales and scalars excluded), read
    from the headers only. CTranslate2 keeps the zero key biases HF Whisper has not (d_model per attention
    block), so tiny.en counts 37,764,864 here against 37,760,256 in HF."""
    total = 0
    with open(model_bin, "rb") as f:
        def read(fmt: str):
            size = struct.calcsize("<" + fmt)
            data = f.read(size)
            if len(data) != size:
                raise UserError(f"{model_bin}: truncated CTranslate2 model.bin; download or export it again")
            return struct.unpack("<" + fmt, data)

        def string() -> str:
            (length,) = read("H")
            return f.read(length).rstrip(b"\x00").decode("utf-8")

        read("I")
        string()
        read("I")
        (count,) = read("I")
        for _ in range(count):
            name = string()
            (rank,) = read("B")
            dims = read(f"{rank}I") if rank else ()
            read("B")
            (nbytes,) = read("I")
            f.seek(nbytes, 1)
            if rank and not name.endswith("_scale"):
                total += int(np.prod(dims))
    return total


def ct2_config(path: Path) -> dict:
    """The ``config.json`` of a CTranslate2 directory as a dict (``{}`` when it has none)."""
    file = Path(path) / "config.json"
    if not file.is_file():
        return {}
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except ValueError as err:
        raise UserError(f"{file}: not valid JSON ({err})") from None
    return data if isinstance(data, dict) else {}


def ct2_window(config: dict, window: str | int | Window | None = None) -> Window:
    """:func:`whisperkd.models.window.resolve_window` for a CTranslate2 model, whose stored window is the
    ``whisperkd_window`` of its ``config.json`` (the dict an HF config holds) instead of a config attribute."""
    return resolve_window(SimpleNamespace(config=SimpleNamespace(**{WINDOW_KEY: config.get(WINDOW_KEY)})), window)


class CT2Whisper:
    """A CTranslate2 Whisper directory, decoded greedily with the decoder prompt of its tokenizer."""

    kind = "ctranslate2"
    loop_guard = False
    encoder_window: str | int | Window | None = None  # None: the stored window, else 30 s; seconds or "auto"

    def __init__(self, spec: str, device: str = "cpu", compute_type: str = "default"):
        ctranslate2.set_log_level(logging.ERROR)  # not the float16 -> float32 notice on CPU
        path = Path(spec).expanduser()
        if not (path / "model.bin").is_file():
            raise UserError(f"{path}: model.bin is split in parts; join them first (cat model.bin.part1 "
                            f"model.bin.part2 ... > model.bin)")
        self.path = path
        self.config = ct2_config(path)
        ct2_window(self.config)  # a stored window that is no window: refused now, not at the first clip
        on_cuda = str(device).startswith("cuda")
        index = int(str(device).split(":")[1]) if on_cuda and ":" in str(device) else 0
        try:
            self.model = ctranslate2.models.Whisper(
                str(path), device="cuda" if on_cuda else "cpu", device_index=index, compute_type=compute_type,
                intra_threads=0 if on_cuda else torch.get_num_threads())
        except (RuntimeError, ValueError) as err:
            raise UserError(f"{path}: CTranslate2 cannot load this model ({str(err).splitlines()[0]})") from None
        self.tokenizer = ct2_tokenizer(path)
        if self.model.is_multilingual:
            self.tokenizer.set_prefix_tokens(language="en", task="transcribe", predict_timestamps=False)
        else:
            self.tokenizer.set_prefix_tokens(predict_timestamps=False)
        self.prompt = list(self.tokenizer.prefix_tokens)
        self.features = WhisperFeatureExtractor(feature_size=self.model.n_mels)
        self.device, self.dtype = str(device), str(self.model.compute_type)
        self.parameters = ct2_parameter_count(path / "model.bin")
        self.trainable_parameters = None
        self.disk_bytes = directory_size(path)

    @property
    def window(self) -> Window:
        """The encoder window this engine decodes with (``encoder_window``, else the stored one, else 30 s)."""
        return ct2_window(self.config, self.encoder_window)

    def transcribe(self, audios: list[np.ndarray]) -> list[str]:
        feats = self.features(audios, sampling_rate=_transcribe.SAMPLE_RATE, return_tensors="np").input_features
        seconds = [len(a) / _transcribe.SAMPLE_RATE for a in audios]
        texts: list[str] = [""] * len(audios)
        # As the HF engine (whisperkd.models.decode.transcribe_arrays): one batch per window, cut to its frames.
        for window, members in window_batches(seconds, self.window, max(1, len(audios))):
            batch = np.ascontiguousarray(feats[members][..., :window * FRAMES_PER_SECOND], dtype=np.float32)
            cap = _transcribe.max_new_tokens_for(max(seconds[i] for i in members))
            # max_length also counts the prompt, and ctranslate2 4.x stops near max_length / 2 new tokens:
            # ask for enough and cut at the same cap as the HF engine (greedy decoding is prefix-stable).
            max_length = min(CT2_MAX_LENGTH, 2 * cap + len(self.prompt))
            results = self.model.generate(ctranslate2.StorageView.from_array(batch), [self.prompt] * len(members),
                                          beam_size=1, max_length=max_length)
            for i, r in zip(members, results):
                texts[i] = self.tokenizer.decode(r.sequences_ids[0][:cap], skip_special_tokens=True).strip()
        return _guarded(self, texts)


def open_model(spec: str, device: str = "cpu", dtype: torch.dtype | None = None, loop_guard: bool = False,
               encoder_window: str | int | None = None, fallback: _transcribe.Fallback | None = None):
    """An :class:`HFWhisper` or :class:`CT2Whisper` for ``spec``; UserError when it cannot be loaded.
    ``loop_guard``: cut repetition loops out of every transcript (whisperkd.evaluate.loops);
    ``encoder_window``: None (the window the model was trained for, else 30 s), seconds or "auto"
    (whisperkd.models.window), for HF and CTranslate2 models alike;
    ``fallback``: Whisper's temperature fallback (whisperkd.models.decode.Fallback), HF models only."""
    if is_ct2_dir(Path(spec).expanduser()):
        if fallback is not None:
            raise UserError(f"{spec}: --fallback works with HF models only; CTranslate2 models decode greedily")
        engine = CT2Whisper(spec, device=device)
        engine.encoder_window = encoder_window
    else:
        if dtype is None:
            dtype = torch.float16 if str(device).startswith("cuda") else torch.float32
        engine = HFWhisper(spec, device=device, dtype=dtype)
        engine.encoder_window = encoder_window
        engine.fallback = fallback
    engine.loop_guard = loop_guard
    return engine


def model_label(spec: str) -> str:
    """A short name for tables: the offline name, or the directory's name (``-ct2`` added for CTranslate2)."""
    path = Path(spec).expanduser()
    if not path.exists():
        return spec
    return path.resolve().name + ("-ct2" if is_ct2_dir(path) else "")
