"""``whisperkd transcribe`` for real use: inputs (files, folders, globs, manifests), skips and exit codes, the four
output formats (srt and vtt parsed back), the CTranslate2 guard and seek loop, and long-form transcription of a
75-s recording of three known utterances by tiny.en in HF and in CTranslate2."""

from __future__ import annotations

import builtins
import json
import os
import re
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import soundfile as sf

from helpers import tiny_whisper_config, tone, write
from whisperkd.cli import main
from whisperkd.deploy.ct2_longform import Decode, guarded_generate, split_window
from whisperkd.deploy.inputs import collect_inputs
from whisperkd.deploy.transcript import Segment, timed
from whisperkd.deploy.writers import clock, to_srt, to_vtt
from whisperkd.models.decode import Fallback
from whisperkd.text import wer

CT2_TINY = Path("~/.cache/whisperkd/models/ct2/tiny.en").expanduser()
SRT_CUE = re.compile(r"(\d+)\n(\d\d+):(\d\d):(\d\d),(\d{3}) --> (\d\d+):(\d\d):(\d\d),(\d{3})\n(.+)")
VTT_CUE = re.compile(r"(\d\d+):(\d\d):(\d\d)\.(\d{3}) --> (\d\d+):(\d\d):(\d\d)\.(\d{3})\n(.+)")
# The 75-s recording: three sentences tiny.en gets right in espeak-ng's en-us voice, at these seconds, in silence.
SENTENCES = ("Please send me the report before the meeting tomorrow.",
             "Turn left at the next corner and drive to the station.",
             "She opened the window because the room was too warm.")
STARTS = (4.0, 33.0, 61.0)


def parse_srt(text: str) -> list[tuple[int, float, float, str]]:
    blocks = [b for b in text.strip().split("\n\n") if b]
    cues = []
    for block in blocks:
        m = SRT_CUE.fullmatch(block)
        assert m, f"not an SRT cue: {block!r}"
        g = m.groups()
        cues.append((int(g[0]), int(g[1]) * 3600 + int(g[2]) * 60 + int(g[3]) + int(g[4]) / 1000,
                     int(g[5]) * 3600 + int(g[6]) * 60 + int(g[7]) + int(g[8]) / 1000, g[9]))
    return cues


def parse_vtt(text: str) -> list[tuple[float, float, str]]:
    head, *blocks = text.strip().split("\n\n")
    assert head == "WEBVTT"
    cues = []
    for block in blocks:
        m = VTT_CUE.fullmatch(block)
        assert m, f"not a WebVTT cue: {block!r}"
        g = m.groups()
        cues.append((int(g[0]) * 3600 + int(g[1]) * 60 + int(g[2]) + int(g[3]) / 1000,
                     int(g[4]) * 3600 + int(g[5]) * 60 + int(g[6]) + int(g[7]) / 1000, g[8]))
    return cues


def check_times(times: list[tuple[float, float]], duration: float) -> None:
    assert times, "no segments"
    for (start, end), (next_start, _) in zip(times, times[1:] + [(duration, None)]):
        assert 0 <= start <= end <= next_start <= duration


# ---------------------------------------------------------------- inputs

def test_inputs_from_folders_globs_manifests_and_files(tmp_path):
    root = tmp_path / "talks"
    for rel in ("b.wav", "a/x.flac", "a/deep/y.WAV", "c/x.flac"):
        write(root / rel, tone(1.0))
    (root / "notes.txt").write_text("not audio")
    corpus = tmp_path / "corpus"
    write(corpus / "u1.wav", tone(1.0))
    (corpus / "manifest.jsonl").write_text(json.dumps({"id": "spk/u1", "audio": "u1.wav", "text": "hi"}) + "\n")

    items, unmatched = collect_inputs([str(root)])
    assert [i.name for i in items] == ["a/deep/y", "a/x", "b", "c/x"] and not unmatched
    assert items[0].label == str(root / "a/deep/y.WAV") and items[0].audio == items[0].label

    items, _ = collect_inputs([str(root / "**" / "x.flac"), str(root / "b.wav"), str(root / "b.wav")])
    assert [i.name for i in items] == ["a/x", "c/x", "b", "b-2"]  # a repeated file keeps both, named apart

    for spec in (corpus, corpus / "manifest.jsonl"):
        items, _ = collect_inputs([str(spec)])
        assert [(i.label, i.name, i.audio) for i in items] == [("spk/u1", "spk/u1", str(corpus / "u1.wav"))]

    items, unmatched = collect_inputs([str(tmp_path / "*.mp3"), str(tmp_path / "missing.wav")])
    assert [(u.reason, u.detail) for u in unmatched] == [("missing", "no file matches this pattern")]
    assert [i.label for i in items] == [str(tmp_path / "missing.wav")]  # reported as missing when probed


