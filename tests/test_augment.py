"""Audio augmentation (data.augment): the four effects, their determinism, labels, config, cache keys, training."""

from __future__ import annotations

import hashlib
import json
import random
import subprocess
import sys

import numpy as np
import pytest
import torch
from transformers import WhisperForConditionalGeneration
from transformers.models.whisper.modeling_whisper import WhisperModel, _compute_mask_indices

import whisperkd.distill.trainer as trainer
from helpers import tiny_config, tiny_whisper_config
from whisperkd.config import AugmentConfig, config_from_dict
from whisperkd.data.audio import SAMPLE_RATE
from whisperkd.data.augment import (DIRECT_TO_REVERB_DB, AugmentedUtterance, AugmentSettings, add_noise,
                                    augmented_copies, change_speed, effect_rng, reverberate, rms,
                                    room_impulse_response, spec_augment, speed_factor)
from whisperkd.data.loader import SpeechDataset, make_loader
from whisperkd.data.sources import open_source
from whisperkd.data.utterance import Utterance
from whisperkd.distill.build import augment_settings, read_splits
from whisperkd.distill.cache import CachedSpeechDataset, CachedTeacher, build_cache, check_cache
from whisperkd.distill.cache.key import utterance_fingerprints
from whisperkd.distill.cache.store import read_meta
from whisperkd.distill.teacher_batch import TeacherNeeds
from whisperkd.errors import UserError
from whisperkd.models.loading import load_processor

ALL_ON = {"noise_prob": 1.0, "speed_prob": 1.0, "reverb_prob": 1.0, "specaugment_prob": 1.0,
          "mask_time_prob": 0.1, "mask_feature_prob": 0.1}


def clip(seconds: float = 2.0, freq: float = 300.0) -> np.ndarray:
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    return (0.3 * np.sin(2 * np.pi * freq * t) * (1 + 0.5 * np.sin(2 * np.pi * 3 * t))).astype(np.float32)


def utterances(n: int = 3) -> list[Utterance]:
    return [Utterance(f"u{i}", clip(1.0 + 0.2 * i, 200.0 + 50 * i), text, sample_rate=SAMPLE_RATE)
            for i, text in enumerate(["the cat sat", "a quick brown fox", "open the door please"][:n])]


def peak_hz(audio: np.ndarray) -> float:
    spectrum = np.abs(np.fft.rfft(audio))
    return float(np.argmax(spectrum) * SAMPLE_RATE / len(audio))


@pytest.fixture(scope="module")
def processor(tiny_en_dir):
    return load_processor(tiny_en_dir)


# ---------------------------------------------------------------- the effects

@pytest.mark.parametrize("snr_db", [0.0, 10.0, 25.0])
def test_noise_hits_the_snr_and_keeps_shape(snr_db):
    audio = clip()
    out = add_noise(audio, snr_db, np.random.default_rng(0))
    assert out.shape == audio.shape and out.dtype == np.float32
    assert 20 * np.log10(rms(audio) / rms(out - audio)) == pytest.approx(snr_db, abs=0.05)


def test_speed_changes_length_and_pitch_by_the_factor_capped_at_30_s():
    audio = clip(2.0, 400.0)
    for factor in (0.9, 1.0, 1.1):
        out = change_speed(audio, factor)
        assert out.dtype == np.float32 and abs(len(out) - len(audio) / factor) <= 1
        assert peak_hz(out) == pytest.approx(400.0 * factor, rel=0.01)  # tempo and pitch change together
    long = np.tile(clip(1.0), 29)  # 29 s: slowed to 0.9 it would be 32.2 s
    factor = speed_factor(0.9, len(long))
    assert factor == pytest.approx(29 / 30)
    assert len(change_speed(long, factor)) == 30 * SAMPLE_RATE
    assert speed_factor(0.9, 31 * SAMPLE_RATE) == 1.0 and speed_factor(1.1, 31 * SAMPLE_RATE) == 1.1
    copy = augmented_copies([Utterance("x", long, "t", 29.0, sample_rate=SAMPLE_RATE)],
                            AugmentSettings(copies=1, speed_prob=1.0, speed_range=(0.9, 0.9), noise_prob=0,
                                            reverb_prob=0, specaugment_prob=0))[1]
    assert copy.duration == pytest.approx(30.0) and len(copy.augment_audio(long)) == 30 * SAMPLE_RATE


