"""A linear map from student hidden states to the teacher's width, for hidden-state alignment.

Identity when the widths match (a pruned student starts aligned with its teacher); otherwise a
(semi-)orthogonal matrix, which keeps lengths and angles when the student is the narrower one,
so the geodesic loss starts from the student's own geometry. Saved beside a LoRA adapter.
"""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from whisperkd.errors import UserError

FILENAME = "projector.safetensors"
FORMAT = "whisperkd-projector-v1"


class Projector(nn.Linear):
    """``nn.Linear(student_dim, teacher_dim)``: identity-initialised when the sizes match, else orthogonal."""

    def __init__(self, student_dim: int, teacher_dim: int) -> None:
        if student_dim < 1 or teacher_dim < 1:
            raise UserError(f"projector: dimensions {student_dim} -> {teacher_dim}; both must be positive")
        super().__init__(student_dim, teacher_dim, bias=True)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Identity (or orthogonal) weight, zero bias."""
        with torch.no_grad():
            if self.in_features == self.out_features:
                self.weight.copy_(torch.eye(self.out_features))
            else:
                nn.init.orthogonal_(self.weight)
            self.bias.zero_()


def save_projector(projector: Projector, directory: str | Path) -> Path:
    """Write ``projector.safetensors`` (float32 weight and bias, sizes in the metadata) into ``directory``."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / FILENAME
    tensors = {
        "weight": projector.weight.detach().float().cpu().contiguous(),
        "bias": projector.bias.detach().float().cpu().contiguous(),
    }
    metadata = {
        "format": FORMAT,
        "student_dim": str(projector.in_features),
        "teacher_dim": str(projector.out_features),
    }
    save_file(tensors, str(path), metadata=metadata)
    return path


def load_projector(directory: str | Path) -> Projector:
    """Read the projector that :func:`save_projector` wrote into ``directory``."""
    path = Path(directory) / FILENAME
    if not path.is_file():
        raise UserError(f"projector: {path} not found; point at the adapter folder the run saved")
    tensors = load_file(str(path))
    if set(tensors) != {"weight", "bias"} or tensors["weight"].ndim != 2:
        raise UserError(f"projector: {path} does not hold a weight and a bias; re-save it with save_projector")
    teacher_dim, student_dim = tensors["weight"].shape
    projector = Projector(student_dim, teacher_dim)
    projector.load_state_dict(tensors)
    return projector