# ---------------------------------------------------------------- formats

def test_srt_and_vtt_parse_back():
    segments = [Segment(0.0, 2.5, "First line."), Segment(2.5, 61.0004, "Second --> line"),
                Segment(3599.9996, 3725.25, "An hour in.")]
    assert clock(3725.25, ",") == "01:02:05,250" and clock(3599.9996, ".") == "01:00:00.000"
    cues = parse_srt(to_srt(segments))
    assert [c[0] for c in cues] == [1, 2, 3]
    assert [(c[1], c[2]) for c in cues] == [(0.0, 2.5), (2.5, 61.0), (3600.0, 3725.25)]
    assert [c[3] for c in cues] == ["First line.", "Second -> line", "An hour in."]
    assert [(s, e, t) for s, e, t in parse_vtt(to_vtt(segments))] == [(c[1], c[2], c[3]) for c in cues]


def test_timed_segments_are_cut_to_the_recording_and_ordered():
    t = timed([Segment(0.0, 5.0, " a  b "), Segment(4.0, 9.0, "c"), Segment(9.0, 30.0, ""),
               Segment(20.0, 40.0, "d")], duration=25.0)
    assert t.text == "a b c d" and t.temperature is None
    assert [(s.start, s.end) for s in t.segments] == [(0.0, 5.0), (5.0, 9.0), (20.0, 25.0)]


# ---------------------------------------------------------------- the CTranslate2 seek loop and guard

def test_split_window_seeks_like_whisper():
    t0 = 1000  # <|0.00|>; each step is 0.02 s = 2 log-mel frames
    ts = lambda s: t0 + round(s / 0.02)  # noqa: E731
    # two closed segments, then a single timestamp: no speech after it, seek by the whole window
    parts, seek = split_window([ts(0), 1, 2, ts(2), ts(2.4), 3, ts(4)], t0, offset=10.0, size=3000)
    assert [(s, e) for s, e, _ in parts] == [(10.0, 12.0), (12.4, 14.0)] and seek == 3000
    # ends on a pair: the last segment is complete, seek to its end
    parts, seek = split_window([ts(0), 1, ts(2), ts(3), 2, ts(5), ts(5)], t0, offset=0.0, size=3000)
    assert [(s, e) for s, e, _ in parts] == [(0.0, 2.0), (3.0, 5.0)] and seek == 500
    # an unfinished segment after the last pair is dropped and decoded again from the pair's end
    parts, seek = split_window([ts(0), 1, ts(2), ts(2), 4, 5], t0, offset=0.0, size=3000)
    assert [(s, e, tok) for s, e, tok in parts] == [(0.0, 2.0, [ts(0), 1, ts(2)])] and seek == 200
    # no pair of timestamps (a student that never predicts them): one segment, the whole window
    parts, seek = split_window([ts(0), 1, 2, 3], t0, offset=30.0, size=1500)
    assert [(s, e) for s, e, _ in parts] == [(30.0, 45.0)] and seek == 1500
    parts, seek = split_window([ts(0), 1, 2, ts(7.5)], t0, offset=0.0, size=3000)
    assert [(s, e) for s, e, _ in parts] == [(0.0, 7.5)] and seek == 3000
    # a pair at 0.00 would never move: the seek moves by the whole window instead
    assert split_window([ts(0), ts(0), 1], t0, offset=0.0, size=3000)[1] == 3000


class ScriptedCT2:
    """A stand-in for ``ctranslate2.models.Whisper``: per call, the (tokens, score) of each row, by temperature."""

    def __init__(self, script):
        self.script, self.calls = script, []

    def generate(self, features, prompts, **kwargs):
        temperature = kwargs.get("sampling_temperature", 0.0)
        self.calls.append((temperature, len(prompts)))
        rows = self.script[temperature][: len(prompts)] if temperature else self.script[0.0]
        return [SimpleNamespace(sequences_ids=[tokens], scores=[score], no_speech_prob=0.0) for tokens, score in rows]


