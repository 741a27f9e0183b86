"""Packing short utterances into one Whisper window."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

from whisperkd.cli import main
from whisperkd.data.manifest import read_manifest, write_manifest
from whisperkd.data.pack import pack_manifest, plan_packs
from whisperkd.data.utterance import Utterance
from whisperkd.errors import UserError

SR = 16_000


def test_plan_fills_windows_and_keeps_every_index():
    durations = [5.0, 6.0, 7.0, 8.0, 29.5, 2.0, 3.0]
    groups = plan_packs(durations, max_seconds=20.0, gap_seconds=0.5, seed=1, varied=False)
    assert sorted(i for g in groups for i in g) == list(range(7))
    for g in groups:
        total = sum(durations[i] for i in g) + 0.5 * (len(g) - 1)
        assert total <= 20.0 or g == [4]
    assert [4] in groups  # longer than a window: alone
    assert plan_packs(durations, 20.0, 0.5, seed=1, varied=False) == groups


def test_varied_targets_give_windows_of_every_size():
    durations = [4.0] * 400
    groups = plan_packs(durations, max_seconds=28.0, gap_seconds=0.4, seed=0)
    sizes = [len(g) for g in groups]
    assert sorted(i for g in groups for i in g) == list(range(400))
    assert max(sizes) <= 6  # 6 x 4 s + 5 gaps = 26 s
    assert {1, 2, 3, 4, 5, 6} <= set(sizes)
    full = plan_packs(durations, max_seconds=28.0, gap_seconds=0.4, seed=0, varied=False)
    assert len(full) < len(groups) and {len(g) for g in full} <= {6, 400 % 6}


def _corpus(tmp_path, seconds):
    utts = []
    for n, s in enumerate(seconds):
        path = tmp_path / f"u{n}.wav"
        sf.write(path, np.full(int(s * SR), 0.1 * (n + 1), dtype=np.float32), SR)
        utts.append(Utterance(id=f"u{n}", audio=path, text=f"sentence {n}.", duration=s, speaker=f"v{n % 2}"))
    return write_manifest(tmp_path / "manifest.jsonl", utts)


def test_pack_concatenates_audio_and_text_in_order(tmp_path):
    manifest = _corpus(tmp_path, [1.0, 1.5, 2.0, 1.2, 1.1])
    out = pack_manifest(manifest, tmp_path / "packed", max_seconds=4.0, gap_seconds=0.25, seed=3, varied=False)
    windows = read_manifest(out)
    groups = plan_packs([1.0, 1.5, 2.0, 1.2, 1.1], 4.0, 0.25, seed=3, varied=False)
    assert len(windows) == len(groups) < 5
    for window, group in zip(windows, groups):
        assert window.text == " ".join(f"sentence {i}." for i in group)
        audio, sr = sf.read(window.audio, dtype="float32")
        assert sr == SR
        assert len(audio) == pytest.approx(window.duration * SR, abs=2)
        # each member's constant level appears in order, separated by silence
        first = audio[: int(0.5 * SR)]
        assert np.allclose(first, 0.1 * (group[0] + 1), atol=1e-3)
        if len(group) > 1:
            gap_start = int(([1.0, 1.5, 2.0, 1.2, 1.1][group[0]]) * SR) + 10
            assert np.allclose(audio[gap_start:gap_start + 100], 0.0)
    # a rerun reuses the windows and writes the same manifest
    before = out.read_text()
    assert pack_manifest(manifest, tmp_path / "packed", max_seconds=4.0, gap_seconds=0.25, seed=3,
                         varied=False).read_text() == before
    # other arguments: other windows, never a stale file under a reused name
    other = read_manifest(pack_manifest(manifest, tmp_path / "packed", max_seconds=2.0, gap_seconds=0.25, seed=3))
    for window in other:
        assert len(sf.read(window.audio)[0]) == pytest.approx(window.duration * SR, abs=2)


def test_unreadable_member_names_the_file(tmp_path):
    manifest = _corpus(tmp_path, [1.0, 1.0])
    (tmp_path / "u1.wav").write_bytes(b"RIFF not really")
    with pytest.raises(UserError, match="u1.wav: cannot pack"):
        pack_manifest(manifest, tmp_path / "packed", max_seconds=10.0)


def test_a_member_under_one_second_is_packed(tmp_path):
    manifest = _corpus(tmp_path, [0.5, 1.0])
    windows = read_manifest(pack_manifest(manifest, tmp_path / "packed", max_seconds=10.0, varied=False))
    assert len(windows) == 1
    assert len(sf.read(windows[0].audio)[0]) == pytest.approx((0.5 + 0.4 + 1.0) * SR, abs=2)


def test_cli_pack(tmp_path, capsys):
    manifest = _corpus(tmp_path, [1.0, 1.0, 1.0])
    assert main(["corpus", "pack", str(manifest), "--out", str(tmp_path / "p"), "--max-seconds", "10",
                 "--full-windows"]) == 0
    assert "1 windows from 3 utterances" in capsys.readouterr().out
