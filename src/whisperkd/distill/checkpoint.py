"""Checkpoints of a run: ``checkpoint/step-000100/``, written atomically, the last K kept.

accelerate's ``save_state``/``load_state`` write and restore most of a checkpoint:

    model.safetensors       the trainable parameters only (student parts or LoRA matrices, projector): a
                            save-state hook (:func:`save_trainable_only`) drops the frozen ones
    optimizer.bin           AdamW state            scheduler.bin   the warm-up/cosine schedule
    scaler.pt               fp16 loss scaler (only with fp16)
    random_states_0.pkl     python, numpy, torch (and CUDA) random states

whisperkd adds, as JSON and safetensors:

    state.json              step, data position (epoch, batch), non-finite counters, TAID state, best so far
    history.json            training_history.json as it was at this step
    best.safetensors        the trainable weights of the best dev evaluation so far (when there is one)

Kept by hand, and why: the TAID and data-position state go to state.json rather than accelerate's
``register_for_checkpointing``, which reads custom states back as a full pickle (``weights_only`` off: a
pickle that can run code; whisperkd loads only safetensors or weights-only tensors). Writing and rotation
stay here too: accelerate's automatic naming deletes old checkpoints *before* writing the new one and writes
in place, so a crash mid-save could leave no complete checkpoint; here a checkpoint is written into a
temporary folder, renamed when complete, and only then are older ones deleted.

Trainable weights are chosen by ``requires_grad``, never by name: filtering names that contain "encoder"
would also drop the decoder's cross-attention (``encoder_attn``).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from whisperkd.errors import UserError

CHECKPOINT_DIR = "checkpoint"
MODEL, BEST = "model.safetensors", "best.safetensors"  # MODEL: accelerate's name (SAFE_WEIGHTS_NAME)
RNG = "random_states_0.pkl"
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


def check_fits(model: nn.Module, saved: dict[str, tuple[int, ...]], where) -> None:
    """A UserError naming ``where`` unless ``saved`` (name -> shape) are exactly the trainable parameters."""
    params = {name: tuple(p.shape) for name, p in model.named_parameters() if p.requires_grad}
    missing, unexpected = sorted(params.keys() - saved.keys()), sorted(saved.keys() - params.keys())
    if missing or unexpected:
        detail = "; ".join(f"{what} {len(names)} (e.g. {names[0]})" for what, names in
                           (("missing", missing), ("unexpected", unexpected)) if names)
        raise UserError(f"{where}: the saved trainable weights do not fit this model ({detail}); "
                        "it was saved with another student/LoRA config")
    for name, shape in params.items():
        if tuple(saved[name]) != shape:
            raise UserError(f"{where}: {name} has shape {tuple(saved[name])}, the model {shape}; it was saved with "
                            "another config")


def load_trainable(model: nn.Module, path: str | Path | dict) -> None:
    """Copy saved trainable weights (a file or a dict) into ``model``; the names must match its trainable
    parameters exactly."""
    tensors = path if isinstance(path, dict) else load_file(str(path))
    check_fits(model, {name: tuple(t.shape) for name, t in tensors.items()},
               "trainable weights" if isinstance(path, dict) else path)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if param.requires_grad:
                param.copy_(tensors[name].to(param.device, param.dtype))


# ---------------------------------------------------------------- checkpoints

def save_trainable_only(models: list[nn.Module], weights: list[dict], output_dir) -> None:
    """accelerate save-state pre-hook: keep only the parameters with ``requires_grad`` in each model's file."""
    for i, model in enumerate(models):
        keep = {name for name, p in model.named_parameters() if p.requires_grad}
        weights[i] = {name: t for name, t in weights[i].items() if name in keep}


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


def save_checkpoint(acc, run_dir: str | Path, step: int, state: dict, history: dict, keep: int,
                    best: dict | None = None) -> Path:
    """Write ``checkpoint/step-{step:06d}/`` atomically (``acc.save_state`` plus state, history and the best
    weights) and delete all but the newest ``keep``. Call on the main process; ``acc`` needs
    :func:`save_trainable_only` registered as a save-state pre-hook.

    ``best``: the trainable weights of the best evaluation so far (kept with the checkpoint so that a resumed
    run ends with the same best student)."""
    final = Path(run_dir) / CHECKPOINT_DIR / f"step-{step:06d}"
    with atomic_dir(final) as tmp:
        acc.save_state(str(tmp), safe_serialization=True)
        if best is not None:
            save_trainable(best, tmp / BEST, {"step": (state.get("best") or {}).get("step")})
        (tmp / STATE).write_text(json.dumps(state, indent=1), encoding="utf-8")
        (tmp / HISTORY).write_text(json.dumps(history), encoding="utf-8")
    for old in list_checkpoints(run_dir)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def load_checkpoint(acc, model: nn.Module, path: str | Path) -> tuple[dict, dict, dict | None]:
    """Restore what :func:`save_checkpoint` wrote into ``acc``'s prepared objects (``model`` is the prepared
    model, checked to fit first); returns ``(state, history, best weights or None)``."""
    path = Path(path)
    if not all((path / name).is_file() for name in (STATE, HISTORY, MODEL, RNG)):
        raise UserError(f"{path}: not a complete checkpoint ({STATE}, {HISTORY}, {MODEL} and {RNG} expected)")
    if acc.scaler is not None and not (path / "scaler.pt").is_file():
        raise UserError(f"{path}: no scaler.pt; this checkpoint was not trained with fp16")
    with safe_open(str(path / MODEL), framework="pt") as f:
        check_fits(model, {name: tuple(f.get_slice(name).get_shape()) for name in f.keys()}, path / MODEL)
    acc.load_state(str(path), strict=False)  # strict=False: the file holds the trainable weights only
    state = json.loads((path / STATE).read_text(encoding="utf-8"))
    history = json.loads((path / HISTORY).read_text(encoding="utf-8"))
    best = load_file(str(path / BEST)) if (path / BEST).is_file() else None
    return state, history, best
