"""Audio decoding: formats, mono mix, soxr resampling, duration filter, and a fuzz set of unusable files."""

from __future__ import annotations

import json

import numpy as np
import pytest

from whisperkd.data.audio import AudioSkip, DurationFilter, load_audio, to_mono_16k
from whisperkd.data.skiplog import SkipLog
from helpers import tone, write


def test_fuzz_set_is_skipped_with_the_right_reasons(tmp_path, bad_files):
    cases = bad_files
    assert len(cases) >= 20
    log = SkipLog(tmp_path / "run")
    for path, reason in cases.items():
        try:
            load_audio(path)
        except AudioSkip as skip:
            log.add("fuzz", path.name, path, skip.reason, skip.detail)
            assert skip.reason == reason, f"{path.name}: {skip.reason} ({skip.detail}), expected {reason}"
        else:
            pytest.fail(f"{path.name} was accepted, expected {reason}")
    lines = (tmp_path / "run" / "skipped.jsonl").read_text().splitlines()
    assert [json.loads(line)["reason"] for line in lines] == list(cases.values())
    assert log.count == len(cases)
    assert log.summary().startswith(f"{len(cases)} skipped (")


def test_8khz_stereo_comes_out_16khz_mono(tmp_path):
    stereo = tone(2.0, rate=8000, channels=2, freq=300.0)
    out = load_audio(write(tmp_path / "stereo8k.wav", stereo, rate=8000))
    assert out.dtype == np.float32 and out.ndim == 1
    assert len(out) == 32000
    spectrum = np.abs(np.fft.rfft(out))
    assert abs(np.argmax(spectrum) * 16000 / len(out) - 300.0) < 2.0
    # mean of the two channels (amplitudes 0.15 and 0.3) -> 0.225; soxr keeps the level
    assert abs(np.max(np.abs(out[1000:-1000])) - 0.225) < 0.01


def test_soxr_is_not_linear_interpolation():
    x = tone(1.0, rate=22050, freq=7000.0)  # near the new Nyquist: linear interpolation distorts it
    out = to_mono_16k(x, 22050)
    import soxr

    assert np.allclose(out, soxr.resample(x, 22050, 16000, quality="HQ"))
    linear = np.interp(np.arange(16000) / 16000, np.arange(22050) / 22050, x)
    assert np.max(np.abs(out[100:-100] - linear[100:-100])) > 0.01


@pytest.mark.parametrize("ext", ["wav", "flac", "ogg"])
def test_formats_decode(tmp_path, ext):
    out = load_audio(write(tmp_path / f"a.{ext}", tone(1.5, rate=22050), rate=22050))
    assert abs(len(out) - 24000) <= 1


def test_wrong_extension_is_read_by_content(tmp_path):
    wav = write(tmp_path / "real.wav", tone(1.5))
    renamed = tmp_path / "really_a_wav.flac"
    renamed.write_bytes(wav.read_bytes())
    assert len(load_audio(renamed)) == 24000


def test_duration_filter_is_configurable(tmp_path):
    path = write(tmp_path / "long.wav", tone(45.0))
    with pytest.raises(AudioSkip) as err:
        load_audio(path)
    assert err.value.reason == "too_long"
    assert len(load_audio(path, durations=DurationFilter(1.0, 60.0))) == 45 * 16000
    with pytest.raises(AudioSkip, match="too_short"):
        load_audio(write(tmp_path / "two.wav", tone(2.0)), durations=DurationFilter(3.0, 30.0))
    assert len(load_audio(write(tmp_path / "tiny.wav", tone(0.2)), durations=None)) == 3200


def test_bytes_and_arrays(tmp_path):
    data = write(tmp_path / "a.flac", tone(1.5)).read_bytes()
    assert len(load_audio(data)) == 24000
    assert len(load_audio(tone(2.0, rate=48000), sample_rate=48000)) == 32000
    with pytest.raises(AudioSkip, match="non_finite"):
        load_audio(np.full(32000, np.nan, dtype=np.float32), sample_rate=16000)
    with pytest.raises(AudioSkip, match="empty"):
        load_audio(b"")


def test_skiplog_reset_and_memory(tmp_path):
    log = SkipLog(tmp_path)
    log.add("s", "a", None, "empty")
    assert SkipLog(tmp_path).count == 1  # another process or object sees the same file
    assert SkipLog(tmp_path, reset=True).count == 0
    memory = SkipLog()
    memory.add("s", "b", tmp_path / "b.wav", "silent", "peak 0")
    assert memory.count == 1 and memory.records()[0]["path"].endswith("b.wav")
    assert memory.summary() == "1 skipped (1 silent)"
