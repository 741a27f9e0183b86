"""Checkpoints of a run: ``checkpoint/step-000100/``, written atomically, the last K kept.

A checkpoint holds everything an exact resume needs:

    trainable.safetensors  the parameters with requires_grad (student parts or LoRA matrices, projector)
    best.safetensors       the same parameters of the best dev evaluation so far (when there is one)
    optimizer.pt           AdamW state          scheduler.pt   the warm-up/cosine schedule
    scaler.pt              fp16 loss scaler (only with fp16)
    rng.pt                 python, numpy, torch (and CUDA) random states
    state.json             step, data position (epoch, batch), non-finite counters, TAID state, best so far
    history.json           training_history.json as it was at this step

Trainable weights are chosen by ``requires_grad``, never by name: filtering names that contain "encoder"
would also drop the decoder's cross-attention (``encoder_attn``).
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from whisperkd.errors import UserError

CHECKPOINT_DIR = "checkpoint"
TRAINABLE, BEST = "trainable.safetensors", "best.safetensors"
OPTIMIZER, SCHEDULER, SCALER, RNG = "optimizer.pt", "scheduler.pt", "scaler.pt", "rng.pt"
STATE, HISTORY = "state.json", "history.json"
FORMAT = "whisperkd-trainable-v1"
_STEP_DIR = re.compile(r"^step-(\d+)$")


@contextmanager
def atomic_dir(path: str | Path) -> Iterator[Path]:
    """Yield an empty temporary folder beside ``path``; it becomes ``path`` only if the block succeeds.

    An existing ``path`` is replaced (moved aside, then deleted), so readers see the old or the new
    folder, never a half-written one.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".tmp-{path.name}-"))
    try:
        yield tmp
        old = None
        if path.exists():
            old = path.parent / f".old-{path.name}-{os.getpid()}"
            if old.exists():
                shutil.rmtree(old)
            os.rename(path, old)
        os.rename(tmp, path)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


# ---------------------------------------------------------------- trainable weights

def trainable_state(model: nn.Module, copy: bool = False) -> dict[str, torch.Tensor]:
    """Every parameter with ``requires_grad``, by its name in ``model``, on the CPU (``copy``: never shared
    with the parameters, which a CPU tensor otherwise is)."""
    return {name: (p.detach().clone() if copy else p.detach()).cpu().contiguous()
            for name, p in model.named_parameters() if p.requires_grad}


def save_trainable(model: nn.Module | dict, path: str | Path, metadata: dict | None = None) -> Path:
    """Write the trainable parameters of ``model`` (or a dict from :func:`trainable_state`) as safetensors."""
    tensors = model if isinstance(model, dict) else trainable_state(model)
    if not tensors:
        raise UserError("checkpoint: the model has no trainable parameter to save")
    save_file(tensors, str(path), metadata={"format": FORMAT, **{k: str(v) for k, v in (metadata or {}).items()}})
    return Path(path)


def load_trainable(model: nn.Module, path: str | Path | dict) -> None:
    """Copy saved trainable weights (a file or a dict) into ``model``; the names must match its trainable
    parameters exactly."""
    tensors = path if isinstance(path, dict) else load_file(str(path))
    path = "trainable weights" if isinstance(path, dict) else path
    params = {name: p for name, p in model.named_parameters() if p.requires_grad}
    missing, unexpected = sorted(params.keys() - tensors.keys()), sorted(tensors.keys() - params.keys())
    if missing or unexpected:
        detail = "; ".join(f"{what} {len(names)} (e.g. {names[0]})" for what, names in
                           (("missing", missing), ("unexpected", unexpected)) if names)
        raise UserError(f"{path}: the saved trainable weights do not fit this model ({detail}); "
                        "it was saved with another student/LoRA config")
    with torch.no_grad():
        for name, param in params.items():
            if tensors[name].shape != param.shape:
                raise UserError(f"{path}: {name} has shape {tuple(tensors[name].shape)}, the model "
                                f"{tuple(param.shape)}; it was saved with another config")
            param.copy_(tensors[name].to(param.device, param.dtype))


# ---------------------------------------------------------------- random states

def rng_state() -> dict:
    """Python, numpy, torch (and CUDA) random states in a form ``torch.load(weights_only=True)`` accepts."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": (kind, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(cached)),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# ---------------------------------------------------------------- checkpoints

def list_checkpoints(run_dir: str | Path) -> list[Path]:
    """Complete checkpoints of a run, oldest first."""
    root = Path(run_dir) / CHECKPOINT_DIR
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir() if p.is_dir() and (m := _STEP_DIR.match(p.name))]
    return [p for _, p in sorted(found)]


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    found = list_checkpoints(run_dir)
    return found[-1] if found else None


def save_checkpoint(run_dir: str | Path, step: int, model: nn.Module, optimizer, scheduler, scaler,
                    state: dict, history: dict, keep: int, best: dict | None = None) -> Path:
    """Write ``checkpoint/step-{step:06d}/`` atomically and delete all but the newest ``keep``.

    ``best``: the trainable weights of the best evaluation so far (kept with the checkpoint so that a resumed
    run ends with the same best student)."""
    final = Path(run_dir) / CHECKPOINT_DIR / f"step-{step:06d}"
    with atomic_dir(final) as tmp:
        save_trainable(model, tmp / TRAINABLE, {"step": step})
        if best is not None:
            save_trainable(best, tmp / BEST, {"step": (state.get("best") or {}).get("step")})
        torch.save(optimizer.state_dict(), tmp / OPTIMIZER)
        torch.save(scheduler.state_dict(), tmp / SCHEDULER)
        if scaler is not None:
            torch.save(scaler.state_dict(), tmp / SCALER)
        torch.save(rng_state(), tmp / RNG)
        (tmp / STATE).write_text(json.dumps(state, indent=1), encoding="utf-8")
        (tmp / HISTORY).write_text(json.dumps(history), encoding="utf-8")
    for old in list_checkpoints(run_dir)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def load_checkpoint(path: str | Path, model: nn.Module, optimizer=None, scheduler=None, scaler=None,
                    restore_rng: bool = True) -> tuple[dict, dict, dict | None]:
    """Restore what :func:`save_checkpoint` wrote; returns ``(state, history, best weights or None)``."""
    path = Path(path)
    if not (path / STATE).is_file() or not (path / TRAINABLE).is_file():
        raise UserError(f"{path}: not a complete checkpoint (state.json and trainable.safetensors expected)")
    load_trainable(model, path / TRAINABLE)
    if optimizer is not None:
        optimizer.load_state_dict(torch.load(path / OPTIMIZER, weights_only=True, map_location="cpu"))
    if scheduler is not None:
        scheduler.load_state_dict(torch.load(path / SCHEDULER, weights_only=True))
    if scaler is not None:
        if not (path / SCALER).is_file():
            raise UserError(f"{path}: no scaler.pt; this checkpoint was not trained with fp16")
        scaler.load_state_dict(torch.load(path / SCALER, weights_only=True))
    state = json.loads((path / STATE).read_text(encoding="utf-8"))
    history = json.loads((path / HISTORY).read_text(encoding="utf-8"))
    best = load_file(str(path / BEST)) if (path / BEST).is_file() else None
    if restore_rng:
        set_rng_state(torch.load(path / RNG, weights_only=True))
    return state, history, best
