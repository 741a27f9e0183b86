"""Read a CTranslate2 ``model.bin`` (binary format version 6) into numpy arrays.

Layout: ``u32 version``; spec name (``u16`` length including NUL, bytes); ``u32 revision``;
``u32 count``; per variable: name, ``u8 rank``, ``rank x u32`` dims, ``u8 dtype``, ``u32 nbytes``,
raw little-endian data; then ``u32`` alias count and (alias, target) name pairs.
A model may be split in part files (``model.bin.part1``, ``model.bin.part2``, ...) that are
simply concatenated.
"""

from __future__ import annotations

import re
import struct
from pathlib import Path

import numpy as np

from whisperkd.errors import UserError

SUPPORTED_VERSION = 6
DTYPES = {0: np.float32, 1: np.int8, 2: np.int16, 3: np.int32, 4: np.float16, 5: "bfloat16"}


def model_bin_parts(model_dir: Path) -> list[Path]:
    """The file(s) holding ``model.bin`` in ``model_dir``: the file itself or its numbered parts."""
    model_dir = Path(model_dir)
    single = model_dir / "model.bin"
    if single.is_file():
        return [single]
    parts = sorted(
        (p for p in model_dir.glob("model.bin.part*") if re.fullmatch(r"model\.bin\.part\d+", p.name)),
        key=lambda p: int(p.name.rsplit("part", 1)[1]),
    )
    if not parts:
        raise UserError(f"{model_dir}: no model.bin (or model.bin.partN files); pass a CTranslate2 model directory")
    return parts


class _Reader:
    def __init__(self, data: bytes, label: str):
        self.data = memoryview(data)
        self.pos = 0
        self.label = label

    def take(self, n: int, what: str) -> memoryview:
        if self.pos + n > len(self.data):
            raise UserError(
                f"{self.label}: truncated CTranslate2 model.bin ({what} needs {n} bytes at offset {self.pos}, "
                f"only {len(self.data) - self.pos} left); the file is incomplete, download it again or use another model"
            )
        chunk = self.data[self.pos : self.pos + n]
        self.pos += n
        return chunk

    def unpack(self, fmt: str, what: str):
        return struct.unpack("<" + fmt, self.take(struct.calcsize(fmt), what))[0]

    def string(self, what: str) -> str:
        length = self.unpack("H", what)
        return bytes(self.take(length, what)).rstrip(b"\x00").decode("utf-8")


def read_model_bin(paths: list[Path] | Path, expected_spec: str = "WhisperSpec") -> tuple[dict[str, np.ndarray], dict]:
    """Read the variables of a CTranslate2 model.

    Returns ``(variables, meta)`` where aliases are resolved into ``variables`` and ``meta`` holds
    ``version``, ``spec``, ``revision`` and ``aliases``. Raises :class:`UserError` (naming the file)
    for a truncated file, an unknown version or a spec other than ``expected_spec``.
    """
    paths = [Path(paths)] if isinstance(paths, (str, Path)) else [Path(p) for p in paths]
    label = str(paths[0]) if len(paths) == 1 else f"{paths[0]} (+{len(paths) - 1} part files)"
    try:
        data = b"".join(p.read_bytes() for p in paths)
    except OSError as err:
        raise UserError(f"{err.filename}: cannot read CTranslate2 model file ({err.strerror})") from None
    reader = _Reader(data, label)
    version = reader.unpack("I", "format version")
    if version != SUPPORTED_VERSION:
        raise UserError(f"{label}: CTranslate2 binary version {version} is not supported (expected {SUPPORTED_VERSION})")
    spec = reader.string("spec name")
    if spec != expected_spec:
        raise UserError(f"{label}: model spec is {spec!r}, expected {expected_spec!r}; this is not a Whisper model")
    revision = reader.unpack("I", "spec revision")
    count = reader.unpack("I", "variable count")
    variables: dict[str, np.ndarray] = {}
    for _ in range(count):
        name = reader.string("variable name")
        rank = reader.unpack("B", f"rank of {name}")
        shape = tuple(reader.unpack("I", f"shape of {name}") for _ in range(rank))
        dtype_code = reader.unpack("B", f"dtype of {name}")
        nbytes = reader.unpack("I", f"size of {name}")
        raw = reader.take(nbytes, f"variable {name}")
        if dtype_code not in DTYPES:
            raise UserError(f"{label}: variable {name} has unknown dtype code {dtype_code}")
        variables[name] = _to_array(raw, DTYPES[dtype_code], shape)
    aliases = {}
    if reader.pos < len(reader.data):
        for _ in range(reader.unpack("I", "alias count")):
            alias = reader.string("alias name")
            aliases[alias] = reader.string(f"target of alias {alias}")
    for alias, target in aliases.items():
        variables[alias] = variables[target]
    meta = {"version": version, "spec": spec, "revision": revision, "aliases": aliases}
    return variables, meta


def _to_array(raw: memoryview, dtype, shape: tuple[int, ...]) -> np.ndarray:
    if dtype == "bfloat16":
        halves = np.frombuffer(raw, dtype=np.uint16).astype(np.uint32) << 16
        return halves.view(np.float32).reshape(shape)
    return np.frombuffer(raw, dtype=dtype).reshape(shape).copy()


def dequantize(variables: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Turn int8 weights with ``<name>_scale`` (per output row) into float32 (``w = q / scale``)."""
    out = dict(variables)
    for name in list(variables):
        if not name.endswith("weight_scale"):
            continue
        weight_name = name[: -len("_scale")]
        q = variables[weight_name].astype(np.float32)
        scale = variables[name].astype(np.float32)
        out[weight_name] = q / scale.reshape((-1,) + (1,) * (q.ndim - 1))
        del out[name]
    return out
