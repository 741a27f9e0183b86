"""Write the two export formats of a merged Hugging Face Whisper directory.

- :func:`write_hf`: the model (float32 or float16), its generation config and its processor, with the feature
  extractor also saved as ``preprocessor_config.json`` (transformers 5 folds it into ``processor_config.json``;
  older transformers and faster-whisper read the separate file). The config keeps whisperkd's keys
  (``whisperkd_window``, ``whisperkd_output_layer``): ``save_pretrained`` writes what ``from_pretrained`` read.
- :func:`write_ct2`: ctranslate2's own converter (``ctranslate2.converters.TransformersConverter``) with
  ``tokenizer.json`` copied, plus ``preprocessor_config.json``, so that ``faster_whisper.WhisperModel(DIR)``
  loads the folder as it is; the student's encoder window goes into CTranslate2's ``config.json`` under
  ``whisperkd_window`` (the dict of the HF config), where :class:`whisperkd.evaluate.engines.CT2Whisper`
  reads it.

Both write into a new folder that :func:`whisperkd.deploy.export.export_model` renames into place when the
export is complete (the folder is the atomic unit).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import ctranslate2
import torch

from whisperkd.errors import UserError
from whisperkd.models.hf_dir import load_hf_model, load_hf_processor
from whisperkd.models.output_layer import mark_int8
from whisperkd.models.window import CONFIG_KEY as WINDOW_KEY

HF_DTYPES = {"float32": torch.float32, "float16": torch.float16}
CT2_QUANTIZATIONS = ("int8", "int8_float32", "float16", "float32")
FEATURES_FILE = "preprocessor_config.json"
EXTRA_FILES = ("normalizer.json",)  # Whisper's English spelling map, which the tokenizer's normalize() reads


def write_hf(hf_dir: Path, dest: Path, quantization: str = "float32", output_layer: str | None = None):
    """Save the Whisper of ``hf_dir`` into ``dest`` (a new or empty folder) with weights in ``quantization``
    (float32 or float16); ``output_layer`` ("float32" or "int8") replaces the config's output-layer choice.
    Returns the model as saved."""
    if quantization not in HF_DTYPES:
        raise UserError(f"--quantization {quantization}: the hf format takes {' or '.join(HF_DTYPES)}")
    model = load_hf_model(Path(hf_dir), dtype=HF_DTYPES[quantization])
    processor = load_hf_processor(Path(hf_dir))
    if output_layer is not None:
        mark_int8(model, output_layer)
    model.save_pretrained(str(dest))
    processor.save_pretrained(str(dest))
    processor.feature_extractor.save_pretrained(str(dest))
    for name in EXTRA_FILES:
        if (Path(hf_dir) / name).is_file() and not (Path(dest) / name).exists():
            shutil.copyfile(Path(hf_dir) / name, Path(dest) / name)
    return model


def write_ct2(hf_dir: Path, dest: Path, quantization: str = "int8", window: dict | None = None) -> Path:
    """Convert the HF Whisper directory ``hf_dir`` (float32 weights, the exact merged student) with
    ctranslate2's converter into ``dest`` (created; replaced when it exists) with weights in ``quantization``;
    ``window``: the ``whisperkd_window`` dict to store in the CTranslate2 config (None: none stored)."""
    if quantization not in CT2_QUANTIZATIONS:
        raise UserError(f"--quantization {quantization}: the ct2 format takes {', '.join(CT2_QUANTIZATIONS)}")
    hf_dir, dest = Path(hf_dir), Path(dest)
    for name in ("tokenizer.json", FEATURES_FILE):
        if not (hf_dir / name).is_file():
            raise UserError(f"{hf_dir}: no {name}; export the model with --format hf first and convert that folder")
    converter = ctranslate2.converters.TransformersConverter(str(hf_dir), copy_files=["tokenizer.json", FEATURES_FILE])
    try:
        converter.convert(str(dest), quantization=quantization, force=True)
    except (ValueError, NotImplementedError, RuntimeError) as err:
        raise UserError(f"{hf_dir}: ctranslate2 cannot convert this model ({str(err).splitlines()[0]})") from None
    if window is not None:
        config_file = dest / "config.json"
        config = json.loads(config_file.read_text(encoding="utf-8"))
        config[WINDOW_KEY] = dict(window)
        config_file.write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    return dest
