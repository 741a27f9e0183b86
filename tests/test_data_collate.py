"""Whisper batches: decoder prompt per vocabulary, label shift and padding, loader order and skipping."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from whisperkd.data.collate import IGNORE_INDEX, TokenEncoder, collate_examples, decoder_prompt_ids
from whisperkd.data.loader import make_loader
from whisperkd.data.manifest import read_manifest
from whisperkd.data.sampler import SeededBatchSampler
from whisperkd.data.skiplog import SkipLog
from helpers import tone, write


@pytest.fixture(scope="module")
def tiny_processor(tiny_en_dir):
    from whisperkd.models.loading import load_processor

    return load_processor(tiny_en_dir)


@pytest.fixture(scope="module")
def base_processor(base_dir):
    from whisperkd.models.loading import load_processor

    return load_processor(base_dir)


def test_decoder_prompt_ids_table(tiny_processor, base_processor):
    assert decoder_prompt_ids(tiny_processor.tokenizer) == [50257, 50362]
    assert decoder_prompt_ids(base_processor.tokenizer) == [50258, 50259, 50359, 50363]


def test_token_sequence(tiny_processor, base_processor):
    for processor, prompt, eot in ((tiny_processor, [50257, 50362], 50256), (base_processor, [50258, 50259, 50359, 50363], 50257)):
        seq = TokenEncoder(processor.tokenizer)("this is a test")
        assert seq[: len(prompt)] == prompt and seq[-1] == eot
        assert len(seq) == len(prompt) + 4 + 1  # " this is a test" is four tokens in both vocabularies
        assert processor.tokenizer.decode(seq[len(prompt):-1]) == " this is a test"


def test_too_many_tokens_is_a_skip(tiny_processor):
    from whisperkd.data.audio import AudioSkip

    with pytest.raises(AudioSkip, match="too_many_tokens"):
        TokenEncoder(tiny_processor.tokenizer)("word " * 500)


def test_collate_shift_and_padding():
    features = np.zeros((80, 3000), dtype=np.float32)
    batch = collate_examples([{"id": "a", "text": "x", "input_features": features, "tokens": [1, 2, 3, 4, 9]},
                              None,
                              {"id": "b", "text": "y", "input_features": features + 1, "tokens": [1, 2, 5, 9]}], pad_id=9)
    assert batch["ids"] == ["a", "b"] and batch["texts"] == ["x", "y"]
    assert batch["input_features"].shape == (2, 80, 3000) and batch["input_features"].dtype == torch.float32
    assert batch["decoder_input_ids"].tolist() == [[1, 2, 3, 4], [1, 2, 5, 9]]
    assert batch["labels"].tolist() == [[2, 3, 4, 9], [2, 5, 9, IGNORE_INDEX]]
    assert batch["decoder_attention_mask"].tolist() == [[1, 1, 1, 1], [1, 1, 1, 0]]
    assert collate_examples([None, None], pad_id=9) is None


def speech_folder(root, n=6):
    rows = []
    for i in range(n):
        write(root / f"u{i}.wav", tone(1.0 + 0.5 * i, rate=22050, freq=200 + 50 * i), rate=22050)
        rows.append({"id": f"u{i}", "audio": f"u{i}.wav", "text": f"Utterance number {i}, said once." + " more" * i,
                     "speaker": f"s{i % 3}", "duration": 1.0 + 0.5 * i})
    (root / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return read_manifest(root / "manifest.jsonl")


def test_batches_against_the_tokenizer(tmp_path, tiny_processor):
    utts = speech_folder(tmp_path)
    loader = make_loader(utts, tiny_processor, batch_size=4, seed=0, num_workers=0, skiplog=SkipLog(tmp_path))
    batches = list(loader)
    assert [len(b["ids"]) for b in batches] == [4, 2]
    tok = tiny_processor.tokenizer
    for batch in batches:
        b, length = batch["labels"].shape
        assert batch["input_features"].shape == (b, tiny_processor.feature_extractor.feature_size, 3000)
        assert batch["decoder_input_ids"].shape == batch["decoder_attention_mask"].shape == (b, length)
        for row, text in enumerate(batch["texts"]):
            n = int(batch["decoder_attention_mask"][row].sum())
            inputs, labels = batch["decoder_input_ids"][row], batch["labels"][row]
            assert inputs[:2].tolist() == [50257, 50362] and labels[0].item() == 50362
            assert labels[n - 1].item() == tok.eos_token_id
            assert torch.equal(inputs[1:n], labels[: n - 1])
            assert (labels[n:] == IGNORE_INDEX).all() and (inputs[n:] == tok.eos_token_id).all()
            assert tok.decode(labels[1: n - 1]).strip() == text


def test_batch_feeds_the_model(tmp_path, tiny_processor, tiny_random_model):
    batch = next(iter(make_loader(speech_folder(tmp_path, 3), tiny_processor, batch_size=3, num_workers=0)))
    out = tiny_random_model(input_features=batch["input_features"], decoder_input_ids=batch["decoder_input_ids"],
                            decoder_attention_mask=batch["decoder_attention_mask"], labels=batch["labels"])
    logits = out.logits
    manual = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), batch["labels"].reshape(-1),
                                               ignore_index=IGNORE_INDEX)
    assert torch.allclose(out.loss, manual, atol=1e-5)


def test_loader_order_is_deterministic_and_workers_agree(tmp_path, tiny_processor):
    utts = speech_folder(tmp_path)
    def order(seed, workers, epoch=0):
        loader = make_loader(utts, tiny_processor, batch_size=2, seed=seed, num_workers=workers)
        loader.batch_sampler.set_epoch(epoch)
        return [b["ids"] for b in loader]
    first = order(1, 0)
    assert order(1, 2) == first
    assert any(order(s, 0) != first for s in (2, 3, 4)) and order(1, 0, epoch=1) != first


def test_length_grouped_batches_hold_similar_lengths():
    lengths = np.random.default_rng(0).uniform(1, 30, size=400)
    grouped = SeededBatchSampler(lengths, 8, seed=0, length_grouped=True)
    plain = SeededBatchSampler(lengths, 8, seed=0)
    spread = lambda s: np.mean([np.ptp(lengths[b]) for b in s])  # noqa: E731
    assert spread(grouped) < spread(plain) / 3
    assert sorted(i for b in grouped for i in b) == list(range(400))
    assert list(grouped) == list(SeededBatchSampler(lengths, 8, seed=0, length_grouped=True))
    assert len(grouped) == 50 and len(SeededBatchSampler(lengths[:13], 4, drop_last=True)) == len(
        list(SeededBatchSampler(lengths[:13], 4, drop_last=True))) == 3


def test_fuzz_run_completes_and_logs_every_skip(tmp_path, tiny_processor, bad_files):
    cases = bad_files
    good = {f"good{i}": write(tmp_path / f"good{i}.flac", tone(1.5 + i, rate=8000, channels=2), rate=8000)
            for i in range(3)}
    rows = [{"id": p.name, "audio": str(p), "text": "bad file"} for p in cases]
    rows += [{"id": k, "audio": str(p), "text": "a good file"} for k, p in good.items()]
    rows.append({"id": "long_text", "audio": str(good["good0"]), "text": "word " * 500})
    (tmp_path / "m.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    run = tmp_path / "run"
    log = SkipLog(run, reset=True)
    loader = make_loader(read_manifest(tmp_path / "m.jsonl"), tiny_processor, batch_size=4, num_workers=2,
                         skiplog=log, source="m.jsonl")
    seen = [i for batch in loader for i in batch["ids"]]
    assert sorted(seen) == sorted(good)
    records = {r["id"]: r["reason"] for r in log.records()}
    assert records == {**{p.name: reason for p, reason in cases.items()}, "long_text": "too_many_tokens"}
    assert log.count == len(cases) + 1
    assert str(run / "skipped.jsonl") in log.summary()
