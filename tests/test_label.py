"""Pseudo-labelling: WER filter, manifest fields, label choice for training, and `whisperkd label` on tiny.en."""

from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf

from whisperkd.data.manifest import read_manifest
from whisperkd.data.skiplog import SkipLog
from whisperkd.data.utterance import Utterance
from whisperkd.errors import UserError
from whisperkd.data.pseudo_label import pseudo_label, read_labelled, write_labelled_manifest


class FakeProcessor:
    class tokenizer:  # noqa: N801 - stands in for an object with a ``normalize`` method
        english_spelling_normalizer = None


def test_filter_counts_and_manifest_fields(tmp_path, monkeypatch):
    import whisperkd.data.pseudo_label

    rows = []
    for i in range(5):
        path = tmp_path / "audio" / f"a{i}.wav"
        path.parent.mkdir(exist_ok=True)
        sf.write(str(path), 0.3 * np.sin(np.arange(16000 + 4000 * i) / 10).astype(np.float32), 16000)
        rows.append(Utterance(f"a{i}", path, ["red green blue", "cat dog cow", "", "sun moon", "tree"][i],
                              speaker="s"))
    rows.append(Utterance("missing", tmp_path / "audio" / "missing.wav", "gone"))
    hypotheses = {"a0": "Red, green, blue.", "a1": "cat dog cat", "a2": "anything", "a3": "", "a4": "tree"}

    by_length = {16000 + 4000 * i: hypotheses[f"a{i}"] for i in range(5)}  # each clip has its own length

    def fake(model, processor, audios, batch_size, window=None):
        return [by_length[len(a)] for a in audios]

    monkeypatch.setattr(whisperkd.data.pseudo_label, "transcribe_arrays", fake)
    skiplog = SkipLog(tmp_path, filename="skipped.jsonl")
    report = pseudo_label(None, FakeProcessor, rows, batch_size=2, max_wer=0.1, skiplog=skiplog, progress=False,
                          model_name="fake")
    kept = {r["id"]: r for r in report.rows}
    assert set(kept) == {"a0", "a2", "a4"}
    assert (report.total, report.kept, report.dropped_wer, report.dropped_empty, report.skipped_audio) == (6, 3, 1, 1, 1)
    assert kept["a0"]["text"] == "Red, green, blue." and kept["a0"]["text_original"] == "red green blue"
    assert kept["a0"]["wer"] == 0.0 and kept["a0"]["label_model"] == "fake"
    assert "text_original" not in kept["a2"]  # no ground truth: kept unfiltered
    assert report.wer == pytest.approx(3 / 9)  # "cat" (1) + the empty transcript (2) over 3 + 3 + 2 + 1 words
    reasons = sorted(r["reason"] for r in skiplog.records())
    assert reasons == ["empty_transcript", "missing", "wer_above_threshold"]
    assert "3 of 6 utterances kept; 1 dropped (WER > 0.1)" in report.summary()

    out = write_labelled_manifest(tmp_path / "labelled.jsonl", report.rows)
    assert json.loads(out.read_text().splitlines()[0])["audio"] == "audio/a0.wav"
    assert [u.text for u in read_manifest(out)] == ["Red, green, blue.", "anything", "tree"]
    assert [u.text for u in read_labelled(out, "original")] == ["red green blue", "anything", "tree"]
    assert [u.id for u in read_labelled(out, "both")] == ["a0", "a2", "a4"]  # normalised texts agree

    rows_both = [dict(report.rows[0], text="Red, green, glue."), report.rows[1]]
    both = read_labelled(write_labelled_manifest(tmp_path / "b.jsonl", rows_both), "both")
    assert [(u.id, u.text) for u in both] == [("a0", "Red, green, glue."), ("a0#original", "red green blue"),
                                              ("a2", "anything")]
    with pytest.raises(UserError, match="labels"):
        read_labelled(out, "mixed")


@pytest.mark.real
def test_label_command_with_tiny_en(tmp_path, speech, tiny_en_dir, capsys):
    from whisperkd.cli import main

    rows = [json.loads(line) for line in (speech / "manifest.jsonl").read_text().splitlines()][:4]
    rows[3]["text"] = "completely unrelated words that nobody said here"
    data = tmp_path / "data.jsonl"
    data.write_text("".join(json.dumps({**r, "audio": str(speech / r["audio"])}) + "\n" for r in rows))
    out = tmp_path / "labels" / "train.jsonl"
    assert main(["label", str(tiny_en_dir), "--data", str(data), "--out", str(out), "--max-wer", "0.5",
                 "--batch-size", "4", "--no-progress"]) == 0
    printed = capsys.readouterr().out
    labelled = [json.loads(line) for line in out.read_text().splitlines()]
    assert rows[3]["id"] not in {r["id"] for r in labelled}
    assert "dropped (WER > 0.5)" in printed and "teacher WER on the ground truth" in printed
    skipped = [json.loads(line) for line in (out.parent / "train.skipped.jsonl").read_text().splitlines()]
    assert {s["id"] for s in skipped if s["reason"] == "wer_above_threshold"} >= {rows[3]["id"]}
    by_id = {r["id"]: r for r in rows}
    for row in labelled:
        assert row["text_original"] == by_id[row["id"]]["text"] and row["wer"] <= 0.5 and row["text"]
    assert read_manifest(out)[0].audio.is_file()
    with pytest.raises(SystemExit):
        main(["label", str(tiny_en_dir), "--out", str(out)])
    assert main(["label", str(tiny_en_dir), "--data", str(data), "--out", str(tmp_path / "x.csv")]) == 2