def test_reverb_keeps_shape_and_level_and_decays_by_60_db_over_rt60():
    audio = clip()
    out = reverberate(audio, 0.5, np.random.default_rng(0))
    assert out.shape == audio.shape and out.dtype == np.float32 and not np.allclose(out, audio)
    assert rms(out) == pytest.approx(rms(audio), rel=1e-4)
    rir = room_impulse_response(0.6, np.random.default_rng(1))
    assert len(rir) == int(0.6 * SAMPLE_RATE) and rir[0] == 1.0
    assert 10 * np.log10(1.0 / np.sum(rir[1:] ** 2)) == pytest.approx(DIRECT_TO_REVERB_DB, abs=1e-6)
    window = 800
    early, late = (np.sqrt(np.mean(rir[a:a + window] ** 2)) for a in (1, int(0.2 * SAMPLE_RATE)))
    assert 20 * np.log10(early / late) == pytest.approx(20.0, abs=3.0)  # 60 dB over 0.6 s: 20 dB at 0.2 s


def test_specaugment_masks_like_transformers():
    """Masked values are 0, as transformers' Whisper _mask_input_features sets them (run here on a tiny model);
    the masked fraction matches transformers' _compute_mask_indices drawn with the same options."""
    settings = AugmentSettings(mask_time_prob=0.2, mask_time_length=10, mask_feature_prob=0.3, mask_feature_length=8)
    features = np.random.default_rng(0).uniform(0.5, 1.5, (80, 3000)).astype(np.float32)
    model = WhisperModel(tiny_whisper_config(apply_spec_augment=True, mask_time_prob=0.2, mask_feature_prob=0.3,
                                             mask_feature_length=8)).train()
    state = np.random.get_state()
    try:
        theirs = model._mask_input_features(torch.from_numpy(features.copy())[None])[0].numpy()
        their_time = np.mean([_compute_mask_indices((1, 3000), 0.2, 10, min_masks=2)[0].mean() for _ in range(60)])
        their_mel = np.mean([_compute_mask_indices((1, 80), 0.3, 8)[0].mean() for _ in range(200)])
    finally:
        np.random.set_state(state)
    assert set(np.unique(theirs[theirs != features])) == {0.0}
    ours = [spec_augment(features, 3000, np.random.default_rng(i), settings) for i in range(200)]
    assert all(o.shape == features.shape and o.dtype == np.float32 for o in ours)
    assert all(set(np.unique(o[o != features])) == {0.0} for o in ours)  # masked = 0, the rest untouched
    time = np.mean([(o == 0).all(axis=0).mean() for o in ours[:60]])
    mel = np.mean([(o == 0).all(axis=1).mean() for o in ours])
    assert 0.15 < time < 0.2 and time == pytest.approx(their_time, abs=0.01)
    assert mel == pytest.approx(their_mel, abs=0.03)
    short = spec_augment(features, 300, np.random.default_rng(1), AugmentSettings(mask_feature_prob=0.0))
    masked = np.flatnonzero((short == 0).all(axis=0))
    assert len(masked) >= 10 and masked.max() < 300  # time masks fall on the audio, not on the padding


# One copy's augmented samples and log-mel, hashed; run here and in a fresh process (so it is a script).
HASH_SCRIPT = """
import hashlib
import numpy as np
from whisperkd.data.augment import AugmentSettings, augmented_copies
from whisperkd.data.utterance import Utterance

def augment_hash(seed, uid, copy, audio):
    settings = AugmentSettings(copies=copy, seed=seed, noise_prob=1.0, speed_prob=1.0, reverb_prob=1.0,
                               specaugment_prob=1.0, mask_time_prob=0.1, mask_feature_prob=0.1)
    utt = augmented_copies([Utterance(uid, audio, "t", sample_rate=16000)], settings)[copy]
    features = utt.augment_features(np.ones((80, 3000), np.float32), 200)
    return hashlib.sha256(utt.augment_audio(audio).tobytes() + features.tobytes()).hexdigest()
"""


