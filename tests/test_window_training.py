"""Training a student for a short encoder window (student.encoder_window): the window itself, batches of one
window, the windowed encoder outputs cached next to the teacher cache, and the stored window used by decoding."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from helpers import tiny_config
from whisperkd.config import config_from_dict
from whisperkd.data.sampler import SeededBatchSampler
from whisperkd.errors import UserError
from whisperkd.models.window import (FULL, Window, encoder_window, resolve_window, store_window, stored_window,
                                     window_batches)


def test_window_choice_and_names():
    auto = Window(None, step=2, margin=0.5)
    assert [auto.for_audio(s) for s in (0.2, 1.5, 1.6, 7.9, 40.0)] == [2, 2, 4, 10, 30]
    assert Window(10).for_audio(3.0) == 10 and FULL.full
    assert auto.tag() == "auto-step2-margin0.5" and Window(10).tag() == "10s"
    for bad in ({"seconds": 0}, {"seconds": 31}, {"step": 0}, {"margin": -1.0}):
        with pytest.raises(ValueError, match="encoder window"):
            Window(**bad)


def test_stored_window_round_trip_and_resolution(tiny_random_model, tmp_path):
    from transformers import WhisperForConditionalGeneration

    model = tiny_random_model
    assert stored_window(model) is None and resolve_window(model, None) == FULL
    store_window(model, Window(None, 2, 1.0))
    model.save_pretrained(tmp_path)
    loaded = WhisperForConditionalGeneration.from_pretrained(tmp_path)
    assert stored_window(loaded) == Window(None, 2, 1.0)
    assert resolve_window(loaded, None) == Window(None, 2, 1.0)  # not told: the model's own window
    assert resolve_window(loaded, "auto") == Window(None, 2, 1.0)
    assert resolve_window(loaded, 30) == FULL and resolve_window(loaded, 10) == Window(10)


def test_window_batches_hold_one_window_each():
    seconds = [3.0, 12.0, 4.0, 2.0, 14.0, 4.2, 29.0]
    plan = window_batches(seconds, Window(), batch_size=2)
    assert plan == [(30, [6]), (15, [1, 4]), (5, [0, 2]), (5, [3, 5])]
    assert window_batches(seconds, FULL, 4) == [(30, [0, 1, 2, 3]), (30, [4, 5, 6])]


def test_sampler_groups_batches_by_key():
    groups = [i % 3 for i in range(20)]
    sampler = SeededBatchSampler([1.0] * 20, batch_size=4, seed=3, groups=groups)
    batches = sampler.batches()
    assert sorted(i for b in batches for i in b) == list(range(20))
    assert all(len({groups[i] for i in b}) == 1 for b in batches)
    assert batches == SeededBatchSampler([1.0] * 20, batch_size=4, seed=3, groups=groups).batches()
    sampler.set_epoch(1)
    assert sampler.batches() != batches and len(sampler) == len(batches)


def test_config_refuses_what_a_window_cannot_train(tiny_setup, tmp_path):
    def check(message, **sections):
        with pytest.raises(UserError, match=message):
            cfg = config_from_dict(tiny_config(tiny_setup, tmp_path / "run", **sections))
            from whisperkd.distill.build import build_models
            build_models(cfg)

    check("student.encoder_window: .*fast", student={"decoder_layers": 2, "encoder_window": "fast"})
    check("student.encoder_window: .*cache.enabled=true", student={"decoder_layers": 2, "encoder_window": "auto"},
          cache={"enabled": False})
    check("student.encoder_window: needs the teacher's whole encoder, frozen",
          student={"decoder_layers": 2, "encoder_window": "auto", "train_encoder": True}, cache={"enabled": True})


@pytest.fixture(scope="module")
def windowed_run(tiny_setup, tmp_path_factory):
    from whisperkd.distill.trainer import train

    run_dir = tmp_path_factory.mktemp("windowed") / "run"
    raw = tiny_config(tiny_setup, run_dir, student={"decoder_layers": 2, "encoder_window": "auto", "window_step": 1},
                      cache={"enabled": True}, eval={"wer": True, "every": 3, "max_utterances": 4, "at_start": False})
    cfg = config_from_dict(raw)
    return cfg, train(cfg)


def test_windowed_outputs_are_the_encoder_under_each_utterance_window(windowed_run, tiny_setup):
    from whisperkd.data.loader import SpeechDataset
    from whisperkd.data.sources import open_source
    from whisperkd.distill.cache import cache_dir_of
    from whisperkd.distill.cache.windowed import WindowedEncoder
    from whisperkd.models.loading import load_model, load_processor

    cfg, _ = windowed_run
    window = cfg.student.window()
    store = WindowedEncoder(cache_dir_of(cfg), window, ["train", "dev"])
    teacher, processor = load_model(tiny_setup["teacher"]), load_processor(tiny_setup["teacher"])
    utts = list(open_source(tiny_setup["manifest"]))
    dataset = SpeechDataset(utts, processor)
    for i in (0, 4):
        example = dataset[i]
        seconds = window.for_audio(example["seconds"])  # 1.0-1.4 s + 0.5 s margin: a 2-s window
        assert seconds == 2 and store.frames(utts[i].id) == 50 * seconds
        with torch.no_grad(), encoder_window(teacher, seconds) as frames:
            direct = teacher.model.encoder(torch.as_tensor(example["input_features"])[None, :, :frames])
        torch.testing.assert_close(store.batch([utts[i].id])[0].float(), direct.last_hidden_state[0],
                                   atol=2e-3, rtol=2e-3)  # stored as float16


def test_a_batch_that_mixes_windows_is_refused(windowed_run, tiny_setup):
    from whisperkd.data.sources import open_source
    from whisperkd.distill.cache import cache_dir_of
    from whisperkd.distill.cache.windowed import WindowedEncoder

    cfg, _ = windowed_run
    store = WindowedEncoder(cache_dir_of(cfg), cfg.student.window(), ["train", "dev"])
    uid = next(iter(open_source(tiny_setup["manifest"]))).id
    split = next(s for s in store.splits if uid in s)
    split.index["fake"] = [*split.index[uid][:3], 150]  # a 3-s window's frame count
    with pytest.raises(UserError, match="mixes windows"):
        store.batch([uid, "fake"])


def test_the_saved_student_decodes_with_its_window_untold(windowed_run, tiny_setup, monkeypatch):
    from whisperkd.models import decode
    from whisperkd.models.loading import load_model, load_processor

    cfg, result = windowed_run
    history = json.loads((result.run_dir / "training_history.json").read_text())
    assert [e["step"] for e in history["evals"]] == [3, 6]  # dev WER under the window, every 3 steps
    final = result.run_dir / "student_final"
    assert json.loads((final / "config.json").read_text())["whisperkd_window"] == {
        "seconds": None, "step": 1, "margin": 0.5}
    model, processor = load_model(final), load_processor(final)
    seen = []
    real = decode.encoder_window

    def spy(m, seconds):
        seen.append(seconds)
        return real(m, seconds)

    monkeypatch.setattr(decode, "encoder_window", spy)
    audio = [np.zeros(16_000 * 3, np.float32) + 0.01, np.zeros(int(16_000 * 1.2), np.float32) + 0.01]
    untold = decode.transcribe_arrays(model, processor, audio, batch_size=8)
    assert seen == [4, 2]  # one batch per window, each the shortest whole second holding audio + 0.5 s
    assert decode.transcribe_arrays(model, processor, audio, window="auto") == untold
    decode.transcribe_arrays(model, processor, audio, window="off")
    assert seen[-1] == 30
    from whisperkd.evaluate.engines import open_model

    seen.clear()
    assert open_model(str(result.run_dir)).transcribe(audio) == untold  # `whisperkd evaluate TEACHER RUN`
    assert seen == [4, 2]


def test_another_window_keeps_the_teacher_cache(windowed_run, tiny_setup, tmp_path):
    from whisperkd.distill.build import build_models, read_splits
    from whisperkd.distill.cache import ensure_cache, run_splits

    cfg, _ = windowed_run
    raw = json.loads((result_dir := cfg.output.dir and __import__("pathlib").Path(cfg.output.dir))
                     .joinpath("training_config.json").read_text())
    raw["student"]["encoder_window"] = 3
    other = config_from_dict(raw)
    built = build_models(other)
    report = ensure_cache(other, built, run_splits(*read_splits(other)), progress=False)
    assert sum(report.computed.values()) == 0 and report.shards_reused > 0  # the teacher cache is reused
    assert report.windowed == "3 s" and report.windowed_computed == 16  # 12 train + 4 dev, under the new window
