"""Manifests (JSONL, CSV), LibriSpeech trees and HF dataset folders, and source detection."""

from __future__ import annotations

import json
import sys

import pytest

from whisperkd.data.librispeech import read_librispeech
from whisperkd.data.manifest import read_manifest, write_manifest
from whisperkd.data.sources import detect_kind, open_source
from whisperkd.errors import UserError
from helpers import tone, write


def jsonl(path, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r, ensure_ascii=False)) + "\n" for r in rows),
                    encoding="utf-8")
    return path


def test_jsonl_manifest_paths_are_relative_to_the_manifest(tmp_path):
    write(tmp_path / "data" / "clips" / "a.wav", tone(1.5))
    manifest = jsonl(tmp_path / "data" / "m.jsonl", [
        {"id": "a", "audio": "clips/a.wav", "text": "Crème brûlée, naïve café — 東京", "duration": 1.5, "speaker": 7},
        {"id": "b", "audio": "clips/b.wav", "text": "no speaker"},
    ])
    utts = read_manifest(manifest)
    assert [u.id for u in utts] == ["a", "b"]
    assert utts[0].audio == tmp_path / "data" / "clips" / "a.wav" and utts[0].audio.is_file()
    assert utts[0].text == "Crème brûlée, naïve café — 東京"
    assert utts[0].duration == 1.5 and utts[0].speaker == "7"
    assert utts[1].duration is None and utts[1].speaker is None


def test_csv_manifest(tmp_path):
    (tmp_path / "m.csv").write_text('id,audio,text,speaker\nx1,x1.flac,"Hello, world",spk\nx2,sub/x2.wav,Ünïcode,\n',
                                    encoding="utf-8")
    utts = read_manifest(tmp_path / "m.csv")
    assert [(u.id, u.text, u.speaker) for u in utts] == [("x1", "Hello, world", "spk"), ("x2", "Ünïcode", None)]
    assert utts[1].audio == tmp_path / "sub" / "x2.wav"


@pytest.mark.parametrize("rows, message", [
    ([{"id": "a", "audio": "a.wav", "text": "ok"}, {"id": "b", "text": "no audio"}], r"m\.jsonl:2: missing field 'audio'"),
    ([{"id": "a", "audio": "a.wav", "text": "ok"}, "", '{"id": "c", "audio": '], r"m\.jsonl:3: not valid JSON"),
    ([{"audio": "a.wav", "text": "x"}], r"m\.jsonl:1: missing field 'id'"),
    ([{"id": "a", "audio": "a.wav"}], r"m\.jsonl:1: missing field 'text'"),
    ([{"id": "a", "audio": "a.wav", "text": "x", "duration": "long"}], r"m\.jsonl:1: field 'duration'"),
    (["[1, 2]"], r"m\.jsonl:1: expected a JSON object"),
])
def test_bad_jsonl_names_file_line_and_field(tmp_path, rows, message):
    with pytest.raises(UserError, match=message) as err:
        read_manifest(jsonl(tmp_path / "m.jsonl", rows))
    assert "\n" not in str(err.value)


def test_bad_csv_names_the_column_and_line(tmp_path):
    (tmp_path / "m.csv").write_text("id,path,text\na,a.wav,x\n")
    with pytest.raises(UserError, match=r"m\.csv:1: missing column 'audio'"):
        read_manifest(tmp_path / "m.csv")
    (tmp_path / "n.csv").write_text("id,audio,text\na,a.wav,x\nb,,y\n")
    with pytest.raises(UserError, match=r"n\.csv:3: missing field 'audio'"):
        read_manifest(tmp_path / "n.csv")


