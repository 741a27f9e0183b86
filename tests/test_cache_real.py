"""The teacher cache on the real tiny.en: the KL from the cache (full logits rebuilt from the final decoder
states) is the online KL within 1% (in fact ~1e-5), the top-k tail-bucket KL is not at T = 2, and training
from the cache gives the loss values of online training (docs/cache.md has the base measurements)."""

from __future__ import annotations

import copy

import pytest
import torch

from whisperkd.data.loader import make_loader
from whisperkd.data.sources import open_source
from whisperkd.config import DEFAULT_TOPK, CacheConfig
from whisperkd.distill.cache import CachedTeacher, CachePlan, build_cache
from whisperkd.distill.losses import (alignment_loss, cross_entropy, kl_divergence, kl_divergence_topk)
from whisperkd.distill.teacher import OnlineTeacher
from whisperkd.distill.teacher_batch import TeacherNeeds

pytestmark = pytest.mark.real
TOLERANCE = 0.01  # relative; the claim of docs/cache.md for the default k


@pytest.fixture(scope="module")
def setup(tiny_en_dir, speech, tmp_path_factory):
    """tiny.en teacher, a 2-decoder-layer student derived from it, the speech batches, and a cache at T = 2."""
    from whisperkd.models.loading import load_model, load_processor
    from whisperkd.models.student import build_student_from_teacher, set_trainable

    teacher, processor = load_model(tiny_en_dir), load_processor(tiny_en_dir)
    teacher.requires_grad_(False)
    student = build_student_from_teacher(teacher, 2).eval()
    set_trainable(student, train_decoder=True)
    utts = list(open_source(speech).utterances)[:6]
    batches = list(make_loader(utts, processor, batch_size=3, shuffle=False, num_workers=0))
    cache_dir = tmp_path_factory.mktemp("cache") / "tiny_en"
    needs = TeacherNeeds(hidden_layers=tuple(student.config.whisperkd["decoder_layers_kept"]), encoder=True)
    build_cache(teacher, processor, {"train": utts}, cache_dir, CacheConfig(topk=DEFAULT_TOPK),
                CachePlan(temperature=2.0, hidden_layers=needs.hidden_layers), progress=False)
    online = OnlineTeacher(teacher, needs)
    return {"teacher": teacher, "student": student, "batches": batches, "online": [online(b) for b in batches],
            "cached": CachedTeacher(cache_dir, "train", needs, temperature=2.0), "needs": needs,
            "topk": CachedTeacher(cache_dir, "train", needs, temperature=2.0, logits="topk")}


def student_logits(student, batch, encoder):
    return student(encoder_outputs=(encoder,), decoder_input_ids=batch["decoder_input_ids"],
                   output_hidden_states=True)


@pytest.mark.parametrize("temperature", [1.0, 2.0])
def test_cached_kl_is_within_one_percent_of_the_online_kl(setup, temperature):
    """Default cache (full logits from the final states): within 1e-4. Top-64 with the tail bucket: never above
    the full KL, and at T = 2 far below it (docs/cache.md: 20-60% on base), so it is not the default."""
    sums = {"online": 0.0, "cached": 0.0, "bucket": 0.0}
    tokens = 0
    with torch.no_grad():
        for batch, online in zip(setup["batches"], setup["online"]):
            logits = student_logits(setup["student"], batch, online.encoder_hidden_states).logits
            labels = batch["labels"]
            n = int((labels != -100).sum())
            cached, topk = setup["cached"](batch), setup["topk"](batch)
            sums["online"] += float(kl_divergence(online.logits, logits, labels, temperature)) * n
            sums["cached"] += float(kl_divergence(cached.logits, logits, labels, temperature)) * n
            log_p = torch.log_softmax(online.logits / temperature, dim=-1)
            top, index = log_p.topk(DEFAULT_TOPK, dim=-1)  # top-k at this T (the cache's own is at T = 2)
            if temperature == 2.0:
                # float32 log-softmax over 51,865 logits: 1.3e-5 apart seen on an Intel Xeon (1 of 2,304 values)
                torch.testing.assert_close(topk.topk_logprobs[labels != -100], top[labels != -100], atol=3e-5, rtol=0)
            sums["bucket"] += float(kl_divergence_topk(top, index, logits, labels, temperature)) * n
            tokens += n
    online, cached, bucket = (sums[k] / tokens for k in ("online", "cached", "bucket"))
    assert abs(cached - online) / online < 1e-4 < TOLERANCE
    assert bucket <= online * (1 + 1e-6)  # merging the tail into one outcome never raises the KL
    if temperature == 2.0:
        assert (online - bucket) / online > 5 * TOLERANCE