def test_draws_depend_only_on_seed_id_and_copy(tmp_path):
    scope: dict = {}
    exec(HASH_SCRIPT, scope)
    audio = clip()

    def augment_hash(seed, uid, copy):
        return scope["augment_hash"](seed, uid, copy, audio)

    np_state, py_state = np.random.get_state(), random.getstate()
    first = augment_hash(0, "a", 1)
    others = {augment_hash(1, "a", 1), augment_hash(0, "b", 1), augment_hash(0, "a", 2)}
    assert augment_hash(0, "a", 1) == first and first not in others and len(others) == 3
    assert all(a == b for a, b in zip(np.random.get_state(), np_state) if not isinstance(a, np.ndarray))
    assert np.array_equal(np.random.get_state()[1], np_state[1]) and random.getstate() == py_state  # left alone
    np.random.seed(123)  # and the global state plays no part
    assert augment_hash(0, "a", 1) == first
    np.random.set_state(np_state)
    np.save(audio_path := tmp_path / "audio.npy", audio)
    code = HASH_SCRIPT + f"\nprint(augment_hash(0, 'a', 1, np.load({str(audio_path)!r})))"
    other = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert other.stdout.strip() == first
    assert effect_rng(0, "a", 1, "noise").random() != effect_rng(0, "a", 1, "speed").random()


def test_copies_keep_the_labels_and_dev_is_never_augmented(processor, tiny_setup):
    clean = utterances()
    settings = AugmentSettings(copies=2, **ALL_ON)
    data = augmented_copies(clean, settings)
    assert [u.id for u in data] == ["u0", "u1", "u2", "u0#aug1", "u1#aug1", "u2#aug1", "u0#aug2", "u1#aug2",
                                    "u2#aug2"]
    assert all(isinstance(u, AugmentedUtterance) for u in data[3:]) and data[:3] == clean
    dataset = SpeechDataset(data, processor, durations=None)
    examples = [dataset[i] for i in range(len(data))]
    for i, example in enumerate(examples):
        source = examples[i % 3]
        assert example["text"] == source["text"] and example["tokens"] == source["tokens"]
        assert example["input_features"].shape == (80, 3000) and example["input_features"].dtype == np.float32
        if i >= 3:
            assert not np.array_equal(example["input_features"], source["input_features"])
    raw = tiny_config(tiny_setup, tiny_setup["root"] / "unused", data={"augment": {"copies": 1, **ALL_ON}})
    train, dev = read_splits(config_from_dict(raw))
    assert len(train) == 24 and sum(isinstance(u, AugmentedUtterance) for u in train) == 12
    assert dev and not any(isinstance(u, AugmentedUtterance) or "#aug" in u.id for u in dev)
    assert {u.source_id for u in train[12:]} == {u.id for u in train[:12]}


@pytest.mark.parametrize("override, message", [
    ("data.augment.copies=-1", "config data.augment.copies: must be 0 (off) or a positive count"),
    ("data.augment.noise_prob=1.5", "config data.augment.noise_prob: must be a probability in [0, 1]"),
    ("data.augment.mask_time_prob=-0.1", "config data.augment.mask_time_prob: must be a probability in [0, 1]"),
    ("data.augment.speed_range=[1.1,0.9]", "config data.augment.speed_range: give [low, high] with 0 < low <= high"),
    ("data.augment.speed_range=[0,1]", "config data.augment.speed_range: give [low, high] with 0 < low"),
    ("data.augment.noise_snr_db=[5]", "config data.augment.noise_snr_db: give [low, high] with low <= high"),
    ("data.augment.reverb_rt60=[0.5,0.2]", "config data.augment.reverb_rt60: give [low, high]"),
    ("data.augment.mask_time_length=0", "config data.augment.mask_time_length: must be in 1..3000"),
    ("data.augment.mask_feature_length=81", "config data.augment.mask_feature_length: must be in 1..80"),
    ("data.augment.copies=true", "config data.augment.copies: expected an integer, got True (bool)"),
    ("data.augment.nosie_prob=0.5", "config data.augment.nosie_prob: unknown key; valid keys: copies, seed,"),
])
def test_config_errors_are_one_line_and_name_the_key(override, message):
    with pytest.raises(UserError) as err:
        config_from_dict({"student": {"decoder_layers": 2}}, [override])
    assert str(err.value).startswith(message) and "\n" not in str(err.value)


