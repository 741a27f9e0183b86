"""Projector: identity or orthogonal start, and a safetensors round trip."""

from __future__ import annotations

import pytest
import torch

from whisperkd.errors import UserError
from whisperkd.models.projector import FILENAME, Projector, load_projector, save_projector


def test_same_width_starts_as_identity():
    projector = Projector(8, 8)
    assert torch.equal(projector.weight, torch.eye(8)) and torch.equal(projector.bias, torch.zeros(8))
    x = torch.randn(2, 3, 8)
    assert torch.equal(projector(x), x)


def test_wider_teacher_starts_orthogonal_and_keeps_lengths_and_angles():
    torch.manual_seed(0)
    projector = Projector(4, 10)  # weight (10, 4): orthonormal columns
    assert projector.weight.shape == (10, 4)
    torch.testing.assert_close(projector.weight.T @ projector.weight, torch.eye(4), atol=1e-5, rtol=0)
    a, b = torch.randn(4), torch.randn(4)
    with torch.no_grad():
        pa, pb = projector(a), projector(b)
    assert pa.norm().item() == pytest.approx(a.norm().item(), rel=1e-5)
    assert torch.dot(pa, pb).item() == pytest.approx(torch.dot(a, b).item(), rel=1e-4, abs=1e-5)


def test_save_and_load_round_trip(tmp_path):
    torch.manual_seed(1)
    projector = Projector(6, 12)
    with torch.no_grad():
        projector.weight.add_(torch.randn_like(projector.weight))
        projector.bias.normal_()
    path = save_projector(projector, tmp_path / "adapter_final")
    assert path.name == FILENAME
    loaded = load_projector(tmp_path / "adapter_final")
    assert (loaded.in_features, loaded.out_features) == (6, 12)
    assert torch.equal(loaded.weight, projector.weight) and torch.equal(loaded.bias, projector.bias)


def test_missing_projector_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="projector.safetensors not found"):
        load_projector(tmp_path)
    with pytest.raises(UserError, match="dimensions"):
        Projector(0, 4)
