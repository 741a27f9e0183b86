"""Teacher cache on tiny random models: what is stored, staleness, resuming, CachedTeacher, the command."""

from __future__ import annotations

import dataclasses
import json
import os

import numpy as np
import pytest
import soundfile as sf
import torch
from transformers import WhisperForConditionalGeneration

from helpers import tiny_whisper_config
from whisperkd.cli import main
from whisperkd.config import CacheConfig
from whisperkd.data.audio import DurationFilter
from whisperkd.data.batches import TrainBatches
from whisperkd.data.collate import WhisperCollator
from whisperkd.data.loader import SpeechDataset, make_loader, utterance_lengths
from whisperkd.data.manifest import read_manifest
from whisperkd.data.skiplog import SkipLog
from whisperkd.distill.cache import (CachedSpeechDataset, CachedTeacher, CachePlan, build_cache,
                                     cache_loader, check_cache)
from whisperkd.distill.cache import store as cache_store
from whisperkd.distill.losses import kl_divergence, kl_divergence_topk
from whisperkd.distill.teacher import OnlineTeacher
from whisperkd.distill.teacher_batch import TeacherNeeds
from whisperkd.errors import UserError
from whisperkd.models.loading import load_processor

T = 2.0
TEXTS = ["the cat sat on the mat", "a quick brown fox", "she sells sea shells", "it is a test",
         "hello world again", "birds fly south in winter", "one two three four", "rain falls on the plain",
         "open the door please", "time flies like an arrow"]


def teacher_model(seed: int = 0) -> WhisperForConditionalGeneration:
    torch.manual_seed(seed)
    return WhisperForConditionalGeneration(tiny_whisper_config()).eval()


def settings(k: int = 16, **plan) -> tuple[CacheConfig, CachePlan]:
    """The ``cache`` and ``plan`` arguments of build_cache: the config section and what the run asks of it."""
    return CacheConfig(topk=k, shard_size=4, batch_size=2), CachePlan(**{"temperature": T, "min_seconds": 0.5, **plan})


