"""Training on pseudo-labels, ground truth or both (data.labels) from a `whisperkd label` manifest."""

from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf

from whisperkd.config import config_from_dict
from whisperkd.distill.build import read_splits
from whisperkd.errors import UserError


@pytest.fixture
def labelled(tmp_path):
    rows = [("a", "the teacher heard this", "the teacher heard this"), ("b", "a pseudo label", "the real text")]
    with open(tmp_path / "labels.jsonl", "w") as f:
        for uid, text, original in rows:
            sf.write(tmp_path / f"{uid}.wav", np.full(16000, 0.1, np.float32), 16000)
            f.write(json.dumps({"id": uid, "audio": f"{uid}.wav", "text": text, "text_original": original}) + "\n")
    return tmp_path / "labels.jsonl"


@pytest.mark.parametrize("labels,expected", [
    ("text", {"a": "the teacher heard this", "b": "a pseudo label"}),
    ("original", {"a": "the teacher heard this", "b": "the real text"}),
    ("both", {"a": "the teacher heard this", "b": "a pseudo label", "b#original": "the real text"}),
])
def test_data_labels_choose_the_training_text(labelled, labels, expected):
    cfg = config_from_dict({"student": {"decoder_layers": 2}, "data": {"train": str(labelled), "dev_fraction": 0.0,
                                                                       "labels": labels}})
    train, dev = read_splits(cfg)
    assert {u.id: u.text for u in train} == expected and dev == []


def test_labels_need_a_manifest(tmp_path):
    (tmp_path / "1" / "2").mkdir(parents=True)
    sf.write(tmp_path / "1" / "2" / "1-2-0001.flac", np.full(16000, 0.1, np.float32), 16000)
    (tmp_path / "1" / "2" / "1-2.trans.txt").write_text("1-2-0001 HELLO THERE\n")
    cfg = config_from_dict({"student": {"decoder_layers": 2},
                            "data": {"train": str(tmp_path), "dev_fraction": 0.0, "labels": "original"}})
    with pytest.raises(UserError, match="config data.labels: original needs a JSONL manifest"):
        read_splits(cfg)