def test_guarded_generate_decodes_failing_windows_again():
    loop = [7, 8] * 40  # compresses far beyond 1.35
    model = ScriptedCT2({0.0: [([1, 2, 3], -0.2), (loop, -0.1), ([4, 5], -3.0)],
                         0.2: [([9, 10, 11], -0.3), ([6], -2.5)],  # row 1 passes; row 2 fails again
                         0.4: [([6, 6], -2.0)], 0.6: [([6], -2.2)], 0.8: [([6], -2.9)], 1.0: [([6], -2.4)]})
    feats = np.zeros((3, 80, 100), dtype=np.float32)
    kept, repeated = guarded_generate(model, feats, [1], 50, Fallback(), vocab_size=51864)
    assert [c[1] for c in model.calls] == [3, 2, 1, 1, 1, 1] and repeated == 6
    assert kept[0] == Decode([1, 2, 3], -0.2 * 3 / 4, 0.0)
    assert kept[1].tokens == [9, 10, 11] and kept[1].temperature == 0.2
    # failing at every temperature: the most likely decode is kept (at 0.6: -2.2 * 1/2 = -1.1)
    assert kept[2] == Decode([6], -1.1, 0.6)
    model.calls.clear()
    kept, repeated = guarded_generate(model, feats, [1], 50, None, vocab_size=51864)
    assert model.calls == [(0.0, 3)] and repeated == 0 and kept[1].tokens == loop


# ---------------------------------------------------------------- the command on a tiny random model

@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory, tiny_en_dir) -> Path:
    """A random tiny Whisper with tiny.en's processor and generation config (timestamps work)."""
    import torch
    from transformers import GenerationConfig, WhisperForConditionalGeneration

    from whisperkd.models.loading import load_processor

    out = tmp_path_factory.mktemp("tiny-model")
    torch.manual_seed(0)
    model = WhisperForConditionalGeneration(tiny_whisper_config())
    model.generation_config = GenerationConfig.from_pretrained(tiny_en_dir)
    model.save_pretrained(out)
    load_processor(tiny_en_dir).save_pretrained(out)
    return out


def _deny(monkeypatch, path: Path) -> None:
    """Make ``path`` unreadable: chmod 000, and for root (who reads it anyway) the PermissionError an unprivileged
    user gets, where whisperkd.data.audio opens it."""
    import whisperkd.data.audio as audio

    path.chmod(0)
    if os.geteuid() == 0:
        def guarded_open(file, *args, **kwargs):
            if Path(file) == path:
                raise PermissionError(13, "Permission denied", str(file))
            return builtins.open(file, *args, **kwargs)

        monkeypatch.setattr(audio, "open", guarded_open, raising=False)


def test_bad_and_unreadable_files_are_listed_skipped_exit_3(tiny_model_dir, tmp_path, monkeypatch, capsys):
    folder = tmp_path / "in"
    good = [write(folder / "good1.wav", tone(2.0)), write(folder / "sub" / "good2.flac", tone(3.0, freq=300))]
    (folder / "noise.wav").write_bytes(b"this is not audio" * 50)
    silent = write(folder / "silent.wav", np.zeros(32000, dtype=np.float32))  # readable header, fails at load
    locked = write(folder / "locked.wav", tone(1.0))
    _deny(monkeypatch, locked)
    out = tmp_path / "out"
    code = main(["transcribe", str(tiny_model_dir), str(folder), "--out-dir", str(out), "--no-fallback"])
    err = capsys.readouterr().err.splitlines()
    assert code == 3
    reasons = dict(line[len("skipped "):].partition(": ")[::2] for line in err if line.startswith("skipped "))
    assert {path: reason.split(" ")[0] for path, reason in reasons.items()} == {
        str(locked): "unreadable", str(folder / "noise.wav"): "not_audio", str(silent): "silent"}
    assert reasons[str(locked)] == "unreadable (PermissionError: Permission denied)"
    records = [json.loads(line) for line in (out / "skipped.jsonl").read_text().splitlines()]
    assert sorted((r["path"], r["reason"]) for r in records) == sorted(
        (path, reason.split(" ")[0]) for path, reason in reasons.items())
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*.txt")) == ["good1.txt", "sub/good2.txt"]
    assert all((out / name).read_text().endswith("\n") for name in ("good1.txt", "sub/good2.txt")) and len(good) == 2