def test_write_manifest_round_trip(tmp_path):
    write(tmp_path / "clips" / "a.wav", tone(1.5))
    utts = read_manifest(jsonl(tmp_path / "m.jsonl", [{"id": "a", "audio": "clips/a.wav", "text": "é", "speaker": "s"}]))
    out = write_manifest(tmp_path / "copy" / "manifest.jsonl", utts)
    row = json.loads(out.read_text(encoding="utf-8"))
    assert row == {"id": "a", "audio": "../clips/a.wav", "text": "é", "speaker": "s"}
    assert read_manifest(out)[0].audio.resolve() == (tmp_path / "clips" / "a.wav").resolve()
    assert [p.name for p in out.parent.iterdir()] == ["manifest.jsonl"]  # no temp file left


def librispeech_tree(root):
    for speaker, chapter, n in (("19", "198", 2), ("26", "495", 1)):
        folder = root / speaker / chapter
        lines = []
        for i in range(n):
            utt = f"{speaker}-{chapter}-{i:04d}"
            write(folder / f"{utt}.flac", tone(1.2 + i))
            lines.append(f"{utt} TEXT NUMBER {i} FÜR {speaker}")
        (folder / f"{speaker}-{chapter}.trans.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return root


def test_librispeech_layout(tmp_path):
    utts = read_librispeech(librispeech_tree(tmp_path / "dev-clean"))
    assert [(u.id, u.speaker) for u in utts] == [("19-198-0000", "19"), ("19-198-0001", "19"), ("26-495-0000", "26")]
    assert utts[1].text == "TEXT NUMBER 1 FÜR 19"
    assert all(u.audio.is_file() and u.audio.suffix == ".flac" for u in utts)


def test_librispeech_bad_line(tmp_path):
    folder = tmp_path / "1" / "2"
    folder.mkdir(parents=True)
    (folder / "1-2.trans.txt").write_text("1-2-0000 HELLO\n1-2-0001\n")
    with pytest.raises(UserError, match=r"1-2\.trans\.txt:2: missing field 'text'"):
        read_librispeech(tmp_path)


def test_open_source_detects_the_kind(tmp_path):
    tree = librispeech_tree(tmp_path / "libri")
    assert detect_kind(tree) == "librispeech" and len(open_source(tree)) == 3
    manifest = jsonl(tmp_path / "man" / "manifest.jsonl", [{"id": "a", "audio": "a.wav", "text": "x"}])
    assert open_source(manifest).kind == "manifest"
    assert open_source(manifest.parent).kind == "manifest"
    with pytest.raises(UserError, match="no such file or folder"):
        open_source(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="not a data source"):
        open_source(tmp_path / "empty")


def test_real_speech_manifest(real_speech_dir):
    source = open_source(real_speech_dir)
    assert source.kind == "manifest" and len(source) == 6
    assert all(u.audio.is_file() for u in source)


def test_hf_dataset_without_datasets_names_the_extra(tmp_path, monkeypatch):
    (tmp_path / "state.json").write_text("{}")
    (tmp_path / "dataset_info.json").write_text("{}")
    monkeypatch.setitem(sys.modules, "datasets", None)
    assert detect_kind(tmp_path) == "hf_dataset"
    with pytest.raises(UserError, match=r"pip install 'whisperkd\[datasets\]'"):
        open_source(tmp_path)


def test_hf_dataset_folder(tmp_path):
    datasets = pytest.importorskip("datasets")
    clips = [write(tmp_path / f"c{i}.flac", tone(1.5 + i)).read_bytes() for i in range(2)]
    # Built as plain bytes, then cast to Audio: encoding through Audio itself would need torchcodec.
    ds = datasets.Dataset.from_dict(
        {"audio": [{"bytes": c, "path": None} for c in clips], "sentence": ["één", "two"], "speaker_id": [3, 4]})
    ds = ds.cast_column("audio", datasets.Audio(sampling_rate=16000))
    ds.save_to_disk(str(tmp_path / "hf"))
    source = open_source(tmp_path / "hf")
    assert source.kind == "hf_dataset" and len(source) == 2
    second = source[1]
    assert (second.id, second.text, second.speaker) == ("00000001", "two", "4")
    from whisperkd.data.audio import load_audio

    assert len(load_audio(second.audio)) == 40000
