"""Kaldi data folders (wav.scp, text, segments, utt2spk, spk2gender) as a data source, and segments cut at load time."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import soundfile as sf

from whisperkd.cli import main
from whisperkd.data.audio import AudioSkip, load_utterance, utterance_seconds
from whisperkd.data.kaldi import read_kaldi
from whisperkd.data.loader import SpeechDataset
from whisperkd.data.manifest import read_manifest
from whisperkd.data.skiplog import SkipLog
from whisperkd.data.sources import detect_kind, open_source
from whisperkd.data.utterance import Utterance
from whisperkd.distill.cache.key import audio_identity, utterance_fingerprints
from whisperkd.errors import UserError
from helpers import tone, write

SR = 16_000


def kaldi_dir(folder: Path, **files: str) -> Path:
    """A Kaldi data folder with the given files (``wav_scp`` for wav.scp), each a string of lines."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (folder / name.replace("wav_scp", "wav.scp")).write_text(text, encoding="utf-8")
    return folder


def noise(seconds: float, seed: int = 0) -> np.ndarray:
    """Seeded noise: every slice differs, so a wrong cut cannot pass."""
    return (0.3 * np.random.default_rng(seed).uniform(-1, 1, int(seconds * SR))).astype(np.float32)


class _Tokenizer:
    """Enough of tiny.en's tokenizer for SpeechDataset (no model files needed)."""

    ids = {"<|startoftranscript|>": 50257, "<|notimestamps|>": 50362, "<|endoftext|>": 50256}

    def convert_tokens_to_ids(self, tokens):
        return [self.ids[t] for t in tokens] if isinstance(tokens, list) else self.ids[tokens]

    def encode(self, text, add_special_tokens=False):
        return [ord(c) % 50000 for c in text]


def stub_processor():
    from transformers import WhisperFeatureExtractor

    return SimpleNamespace(feature_extractor=WhisperFeatureExtractor(), tokenizer=_Tokenizer())


@pytest.mark.parametrize("suffix", [".wav", ".flac"])
def test_segments_are_slices_of_the_recording(tmp_path, suffix):
    write(tmp_path / "data" / "audio" / f"rec1{suffix}", noise(5.0))
    full, _ = sf.read(tmp_path / "data" / "audio" / f"rec1{suffix}", dtype="float32")
    folder = kaldi_dir(tmp_path / "data", wav_scp=f"rec1 audio/rec1{suffix}\n",
                       text="a FIRST PART\nb SECOND PART\n", segments="a rec1 0.5 2.0\nb rec1 2.5 -1\n")
    source = open_source(folder)
    assert detect_kind(folder) == "kaldi" and source.kind == "kaldi" and source.path == folder
    a, b = source
    assert (a.id, a.text, a.start, a.end, a.duration) == ("a", "FIRST PART", 0.5, 2.0, 1.5)
    assert (b.start, b.end, b.duration) == (2.5, None, None)
    assert a.audio == b.audio == folder / "audio" / f"rec1{suffix}"
    assert np.array_equal(load_utterance(a), full[int(0.5 * SR):int(2.0 * SR)])
    assert np.array_equal(load_utterance(b), full[int(2.5 * SR):])
    assert utterance_seconds(a) == 1.5 and utterance_seconds(b) == 2.5


def test_segment_bounds_and_the_duration_filter(tmp_path):
    write(tmp_path / "long.wav", tone(40.0))
    folder = kaldi_dir(tmp_path / "d", wav_scp=f"r {tmp_path / 'long.wav'}\n", text="ok x\nshort x\nover x\nlate x\n",
                       segments="ok r 10 13\nshort r 1 1.3\nover r 38 40.4\nlate r 39 42\n")
    ok, short, over, late = read_kaldi(folder)
    assert len(load_utterance(ok)) == 3 * SR  # the 40-s recording would be too long; the 3-s segment is not
    with pytest.raises(AudioSkip) as skip:
        load_utterance(short)
    assert skip.value.reason == "too_short"
    assert len(load_utterance(over)) == 2 * SR  # up to 0.5 s past the end is cut there (Kaldi's max overshoot)
    with pytest.raises(AudioSkip) as skip:
        load_utterance(late)
    assert skip.value.reason == "truncated" and "40.00 s" in skip.value.detail


def test_speakers_and_genders(tmp_path):
    for n in range(3):
        write(tmp_path / f"u{n}.wav", tone(1.5))
    scp = "".join(f"u{n} {tmp_path / f'u{n}.wav'}\n" for n in range(3))
    folder = kaldi_dir(tmp_path / "d", wav_scp=scp, text="u0 A\nu1 B\nu2 C\n", utt2spk="u0 spk1\nu1 spk2\nu2 spk3\n",
                       spk2gender="spk1 f\nspk2 M\n")
    assert [(u.speaker, u.gender) for u in read_kaldi(folder)] == [("spk1", "f"), ("spk2", "m"), ("spk3", None)]
    (folder / "utt2spk").unlink()
    assert [(u.speaker, u.gender, u.start, u.duration) for u in read_kaldi(folder)] == [(None, None, None, None)] * 3
    (folder / "utt2spk").write_text("u0 spk1\n")
    (folder / "spk2gender").write_text("spk1 f\nspk2 x\n")
    with pytest.raises(UserError, match=r"spk2gender:2: gender must be m or f, got 'x'"):
        read_kaldi(folder)