def test_nothing_usable_is_exit_2(tiny_model_dir, tmp_path, capsys):
    bad = [tmp_path / "a.wav", tmp_path / "b.wav"]
    bad[0].write_bytes(b"")
    assert main(["transcribe", str(tiny_model_dir), *map(str, bad), str(tmp_path / "*.ogg")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert sorted(err[:3]) == sorted([f"skipped {bad[0]}: empty (0 bytes)", f"skipped {bad[1]}: missing (no such file)",
                                      f"skipped {tmp_path / '*.ogg'}: missing (no file matches this pattern)"])
    assert err[3:] == ["whisperkd transcribe: error: none of the 3 inputs is usable (each is listed above)"]
    silent = write(tmp_path / "quiet.wav", np.zeros(32000, dtype=np.float32))  # fails only when decoded
    assert main(["transcribe", str(tiny_model_dir), str(silent)]) == 2
    assert capsys.readouterr().err.strip().splitlines()[-2:] == [
        f"skipped {silent}: silent (peak 0.00e+00)",
        "whisperkd transcribe: error: no input could be transcribed (1 skipped, each listed above)"]


def test_glob_manifest_and_file_to_jsonl_in_input_order(tiny_model_dir, tmp_path, capsys):
    write(tmp_path / "clips" / "one.wav", tone(2.0))
    write(tmp_path / "clips" / "two.wav", tone(4.0, freq=250))
    write(tmp_path / "three.flac", tone(3.0, freq=330))
    (tmp_path / "m.jsonl").write_text(json.dumps({"id": "m1", "audio": "clips/two.wav", "text": ""}) + "\n")
    code = main(["transcribe", str(tiny_model_dir), str(tmp_path / "clips" / "*.wav"), str(tmp_path / "m.jsonl"),
                 str(tmp_path / "three.flac"), "--format", "jsonl", "--no-fallback", "--batch-size", "2"])
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert code == 0
    assert [(r["id"], r["audio"], r["duration"]) for r in rows] == [
        ("one", str(tmp_path / "clips" / "one.wav"), 2.0), ("two", str(tmp_path / "clips" / "two.wav"), 4.0),
        ("m1", str(tmp_path / "clips" / "two.wav"), 4.0), ("three", str(tmp_path / "three.flac"), 3.0)]
    for r in rows:  # short clips without timestamps: one segment over the clip (none for an empty text)
        assert r["segments"] == ([{"start": 0.0, "end": r["duration"], "text": r["text"]}] if r["text"] else [])


def test_usage_errors_are_one_line_exit_2(tiny_model_dir, tmp_path, capsys):
    clip = str(write(tmp_path / "c.wav", tone(1.0)))
    for extra, message in [(["--format", "srt"], "--format srt writes one subtitle file per recording: add --out-dir"),
                           (["--jsonl", "--format", "txt"], "--jsonl and --format txt disagree"),
                           (["--device", "gpu"], "--device 'gpu': use cpu, cuda or cuda:N"),
                           (["--device", "cuda:7"], "--device cuda:7: "),
                           (["--assistant", "tiny.en", "--encoder-window", "10"], "--assistant decodes with 30-s")]:
        assert main(["transcribe", str(tiny_model_dir), clip, *extra]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and message in err[0], err


def test_assistant_goes_to_speculative_decoding(tmp_path, monkeypatch, capsys):
    import whisperkd.deploy.speculative as speculative

    opened = []

    class Engine:
        def transcribe(self, audios):
            return [f"{len(a) / 16000:g} seconds" for a in audios]

    def fake_open(teacher, assistant, device="cpu"):
        opened.append((teacher, assistant, device))
        return Engine()

    monkeypatch.setattr(speculative, "open_speculative", fake_open)
    short, long = write(tmp_path / "s.wav", tone(2.0)), write(tmp_path / "l.wav", tone(31.0))
    out = tmp_path / "out"
    assert main(["transcribe", "base", str(short), "--assistant", "run/x", "--format", "vtt", "--out-dir", str(out)]) == 0
    assert opened == [("base", "run/x", "cpu")]
    assert parse_vtt((out / "s.vtt").read_text()) == [(0.0, 2.0, "2 seconds")]
    capsys.readouterr()
    assert main(["transcribe", "base", str(short), str(long), "--assistant", "run/x"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(long) in err[0] and "add --no-timestamps" in err[0] and len(opened) == 1
    # without timestamps a long recording is cut into consecutive 30-s windows, one cue each
    write(tmp_path / "l.wav", tone(65.0))
    assert main(["transcribe", "base", str(long), "--assistant", "run/x", "--no-timestamps", "--format", "srt",
                 "--out-dir", str(out)]) == 0
    assert parse_srt((out / "l.srt").read_text()) == [(1, 0.0, 30.0, "30 seconds"), (2, 30.0, 60.0, "30 seconds"),
                                                      (3, 60.0, 65.0, "5 seconds")]


# ---------------------------------------------------------------- real models

@pytest.fixture(scope="module")
def long_recording(tmp_path_factory) -> tuple[Path, list[tuple[float, float]]]:
    """75 s: the three SENTENCES spoken by espeak-ng (en-us) from STARTS, silence elsewhere; and each sentence's
    time span (the recording split halfway between sentences)."""
    import soxr

    from whisperkd.data.tts import synthesize
    from whisperkd.data.voices import parse_voice

    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng not installed (make system-packages)")
    root = tmp_path_factory.mktemp("long")
    samples = np.zeros(75 * 16000, dtype=np.float32)
    ends = []
    for (data, rate), start in zip(synthesize(parse_voice("espeak:en-us"), list(SENTENCES), root / "tts"), STARTS):
        data = soxr.resample(data, rate, 16000) if rate != 16000 else data
        first = int(start * 16000)
        samples[first:first + len(data)] = data
        ends.append(start + len(data) / 16000)
    bounds = [0.0] + [(end + start) / 2 for end, start in zip(ends, STARTS[1:])] + [75.0]
    path = root / "three.wav"
    sf.write(path, samples, 16000)
    return path, list(zip(bounds, bounds[1:]))


@pytest.mark.parametrize("engine,extra", [("hf", []), ("ct2", []), ("hf", ["--no-timestamps"])])
def test_long_form_finds_the_three_utterances_in_order(engine, extra, tiny_en_dir, long_recording, tmp_path):
    if engine == "ct2" and not (CT2_TINY / "model.bin").is_file():
        pytest.skip(f"no CTranslate2 tiny.en at {CT2_TINY} (make models)")
    path, spans = long_recording
    model = str(tiny_en_dir) if engine == "hf" else str(CT2_TINY)
    out = tmp_path / "out"
    assert main(["transcribe", model, str(path), "--format", "jsonl", "--out-dir", str(out), "--quiet", *extra]) == 0
    (row,) = [json.loads(line) for line in (out / "transcripts.jsonl").read_text().splitlines()]
    segments = row["segments"]
    check_times([(s["start"], s["end"]) for s in segments], 75.0)
    for sentence, (lo, hi) in zip(SENTENCES, spans):
        said = " ".join(s["text"] for s in segments if lo <= (s["start"] + s["end"]) / 2 < hi)
        assert wer([sentence], [said], normalized=False) < 0.5, (sentence, said, segments)
    if extra:  # without timestamps: one segment per 30-s window
        assert [(s["start"], s["end"]) for s in segments] == [(0.0, 30.0), (30.0, 60.0), (60.0, 75.0)]


def test_short_clips_with_timestamps_in_srt(tiny_en_dir, real_speech_dir, tmp_path):
    clip = real_speech_dir / "jfk.wav"
    out = tmp_path / "out"
    assert main(["transcribe", "tiny.en", str(clip), "--format", "srt", "--out-dir", str(out), "--quiet"]) == 0
    cues = parse_srt((out / "jfk.srt").read_text())
    duration = sf.info(str(clip)).duration
    assert [c[0] for c in cues] == list(range(1, len(cues) + 1)) and len(cues) >= 2  # real timestamps: several cues
    check_times([(c[1], c[2]) for c in cues], duration)
    assert "country" in " ".join(c[3] for c in cues)


def test_ct2_texts_without_fallback_are_the_evaluate_engines(real_speech_dir):
    from whisperkd.data.audio import load_audio
    from whisperkd.deploy.ct2_longform import ct2_texts
    from whisperkd.evaluate.engines import open_model

    if not (CT2_TINY / "model.bin").is_file():
        pytest.skip(f"no CTranslate2 tiny.en at {CT2_TINY} (make models)")
    engine = open_model(str(CT2_TINY))
    audios = [load_audio(p, durations=None) for p in sorted(real_speech_dir.glob("*.wav"))[:4]]
    _, texts, repeated = ct2_texts(engine, audios, 30)
    assert texts == engine.transcribe(audios) and repeated == 0 and all(texts)


def test_ct2_batched_long_form_equals_one_at_a_time(long_recording, tmp_path):
    from whisperkd.deploy.ct2_longform import ct2_segments
    from whisperkd.evaluate.engines import open_model

    if not (CT2_TINY / "model.bin").is_file():
        pytest.skip(f"no CTranslate2 tiny.en at {CT2_TINY} (make models)")
    engine = open_model(str(CT2_TINY))
    audio, _ = sf.read(long_recording[0], dtype="float32")
    together, _ = ct2_segments(engine, [audio, audio[:45 * 16000]], 30, Fallback())
    alone, _ = ct2_segments(engine, [audio[:45 * 16000]], 30, Fallback())
    assert together[1] == alone[0] and len(alone[0]) == 2 and len(together[0]) == 3