def write_corpus(folder, texts=TEXTS):
    """Short tone clips (the random teacher does not care what is said) and a manifest."""
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for i, text in enumerate(texts):
        seconds = 1.0 + 0.25 * i
        t = np.arange(int(seconds * 16000)) / 16000
        audio = (0.3 * np.sin(2 * np.pi * (200 + 40 * i) * t)).astype(np.float32)
        sf.write(str(folder / f"u{i}.wav"), audio, 16000)
        rows.append({"id": f"u{i}", "audio": f"u{i}.wav", "text": text, "duration": seconds, "speaker": f"s{i % 3}"})
    (folder / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return folder / "manifest.jsonl"


@pytest.fixture(scope="module")
def processor(tiny_en_dir):
    return load_processor(tiny_en_dir)


@pytest.fixture
def corpus(tmp_path):
    utts = read_manifest(write_corpus(tmp_path / "corpus"))
    return {"train": utts[:7], "dev": utts[7:]}


@pytest.fixture(scope="module")
def built(tmp_path_factory, processor):
    """One cache of the module's corpus (k = 16, all hidden layers, encoder outputs)."""
    folder = tmp_path_factory.mktemp("cache")
    utts = read_manifest(write_corpus(folder / "corpus"))
    splits = {"train": utts[:7], "dev": utts[7:]}
    teacher = teacher_model()
    report = build_cache(teacher, processor, splits, folder / "cache", *settings(), progress=False)
    return teacher, splits, folder / "cache", report


def batches(utts, processor, batch_size=4):
    return list(make_loader(utts, processor, batch_size=batch_size, shuffle=False, num_workers=0,
                            durations=None))


def test_cache_holds_the_teacher_outputs(built, processor):
    teacher, splits, cache_dir, report = built
    assert report.utterances == {"train": 7, "dev": 3} and report.shards_written == 3 and report.skipped == 0
    assert report.bytes_per_utterance > 1500 * 64 * 2  # the encoder output alone is 1500 x 64 in float16
    assert report.parts_bytes["encoder_outputs"] == 1500 * 64 * 2
    needs = TeacherNeeds(hidden_layers=(0, 1), encoder=True)
    full = CachedTeacher(cache_dir, None, needs, temperature=T)
    cached = CachedTeacher(cache_dir, None, needs, temperature=T, logits="topk")
    online = OnlineTeacher(teacher, needs)
    for batch in batches(splits["train"] + splits["dev"], processor):
        got, want = cached(batch), online(batch)
        mask = batch["labels"] != -100
        rebuilt = full(batch)
        assert rebuilt.topk_logprobs is None and rebuilt.logits.shape == want.logits.shape
        torch.testing.assert_close(rebuilt.logits[mask], want.logits[mask], atol=1e-5, rtol=1e-5)
        assert torch.isfinite(rebuilt.logits).all()
        assert got.logits is None and got.topk_logprobs.dtype == torch.float32 and got.topk_indices.dtype == torch.int64
        assert got.topk_logprobs.shape == (*batch["labels"].shape, 16) and got.topk_temperature == T
        log_p = torch.log_softmax(want.logits / T, dim=-1)
        expected, _ = log_p.topk(16, dim=-1)
        torch.testing.assert_close(got.topk_logprobs[mask], expected[mask], atol=1e-5, rtol=0)
        torch.testing.assert_close(log_p.gather(-1, got.topk_indices)[mask], got.topk_logprobs[mask],
                                   atol=1e-5, rtol=0)
        assert torch.isfinite(got.topk_logprobs).all()  # padding too (masked terms must not give NaN)
        for layer in (0, 1):
            torch.testing.assert_close(got.hidden_states[layer][mask], want.hidden_states[layer][mask],
                                       atol=2e-2, rtol=2e-3)
        torch.testing.assert_close(got.encoder_hidden_states, want.encoder_hidden_states, atol=2e-2, rtol=2e-3)


def test_cached_kl_equals_the_online_kl(tmp_path, processor, corpus):
    """Full logits from the final states give the online KL at any T; top-k with k = V gives it too."""
    teacher = teacher_model()
    vocab = teacher.config.vocab_size
    splits = {"train": corpus["train"][:3]}
    build_cache(teacher, processor, splits, tmp_path / "cache", *settings(k=vocab, hidden_layers=()),
                progress=False)
    torch.manual_seed(1)
    student = WhisperForConditionalGeneration(tiny_whisper_config(decoder_layers=1)).eval()
    topk = CachedTeacher(tmp_path / "cache", "train", TeacherNeeds(encoder=True), temperature=T, logits="topk")
    full = CachedTeacher(tmp_path / "cache", "train", TeacherNeeds(encoder=True))
    online = OnlineTeacher(teacher, TeacherNeeds(encoder=True))
    for batch in batches(splits["train"], processor, batch_size=3):
        got, rebuilt, want = topk(batch), full(batch), online(batch)
        logits = student(encoder_outputs=(want.encoder_hidden_states,), decoder_input_ids=batch["decoder_input_ids"]).logits
        reference = kl_divergence(want.logits, logits, batch["labels"], T)
        from_topk = kl_divergence_topk(got.topk_logprobs, got.topk_indices, logits, batch["labels"], T)
        torch.testing.assert_close(from_topk, reference, rtol=1e-4, atol=1e-7)
        for temperature in (1.0, T, 4.0):
            torch.testing.assert_close(kl_divergence(rebuilt.logits, logits, batch["labels"], temperature),
                                       kl_divergence(want.logits, logits, batch["labels"], temperature),
                                       rtol=1e-5, atol=1e-8)


def test_stale_inputs_are_refused_or_rebuilt(tmp_path, processor, corpus):
    teacher = teacher_model()
    cache_dir = tmp_path / "cache"
    build_cache(teacher, processor, corpus, cache_dir, *settings(), progress=False)
    assert check_cache(cache_dir, teacher, processor, corpus, *settings()) == []

    changed_text = dict(corpus, train=[*corpus["train"][:-1],
                                       dataclasses.replace(corpus["train"][-1], text="a different transcript")])
    with pytest.raises(UserError, match=r"train data: 1 of 7 utterances differ"):
        build_cache(teacher, processor, changed_text, cache_dir, *settings(), on_stale="refuse", progress=False)
    with pytest.raises(UserError, match="teacher weights"):
        build_cache(teacher_model(seed=1), processor, corpus, cache_dir, *settings(), on_stale="refuse", progress=False)
    with pytest.raises(UserError, match=r"k 16 -> 32"):
        build_cache(teacher, processor, corpus, cache_dir, *settings(k=32), on_stale="refuse", progress=False)
    with pytest.raises(UserError, match=r"temperature 2.0 -> 1.0"):
        build_cache(teacher, processor, corpus, cache_dir, *settings(temperature=1.0), on_stale="refuse",
                    progress=False)

    audio = corpus["dev"][0].audio  # same name and size, new content and mtime
    data, rate = sf.read(str(audio))
    sf.write(str(audio), data[::-1].copy(), rate)
    os.utime(audio, ns=(0, 12345))
    assert "dev data: 1 of 3 utterances differ (id, text or audio)" in check_cache(cache_dir, teacher, processor,
                                                                                  corpus, *settings())
    with pytest.raises(UserError, match="dev data"):
        build_cache(teacher, processor, corpus, cache_dir, *settings(), on_stale="refuse", progress=False)

    # rebuild: only the changed split is recomputed
    report = build_cache(teacher, processor, changed_text, cache_dir, *settings(), on_stale="rebuild", progress=False)
    assert report.rebuilt and report.computed == {"train": 7, "dev": 3}
    report = build_cache(teacher, processor, corpus, cache_dir, *settings(), on_stale="rebuild", progress=False)
    assert report.computed == {"train": 7, "dev": 0} and report.shards_reused == 1
    needs = TeacherNeeds(encoder=True)
    batch = batches(corpus["train"], processor, batch_size=7)[0]
    CachedTeacher(cache_dir, None, needs, temperature=T)(batch)
    batch["labels"][0, 2] = 11  # a label the cache was not built on
    with pytest.raises(UserError, match="other labels than when the cache was built"):
        CachedTeacher(cache_dir, None, needs, temperature=T)(batch)


def test_interrupted_build_resumes_without_recomputing(tmp_path, processor, corpus):
    teacher = teacher_model()
    calls = []

    def count(module, args, output):
        calls.append(1)
        if stop_after is not None and len(calls) > stop_after:
            raise KeyboardInterrupt("simulated interruption")

    hook = teacher.model.decoder.register_forward_hook(count)
    stop_after = 2  # shard 0 holds 4 utterances = 2 teacher batches: stop inside shard 1
    with pytest.raises(KeyboardInterrupt):
        build_cache(teacher, processor, corpus, tmp_path / "cache", *settings(), progress=False)
    first = tmp_path / "cache" / "train" / cache_store.shard_name(0)
    assert first.is_file() and not (tmp_path / "cache" / "train" / cache_store.shard_name(1)).exists()
    assert not list((tmp_path / "cache" / "train").glob(".shard-*"))  # no temporary file left behind
    stamp = first.stat().st_mtime_ns

    calls.clear()
    stop_after = None
    report = build_cache(teacher, processor, corpus, tmp_path / "cache", *settings(), progress=False)
    # train: 7 utterances = shards of 4 + 3; shard 1 is 2 batches; dev: 3 utterances = 2 batches
    assert len(calls) == 4 and report.shards_reused == 1 and report.shards_written == 2
    assert first.stat().st_mtime_ns == stamp
    hook.remove()

    whole = build_cache(teacher, processor, corpus, tmp_path / "whole", *settings(), progress=False)
    assert whole.utterances == report.utterances
    for split in ("train", "dev"):
        a = cache_store.CacheSplit(tmp_path / "cache" / split)
        b = cache_store.CacheSplit(tmp_path / "whole" / split)
        assert a.index == b.index
        for uid in a.index:
            names = ("topk_logprobs", "topk_indices", "final_states", "hidden_states", "encoder_outputs")
            x, y = a.get(uid, names), b.get(uid, names)
            for name in names:
                assert torch.equal(x[name], y[name])


def test_cached_teacher_refuses_what_it_cannot_give(tmp_path, processor, corpus):
    teacher = teacher_model()
    build_cache(teacher, processor, {"train": corpus["train"][:2]}, tmp_path / "c",
                *settings(hidden_layers=(1,), encoder_outputs=False), progress=False)
    with pytest.raises(UserError, match="temperature 2, training uses 1"):
        CachedTeacher(tmp_path / "c", None, TeacherNeeds(), temperature=1.0, logits="topk")
    CachedTeacher(tmp_path / "c", None, TeacherNeeds(), temperature=1.0)  # full logits serve any temperature
    with pytest.raises(UserError, match="TAID needs the teacher's full logits"):
        CachedTeacher(tmp_path / "c", None, TeacherNeeds(full_logits=True), temperature=T, logits="topk")
    CachedTeacher(tmp_path / "c", None, TeacherNeeds(full_logits=True), temperature=T)
    with pytest.raises(UserError, match=r"decoder layers \[0\] are not stored"):
        CachedTeacher(tmp_path / "c", None, TeacherNeeds(hidden_layers=(0,)), temperature=T)
    with pytest.raises(UserError, match="no frozen-encoder outputs"):
        CachedTeacher(tmp_path / "c", None, TeacherNeeds(encoder=True), temperature=T)
    with pytest.raises(UserError, match="no split 'dev'"):
        CachedTeacher(tmp_path / "c", "dev", TeacherNeeds(), temperature=T)
    with pytest.raises(UserError, match="no teacher cache"):
        CachedTeacher(tmp_path / "nothing", None, TeacherNeeds(), temperature=T)
    build_cache(teacher, processor, {"train": corpus["train"][:2]}, tmp_path / "no_topk",
                *settings(k=0, hidden_layers=()), progress=False)
    with pytest.raises(UserError, match="no top-k log-probs stored"):
        CachedTeacher(tmp_path / "no_topk", None, TeacherNeeds(), temperature=T, logits="topk")
    cached = CachedTeacher(tmp_path / "c", None, TeacherNeeds(hidden_layers=(1,)), temperature=T)
    batch = batches(corpus["train"][2:3], processor)[0]
    with pytest.raises(UserError, match="is not cached"):
        cached(batch)
    with pytest.raises(UserError, match="no frozen-encoder outputs stored, so training from it still needs"):
        CachedSpeechDataset(tmp_path / "c", corpus["train"][:2])
    with pytest.raises(UserError, match="'u2' is not in the teacher cache"):
        cache_loader(tmp_path / "no_topk", corpus["train"][:3], batch_size=3).dataset[2]


def same_batches(got: list, want: list) -> None:
    assert len(got) == len(want)
    for a, b in zip(got, want):
        assert (a is None) == (b is None)
        if a is None:
            continue
        assert a["ids"] == b["ids"] and a["texts"] == b["texts"] and a["input_features"] is None
        for key in ("decoder_input_ids", "labels", "decoder_attention_mask"):
            assert torch.equal(a[key], b[key]), key


def test_cache_loader_gives_the_batches_of_the_audio_loader(built, processor):
    _, splits, cache_dir, _ = built
    for grouped in (False, True):
        from_cache = list(cache_loader(cache_dir, splits["train"], batch_size=3, seed=4, length_grouped=grouped))
        from_audio = list(make_loader(splits["train"], processor, batch_size=3, seed=4, length_grouped=grouped,
                                      num_workers=0, durations=None))
        assert len(from_cache) == 3
        same_batches(from_cache, from_audio)


def test_training_batches_from_the_cache_equal_the_audio_ones(tmp_path, processor, corpus):
    """The trainer's TrainBatches over the cache (CachedSpeechDataset + WhisperCollator) gives the batches of the
    audio path: same ids, decoder inputs, labels, masks, texts, in the same seeded order in every epoch, the
    same skips (utterances the duration filter rejects at build time), and the same batches after a resume."""
    train = corpus["train"]  # 1.0, 1.25, ..., 2.5 s
    durations = DurationFilter(min_seconds=1.3, max_seconds=30.0)  # u0 and u1 are too short
    build_cache(teacher_model(), processor, {"train": train}, tmp_path / "cache", *settings(min_seconds=1.3),
                progress=False)
    logs = {"audio": SkipLog(), "cache": SkipLog()}
    audio = SpeechDataset(train, processor, logs["audio"], durations, source="train")
    cached = CachedSpeechDataset(tmp_path / "cache", train, "train", logs["cache"], source="train")
    sources = {"audio": (audio, WhisperCollator(processor.tokenizer.convert_tokens_to_ids("<|endoftext|>"))),
               "cache": (cached, WhisperCollator(cached.pad_id))}

    def take(kind: str, position: dict, n: int) -> tuple[list, dict]:
        dataset, collate = sources[kind]
        data = TrainBatches(dataset, collate, utterance_lengths(train), batch_size=2, seed=3)
        stream = data.iterate(position)
        return [next(stream) for _ in range(n)], dict(position)

    for start in ({"epoch": 0, "batch": 0}, {"epoch": 1, "batch": 2}):
        (got, got_at), (want, want_at) = take("cache", dict(start), 9), take("audio", dict(start), 9)
        same_batches(got, want)
        assert got_at == want_at and got_at["epoch"] >= start["epoch"] + 2  # several epochs, each its own order
    assert sum(len(b["ids"]) for b in want) < 9 * 2  # the skipped utterances are left out of their batches
    records = {kind: sorted((r["source"], r["id"], r["reason"]) for r in log.records()) for kind, log in logs.items()}
    assert records["cache"] == records["audio"] and {r[1] for r in records["audio"]} == {"u0", "u1"}


def test_cache_command(tmp_path, processor, corpus):
    model_dir = tmp_path / "teacher"
    teacher_model().save_pretrained(model_dir)
    processor.save_pretrained(model_dir)
    manifest = corpus["train"][0].audio.parent / "manifest.jsonl"
    config = tmp_path / "run.yaml"
    config.write_text(
        f"teacher: {{model: {model_dir}, device: cpu}}\n"
        f"student: {{decoder_layers: 1}}\n"
        f"loss: {{temperature: 2.0, align_weight: 0.5}}\n"
        f"data: {{train: {manifest}, dev_fraction: 0.3, min_seconds: 0.5}}\n"
        f"output: {{dir: {tmp_path / 'run'}}}\n"
        f"cache: {{hidden_layers: needed, shard_size: 4}}\n")
    assert main(["cache", str(config), "--no-progress"]) == 0
    cache_dir = tmp_path / "run" / "teacher_cache"
    meta = json.loads((cache_dir / "cache.json").read_text())
    assert meta["k"] == 0 and meta["temperature"] is None and meta["hidden_layers"] == [1]
    # The key's settings part, as caches have always stored it (a change here makes every cache stale).
    assert json.dumps(meta["parts"]["settings"]) == (
        '{"k": 0, "temperature": null, "hidden_layers": [1], "encoder_outputs": true, "shard_size": 4, '
        '"durations": [0.5, 30.0], "max_label_tokens": 448, "logprob_dtype": "float32", "final_state_dtype": '
        '"float32", "hidden_dtype": "float16", "encoder_dtype": "float16", "teacher_dtype": "float32", '
        '"audio_identity": "stat"}')
    assert meta["encoder_outputs"] and set(meta["complete"]) == {"train", "dev"}
    assert (cache_dir / "output_projection.safetensors").is_file()
    assert main(["cache", str(config), "--check"]) == 0
    assert main(["cache", str(config), "loss.temperature=1.0", "--check"]) == 0  # full logits: T plays no part
    assert main(["cache", str(config), "cache.logits=topk", "--check"]) == 1
    assert main(["cache", "--refuse", str(config), "cache.topk=16"]) == 2