def test_missing_audio_is_skipped_by_the_loader(tmp_path):
    write(tmp_path / "d" / "ok.wav", tone(1.5))
    folder = kaldi_dir(tmp_path / "d", wav_scp="ok ok.wav\ngone gone.wav\n",
                       text="ok FINE\ngone NO FILE\nstray NOT IN WAV SCP\n")
    log = SkipLog(tmp_path / "run")
    dataset = SpeechDataset(open_source(folder), stub_processor(), log, source="train")
    assert dataset[0]["id"] == "ok" and dataset[1] is None and dataset[2] is None
    records = [json.loads(line) for line in (tmp_path / "run" / "skipped.jsonl").read_text().splitlines()]
    assert [(r["id"], r["reason"]) for r in records] == [("gone", "missing"), ("stray", "missing")]
    assert records[0]["path"].endswith("gone.wav") and records[0]["detail"] == "no such file"
    assert records[1]["detail"] == "'stray' is not listed in wav.scp"


def test_an_utterance_without_a_segment_is_skipped(tmp_path):
    write(tmp_path / "r.wav", tone(4.0))
    folder = kaldi_dir(tmp_path / "d", wav_scp=f"r {tmp_path / 'r.wav'}\n", text="a ONE\nb TWO\nc THREE\n",
                       segments="a r 0 1.5\nb nowhere 0 1.5\nonly r 2 3.5\n")
    utts = read_kaldi(folder)
    assert [u.id for u in utts] == ["a", "b", "c"]  # 'only' has no transcript: left out
    assert len(load_utterance(utts[0])) == 1.5 * SR
    for utt, listed in ((utts[1], "'nowhere' is not listed in wav.scp"), (utts[2], "'c' is not listed in segments")):
        with pytest.raises(AudioSkip) as skip:
            load_utterance(utt)
        assert (skip.value.reason, skip.value.detail) == ("missing", listed)