def test_config_section_mirrors_the_data_settings():
    cfg = config_from_dict({"student": {"decoder_layers": 2}}, ["data.augment.copies=2", "data.augment.seed=5"])
    assert augment_settings(cfg) == AugmentSettings(copies=2, seed=5)
    assert augment_settings(config_from_dict({"student": {"decoder_layers": 2}})) == AugmentSettings()
    assert config_from_dict(cfg.to_dict()) == cfg
    assert list(AugmentConfig.__dataclass_fields__) == list(AugmentSettings.__dataclass_fields__)


def test_copies_zero_changes_nothing(tiny_setup, processor):
    """copies=0: the same utterances, fingerprints and byte-identical batches as data without the section."""
    plain = list(open_source(tiny_setup["manifest"]))
    cfg = config_from_dict(tiny_config(tiny_setup, tiny_setup["root"] / "unused", data={"dev_fraction": 0.0}))
    train, _ = read_splits(cfg)
    assert train == plain and not any(isinstance(u, AugmentedUtterance) for u in train)
    assert augmented_copies(plain, augment_settings(cfg)) is plain
    utt = plain[0]
    identity = f"stat:{utt.path.name}:{utt.path.stat().st_size}:{utt.path.stat().st_mtime_ns}"
    record = json.dumps([utt.id, utt.text, identity], ensure_ascii=False)  # the key of a clean utterance, as ever
    assert utterance_fingerprints([utt]) == [hashlib.sha256(record.encode()).hexdigest()[:16]]
    one = augmented_copies(plain, AugmentSettings(copies=1, **ALL_ON))
    for data in (train, one[:len(plain)]):  # the clean half of an augmented set is untouched too
        got = list(make_loader(data, processor, batch_size=4, seed=2, num_workers=0))
        want = list(make_loader(plain, processor, batch_size=4, seed=2, num_workers=0))
        assert len(got) == len(want) == 4
        for a, b in zip(got, want):
            assert a["ids"] == b["ids"] and a["texts"] == b["texts"]
            for key in ("input_features", "decoder_input_ids", "labels", "decoder_attention_mask"):
                assert a[key].dtype == b[key].dtype and a[key].numpy().tobytes() == b[key].numpy().tobytes(), key


# ---------------------------------------------------------------- the teacher cache

