"""CTranslate2 reading is exact: convert a tiny random HF Whisper with ctranslate2's own converter, import it back."""

from __future__ import annotations

import shutil
import struct

import numpy as np
import pytest
import torch
from helpers import tiny_whisper_config

from whisperkd.cli import main
from whisperkd.errors import UserError
from whisperkd.models.ct2_format import read_model_bin
from whisperkd.models.import_ct2 import build_from_ct2


@pytest.fixture(scope="module")
def tiny_hf_dir(tmp_path_factory, tiny_en_dir):
    """A tiny random Whisper (d_model 64, 2+2 layers) saved with the real tiny.en tokenizer."""
    from transformers import WhisperForConditionalGeneration, WhisperProcessor

    torch.manual_seed(0)
    model = WhisperForConditionalGeneration(tiny_whisper_config())
    with torch.no_grad():  # HF initialises biases to zero; make them non-trivial so the mapping is really checked
        for name, param in model.named_parameters():
            if name.endswith("bias") and "k_proj" not in name:
                param.normal_(0, 0.02)
    out = tmp_path_factory.mktemp("tiny_hf")
    model.save_pretrained(out)
    WhisperProcessor.from_pretrained(tiny_en_dir).save_pretrained(out)
    model.generation_config.save_pretrained(out)
    return out, model.state_dict()


def _convert(src, dst, quantization):
    import ctranslate2

    ctranslate2.converters.TransformersConverter(str(src), copy_files=["tokenizer.json"]).convert(str(dst), quantization=quantization, force=True)
    return dst


@pytest.mark.parametrize("quantization", ["float32", "float16", "int8"])
def test_import_back_reproduces_every_tensor(tiny_hf_dir, tmp_path, quantization):
    src, original = tiny_hf_dir
    ct2_dir = _convert(src, tmp_path / "ct2", quantization)
    model, processor, _ = build_from_ct2(ct2_dir)
    imported = model.state_dict()
    assert set(original) == set(imported)
    for name, ref in original.items():
        got = imported[name]
        assert got.shape == ref.shape, name
        if quantization == "float32":
            assert torch.equal(got, ref), name
        elif quantization == "float16":
            assert torch.equal(got, ref.half().float()), name
        else:  # int8 rows: w = q / scale with scale = 127 / max|row|, so the error is at most half a step
            if got.ndim == 2 and name.endswith(("proj.weight", "fc1.weight", "fc2.weight")) and "embed" not in name:
                step = ref.abs().amax(dim=1, keepdim=True) / 127
                assert torch.all((got - ref).abs() <= step / 2 + 1e-6), name
                assert not torch.equal(got, ref), f"{name} should carry int8 rounding"
            else:
                assert torch.allclose(got, ref, atol=1e-3), name
    assert len(processor.tokenizer) == model.config.vocab_size


def test_multi_part_model_bin_reads_like_one_file(tiny_hf_dir, tmp_path):
    ct2_dir = _convert(tiny_hf_dir[0], tmp_path / "ct2", "float32")
    whole, _ = read_model_bin(ct2_dir / "model.bin")
    split = tmp_path / "split"
    shutil.copytree(ct2_dir, split)
    data = (split / "model.bin").read_bytes()
    (split / "model.bin").unlink()
    cuts = [0, len(data) // 3, 2 * len(data) // 3, len(data)]
    for i in range(3):  # part10 would sort before part2 by name; numbering must be numeric
        (split / f"model.bin.part{i + 1}").write_bytes(data[cuts[i] : cuts[i + 1]])
    model, _, _ = build_from_ct2(split)
    ref, _, _ = build_from_ct2(ct2_dir)
    for name, tensor in ref.state_dict().items():
        assert torch.equal(tensor, model.state_dict()[name]), name


def test_truncated_model_bin_fails_with_one_line_naming_the_file(tiny_hf_dir, tmp_path, capsys):
    ct2_dir = _convert(tiny_hf_dir[0], tmp_path / "ct2", "float16")
    data = (ct2_dir / "model.bin").read_bytes()
    (ct2_dir / "model.bin").write_bytes(data[: int(len(data) * 0.39)])  # like the solidsforyou small wheels
    with pytest.raises(UserError, match=r"model\.bin: truncated"):
        build_from_ct2(ct2_dir)
    capsys.readouterr()
    assert main(["models", "import-ct2", str(ct2_dir), str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "model.bin" in err and "truncated" in err
    assert not (tmp_path / "out").exists()


def test_wrong_spec_name_is_refused(tiny_hf_dir, tmp_path):
    ct2_dir = _convert(tiny_hf_dir[0], tmp_path / "ct2", "float16")
    data = bytearray((ct2_dir / "model.bin").read_bytes())
    (length,) = struct.unpack_from("<H", data, 4)
    name = b"TransformerSpec"[: length - 1].ljust(length - 1, b"X")
    data[6 : 6 + length - 1] = name
    (ct2_dir / "model.bin").write_bytes(bytes(data))
    with pytest.raises(UserError, match=r"model\.bin: model spec is 'Transformer', expected 'WhisperSpec'"):
        build_from_ct2(ct2_dir)


def test_missing_directory_and_missing_tokenizer(tiny_hf_dir, tmp_path):
    with pytest.raises(UserError, match="not a directory"):
        build_from_ct2(tmp_path / "nope")
    ct2_dir = _convert(tiny_hf_dir[0], tmp_path / "ct2", "float16")
    (ct2_dir / "tokenizer.json").unlink()
    (ct2_dir / "vocabulary.json").unlink(missing_ok=True)
    with pytest.raises(UserError, match="tokenizer.json: missing"):
        build_from_ct2(ct2_dir)


def test_bfloat16_and_int8_scales_decode():
    from whisperkd.models.ct2_format import _to_array, dequantize

    values = np.array([1.5, -2.25, 3.0], dtype=np.float32)
    raw = (values.view(np.uint32) >> 16).astype(np.uint16).tobytes()
    assert np.array_equal(_to_array(memoryview(raw), "bfloat16", (3,)), values)
    q = {"w/weight": np.array([[127, -64], [10, 20]], dtype=np.int8), "w/weight_scale": np.array([127.0, 10.0], np.float32)}
    assert np.allclose(dequantize(q)["w/weight"], [[1.0, -64 / 127], [1.0, 2.0]])
