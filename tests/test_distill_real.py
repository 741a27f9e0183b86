"""Distillation on real weights: tiny.en teaches a 2-layer-decoder student on synthetic speech (CPU, minutes).

Training and dev use disjoint voices and disjoint sentences. Run with ``pytest -s`` to see the figures.
"""

from __future__ import annotations

import shutil

import pytest

from whisperkd.config import config_from_dict

pytestmark = [
    pytest.mark.real,  # ~48 s on 2 idle CPU cores: not `slow`
    pytest.mark.skipif(any(shutil.which(p) is None for p in ("espeak-ng", "flite")),
                       reason="speech engines espeak-ng and flite not installed"),
]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    from whisperkd.data.sentences import load_sentences
    from whisperkd.data.splits import split_sentences
    from whisperkd.data.synth import synthesize_corpus
    from whisperkd.data.voices import resolve_voices, split_voices

    root = tmp_path_factory.mktemp("distill-real")
    sentences = split_sentences(load_sentences("harvard"), {"train": 0.8, "dev": 0.2}, seed=0)
    voices = split_voices(resolve_voices("espeak,flite", seed=0, max_per_engine=8), {"train": 0.75, "dev": 0.25},
                          seed=0)
    train = synthesize_corpus(root / "train", sentences["train"], voices["train"], seed=0, utterances=48, jobs=2,
                              progress=False)
    dev = synthesize_corpus(root / "dev", sentences["dev"], voices["dev"], seed=1, utterances=16, jobs=2,
                            progress=False)
    assert len(train) == 48 and len(dev) == 16
    assert not {u.speaker for u in train} & {u.speaker for u in dev}
    return root


def test_tiny_en_teaches_a_two_layer_student(corpus, tmp_path, tiny_en_dir):
    import soundfile as sf

    from whisperkd.data.sources import open_source
    from whisperkd.distill.trainer import train
    from whisperkd.models.loading import load_model, load_processor
    from whisperkd.models.decode import transcribe_arrays
    from whisperkd.text import wer

    raw = {
        "teacher": {"model": "tiny.en", "device": "cpu", "dtype": "float32", "memo_size": 100},
        "student": {"decoder_layers": 2},  # teacher decoder layers [0, 3]; the whole decoder trains
        "loss": {"kind": "kl", "ce_weight": 1.0, "kl_weight": 0.8, "temperature": 2.0},
        "optim": {"lr": 5e-4, "warmup_steps": 5},
        "train": {"max_steps": 24, "batch_size": 8, "device": "cpu", "log_every": 4, "progress": False},
        "data": {"train": str(corpus / "train"), "dev": str(corpus / "dev"), "memo_size": 100},
        "eval": {"every": 12, "max_utterances": 16, "batch_size": 16},
        "output": {"dir": str(tmp_path / "run"), "checkpoint_every": 24, "tensorboard": False},
    }
    result = train(config_from_dict(raw))
    evals = result.history["evals"]
    assert [e["step"] for e in evals] == [0, 12, 24]
    before, after = evals[0], min(evals[1:], key=lambda e: e["wer"])
    assert result.best["step"] == after["step"]

    processor, teacher = load_processor("tiny.en"), load_model("tiny.en")
    dev = list(open_source(corpus / "dev"))
    audio = [sf.read(str(u.audio), dtype="float32")[0] for u in dev]
    teacher_wer = wer([u.text for u in dev], transcribe_arrays(teacher, processor, audio, 16), normalized=False)
    print(f"\ntiny.en -> 2-layer decoder (kept teacher layers [0, 3]), 48 train / 16 dev utterances, "
          f"unseen voices and sentences; teacher dev WER {100 * teacher_wer:.1f}%")
    for e in evals:
        print(f"  step {e['step']:3d}: dev loss {e['dev_loss']:.3f} (CE {e['dev_ce']:.3f}, KL {e['dev_kl']:.3f}), "
              f"dev WER {100 * e['wer']:.1f}%   e.g. {e['examples'][0]['hyp']!r}")
    print(f"  reference: {evals[0]['examples'][0]['ref']!r}")

    assert before["wer"] > 0.9  # the pruned, untrained student is garbage
    assert after["wer"] < 0.6 and after["wer"] < before["wer"] / 2
    assert evals[-1]["dev_loss"] < before["dev_loss"] / 3
    assert evals[-1]["dev_kl"] < before["dev_kl"] / 3
    assert (tmp_path / "run" / "student_final" / "model.safetensors").is_file()