def test_piped_wav_scp_is_refused_in_one_line(tmp_path, capsys):
    write(tmp_path / "d" / "a.wav", tone(1.5))
    folder = kaldi_dir(tmp_path / "d", wav_scp="a a.wav\nb sox b.sph -t wav - |\n", text="a X\nb Y\n")
    assert main(["corpus", "pack", str(folder), "--out", str(tmp_path / "packed")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "wav.scp:2: 'b' is a piped command" in err
    assert "convert the audio to files" in err and "sox" in err and "list their paths" in err
    (folder / "wav.scp").write_text("a a.wav\nb raw.ark:1234\n")
    with pytest.raises(UserError, match=r"wav\.scp:2: 'b' points into a Kaldi archive"):
        open_source(folder)


@pytest.mark.parametrize("files, message", [
    ({"wav_scp": "a a.wav\nb\n", "text": "a X\n"}, r"wav\.scp:2: missing the audio path"),
    ({"wav_scp": "a a.wav\na b.wav\n", "text": "a X\n"}, r"wav\.scp:2: 'a' appears twice \(first on line 1\)"),
    ({"wav_scp": "a a.wav\n", "text": "a X\n\na Y\n"}, r"text:3: 'a' appears twice"),
    ({"wav_scp": "a a.wav\n", "text": "a X\n", "segments": "a a 0\n"}, r"segments:1: expected '<utterance-id> "),
    ({"wav_scp": "a a.wav\n", "text": "a X\n", "segments": "a a 0 x\n"}, r"segments:1: start and end must be seconds"),
    ({"wav_scp": "a a.wav\n", "text": "a X\n", "segments": "a a 2 1\n"}, r"segments:1: end 1 is not after start 2"),
    ({"wav_scp": "a a.wav\n", "text": "a X\n", "segments": "a a -1 2\n"}, r"segments:1: start must be"),
    ({"wav_scp": "a a.wav\n", "text": "a X\n", "utt2spk": "a s1 s2\n"}, r"utt2spk:1: expected '<utterance-id> "),
])
def test_format_errors_name_file_and_line(tmp_path, files, message):
    with pytest.raises(UserError, match=message) as err:
        open_source(kaldi_dir(tmp_path / "d", **files))
    assert "\n" not in str(err.value)


def test_unicode_and_empty_transcripts(tmp_path):
    write(tmp_path / "d" / "a.wav", tone(1.5))
    folder = kaldi_dir(tmp_path / "d", wav_scp="\ufeffa a.wav\nb a.wav\nc a.wav\n",
                       text="a Crème brûlée,  naïve café — 東京\nb\nc \tΑθήνα\n")
    utts = read_kaldi(folder)
    assert [(u.id, u.text) for u in utts] == [("a", "Crème brûlée,  naïve café — 東京"), ("b", ""),
                                              ("c", "Αθήνα")]
    # an empty transcript is kept, as a manifest line with "text": "" is
    (tmp_path / "m.jsonl").write_text('{"id": "b", "audio": "d/a.wav", "text": ""}\n')
    assert read_manifest(tmp_path / "m.jsonl")[0].text == ""
    (folder / "text").write_bytes(b"a fine\nb caf\xe9\n")
    with pytest.raises(UserError, match=r"text:2: not UTF-8"):
        read_kaldi(folder)


def test_relative_paths_resolve_against_the_folder_then_the_current_directory(tmp_path, monkeypatch):
    write(tmp_path / "d" / "wav" / "a.wav", tone(1.5))
    write(tmp_path / "recipe" / "wav" / "a.wav", tone(1.5))
    write(tmp_path / "recipe" / "corpus" / "b.wav", tone(1.5))
    folder = kaldi_dir(tmp_path / "d", wav_scp=f"a wav/a.wav\nb corpus/b.wav\nc {tmp_path / 'abs.wav'}\nd none.wav\n",
                       text="a A\nb B\nc C\nd D\n")
    monkeypatch.chdir(tmp_path / "recipe")
    a, b, c, d = read_kaldi(folder)
    assert a.audio == folder / "wav" / "a.wav"  # the data folder first, even when the cwd has it too
    assert b.audio == tmp_path / "recipe" / "corpus" / "b.wav" and b.audio.is_absolute()  # only in the cwd
    assert c.audio == tmp_path / "abs.wav"
    assert d.audio == folder / "none.wav"  # nowhere: skipped later as missing


def test_detection_needs_both_files(tmp_path):
    folder = kaldi_dir(tmp_path / "d", text="a X\n")
    with pytest.raises(UserError, match="has text but not wav.scp; a Kaldi data folder needs both"):
        detect_kind(folder)
    (folder / "wav.scp").write_text("a a.wav\n")
    (folder / "manifest.jsonl").write_text('{"id": "a", "audio": "a.wav", "text": "x"}\n')
    assert detect_kind(folder) == "manifest"  # a manifest beside the Kaldi files wins
    (folder / "manifest.jsonl").unlink()
    assert detect_kind(folder) == "kaldi"


def test_cache_fingerprint_covers_segment_bounds_only_when_set(tmp_path):
    write(tmp_path / "r.wav", tone(4.0))
    plain = Utterance(id="u", audio=tmp_path / "r.wav", text="hello")
    record = json.dumps(["u", "hello", audio_identity(plain)], ensure_ascii=False)
    assert utterance_fingerprints([plain]) == [hashlib.sha256(record.encode()).hexdigest()[:16]]  # as before
    folder = kaldi_dir(tmp_path / "d", wav_scp=f"u {tmp_path / 'r.wav'}\n", text="u hello\n")
    assert utterance_fingerprints(read_kaldi(folder)) == utterance_fingerprints([plain])  # no segments: same key
    fingerprints = []
    for bounds in ("0 1.5", "0 1.5", "0 1.6", "0.1 1.6", "0.1 -1"):
        (folder / "segments").write_text(f"u u {bounds}\n")
        fingerprints.append(utterance_fingerprints(read_kaldi(folder))[0])
    assert fingerprints[0] == fingerprints[1]
    assert len(set(fingerprints[1:])) == 4 and fingerprints[0] != utterance_fingerprints([plain])[0]


def test_pack_evaluate_and_label_read_segments(tmp_path, monkeypatch, capsys):
    from whisperkd.data import pseudo_label as labelling
    from whisperkd.evaluate.runner import decode_utterances

    write(tmp_path / "r.wav", noise(6.0))
    full, _ = sf.read(tmp_path / "r.wav", dtype="float32")
    folder = kaldi_dir(tmp_path / "d", wav_scp=f"r {tmp_path / 'r.wav'}\n", text="a ONE\nb TWO\n",
                       segments="a r 0.5 2.0\nb r 3.0 5.0\n")
    assert main(["corpus", "pack", str(folder), "--out", str(tmp_path / "p"), "--max-seconds", "10",
                 "--full-windows", "--gap-seconds", "0.5"]) == 0
    assert "1 windows from 2 utterances" in capsys.readouterr().out
    (window,) = read_manifest(tmp_path / "p" / "manifest.jsonl")
    packed, _ = sf.read(window.audio, dtype="float32")
    assert len(packed) == (1.5 + 0.5 + 2.0) * SR and window.duration == 4.0
    ev = decode_utterances(open_source(folder), "kaldi", folder, None, SkipLog())
    assert [len(x) for x in ev.audios] == [1.5 * SR, 2.0 * SR]
    monkeypatch.setattr(labelling, "transcribe_arrays",
                        lambda model, processor, audios, batch_size, window=None: ["one"] * len(audios))
    report = labelling.pseudo_label(None, None, open_source(folder), audio_dir=tmp_path / "cut", progress=False)
    for row, (first, last) in zip(report.rows, ((0.5, 2.0), (3.0, 5.0))):
        cut, _ = sf.read(row["audio"], dtype="float32")  # the segment's own file, not the whole recording
        assert Path(row["audio"]).parent == tmp_path / "cut" and row["duration"] == last - first
        assert np.allclose(cut, full[int(first * SR):int(last * SR)], atol=1e-4)