def test_cache_keys_copies_by_their_augmentation(tmp_path, processor):
    """A copy's fingerprint follows its settings, a clean one's does not; a changed setting recomputes the copies
    only; the cached encoder outputs of a copy are the teacher's on the augmented input."""
    torch.manual_seed(0)
    teacher = WhisperForConditionalGeneration(tiny_whisper_config()).eval()
    clean = utterances()
    first, second = AugmentSettings(copies=1, **ALL_ON), AugmentSettings(copies=1, **{**ALL_ON, "noise_prob": 0.0})
    a, b = augmented_copies(clean, first), augmented_copies(clean, second)
    assert utterance_fingerprints(a[:3]) == utterance_fingerprints(b[:3])
    assert all(x != y for x, y in zip(utterance_fingerprints(a[3:]), utterance_fingerprints(b[3:])))
    reseeded = augmented_copies(clean, AugmentSettings(copies=1, seed=1, **ALL_ON))
    assert utterance_fingerprints(reseeded[3:]) != utterance_fingerprints(a[3:])

    cache_dir = tmp_path / "cache"
    report = build_cache(teacher, processor, {"train": a}, cache_dir, progress=False)
    assert report.utterances == {"train": 3, "train-aug1": 3} and report.computed == {"train": 3, "train-aug1": 3}
    assert check_cache(cache_dir, teacher, processor, {"train": a}) == []
    assert check_cache(cache_dir, teacher, processor, {"train": b}) == [
        "train-aug1 data: 3 of 3 utterances differ (id, text, audio or augmentation)"]
    report = build_cache(teacher, processor, {"train": b}, cache_dir, progress=False)
    assert report.rebuilt and report.computed == {"train": 0, "train-aug1": 3} and report.shards_reused == 1

    needs = TeacherNeeds(logits=False, encoder=True)
    cached = CachedTeacher(cache_dir, "train", needs)
    batch = next(iter(make_loader(b, processor, batch_size=6, shuffle=False, num_workers=0, durations=None)))
    with torch.no_grad():
        online = teacher.model.encoder(batch["input_features"]).last_hidden_state
    stored = cached(batch).encoder_hidden_states
    torch.testing.assert_close(stored, online, rtol=2e-3, atol=2e-3)  # float16 in the cache
    assert not torch.allclose(stored[3], stored[0], atol=1e-3)  # a copy is not its clean source
    dataset = CachedSpeechDataset(cache_dir, b, "train")
    assert [dataset[i]["tokens"].tolist() for i in range(3)] == [dataset[i + 3]["tokens"].tolist() for i in range(3)]

    report = build_cache(teacher, processor, {"train": clean}, cache_dir, progress=False)  # copies back to 0
    assert report.computed == {"train": 0} and "train-aug1" not in read_meta(cache_dir)["complete"]
    # the copies' split stays on disk (another config may want it): asked for again, its shards are reused
    report = build_cache(teacher, processor, {"train": b}, cache_dir, progress=False)
    assert report.computed == {"train": 0, "train-aug1": 0}


# ---------------------------------------------------------------- a tiny distillation

def test_tiny_distillation_trains_on_clean_and_augmented_copies(tiny_setup, tmp_path, monkeypatch):
    """data.augment.copies=1 with all four effects: online and from the cache, a run sees every training
    utterance and its copy once per epoch, the same batches in the same order, with the same losses (the cache
    holds the teacher's outputs on the augmented inputs; float16 encoder outputs are the only difference)."""
    seen: dict[bool, list] = {False: [], True: []}
    original = trainer.loss_parts
    cached = False

    def recording(model, batch, teacher, *args, step=None, **kwargs):
        if step is not None:
            seen[cached].append((batch["ids"], batch["input_features"] is None))
        return original(model, batch, teacher, *args, step=step, **kwargs)

    monkeypatch.setattr(trainer, "loss_parts", recording)
    losses = {}
    for cached in (False, True):
        raw = tiny_config(tiny_setup, tmp_path / f"run-{cached}", data={"augment": {"copies": 1, **ALL_ON},
                                                                        "memo_size": 0},
                          teacher={"memo_size": 0}, cache={"enabled": cached, "shard_size": 8},
                          train={"max_steps": 6, "batch_size": 4, "log_every": 1, "progress": False})
        result = trainer.train(config_from_dict(raw))
        losses[cached] = [s["loss"] for s in result.history["steps"]]
        assert len(losses[cached]) == 6 and None not in losses[cached]
        ids = [i for batch, _ in seen[cached] for i in batch]
        assert len(ids) == len(set(ids)) == 24  # one epoch: 12 training utterances and their 12 copies
        assert sum("#aug1" in i for i in ids) == 12
        assert all(no_features == cached for _, no_features in seen[cached])  # the cached run reads no audio
    assert [b for b, _ in seen[True]] == [b for b, _ in seen[False]]
    assert losses[True] == pytest.approx(losses[False], rel=1e-2)
    meta = json.loads((tmp_path / "run-True" / "teacher_cache" / "cache.json").read_text())
    assert set(meta["complete"]) == {"train", "train-aug1", "dev"}