def step_loss(student, batch, teacher_batch, needs):
    out = student_logits(student, batch, teacher_batch.encoder_hidden_states)
    labels = batch["labels"]
    kd = kl_divergence(teacher_batch.logits, out.logits, labels, 2.0)
    layer = needs.hidden_layers[-1]
    align = alignment_loss(out.decoder_hidden_states[-1], teacher_batch.hidden_states[layer], labels, "geodesic")
    return cross_entropy(out.logits, labels) + 0.8 * kd + 0.5 * align


def test_training_from_the_cache_gives_the_online_losses(setup):
    """Three AdamW steps of the same student from the online teacher and from the cache (float16 encoder outputs
    and hidden states, logits from the float32 final states): the per-step losses agree within 1%."""
    trajectories = {}
    for cached in (False, True):
        student = copy.deepcopy(setup["student"]).train()
        params = [p for p in student.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(params, lr=1e-4)
        losses = []
        for step in range(3):
            batch = setup["batches"][step % len(setup["batches"])]
            teacher_batch = setup["cached"](batch) if cached else setup["online"][step % len(setup["batches"])]
            loss = step_loss(student, batch, teacher_batch, setup["needs"])
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
            losses.append(loss.item())
        trajectories[cached] = losses
    online, cached = torch.tensor(trajectories[False]), torch.tensor(trajectories[True])
    assert ((cached - online).abs() / online).max() < TOLERANCE, (online.tolist(), cached.tolist())


def test_trainer_on_the_cache_logs_the_online_losses(tmp_path, tiny_en_dir, speech, monkeypatch):
    """`train` end to end (tiny.en -> 2 decoder layers, CE + KL(T=2) + alignment, 3 steps): the same run with
    cache.enabled logs the online losses within 1%, and its training steps read no audio."""
    import json

    import whisperkd.data.loader as loader
    from whisperkd.config import config_from_dict
    from whisperkd.distill import trainer

    rows = (speech / "manifest.jsonl").read_text().splitlines()[:6]
    manifest = tmp_path / "train.jsonl"
    manifest.write_text("".join(json.dumps({**json.loads(r), "audio": str(speech / json.loads(r)["audio"])}) + "\n"
                                for r in rows))

    def raw(name, **cache):
        return {"teacher": {"model": str(tiny_en_dir), "device": "cpu"}, "student": {"decoder_layers": 2},
                "loss": {"temperature": 2.0, "align_weight": 0.5},
                "optim": {"lr": 1e-4, "warmup_steps": 0},
                "train": {"max_steps": 3, "batch_size": 3, "log_every": 1, "progress": False, "device": "cpu"},
                "data": {"train": str(manifest), "dev_fraction": 0.0},
                "eval": {"at_start": False, "every": 0, "wer": False},
                "output": {"dir": str(tmp_path / name), "tensorboard": False, "checkpoint_every": 100},
                "cache": cache}

    online = trainer.train(config_from_dict(raw("online")))
    reads = []
    original = loader.load_utterance
    monkeypatch.setattr(loader, "load_utterance", lambda *a, **k: reads.append(a) or original(*a, **k))
    cached = trainer.train(config_from_dict(raw("cached", enabled=True, dir=str(tmp_path / "cache"))))
    assert len(reads) == len(rows)  # each utterance once, by the cache build; the 3 steps x 3 read none
    a, b = online.history["steps"], cached.history["steps"]
    assert [s["step"] for s in a] == [s["step"] for s in b] == [1, 2, 3]
    for x, y in zip(a, b):
        for key in ("loss", "ce", "kl", "align"):
            assert abs(y[key] - x[key]) / abs(x[key]) < TOLERANCE, (key, x, y)
