"""Linear CKA and mean geodesic distance against hand computations and their invariances."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from helpers import tiny_whisper_config

from whisperkd.evaluate.geometry import linear_cka, mean_geodesic, representation_geometry


def _random(n=40, p=6, seed=0):
    return np.random.default_rng(seed).normal(size=(n, p))


def _orthogonal(p, seed=1):
    q, _ = np.linalg.qr(np.random.default_rng(seed).normal(size=(p, p)))
    return q


def test_cka_identical_is_one():
    X = _random()
    assert linear_cka(X, X) == pytest.approx(1.0, abs=1e-12)


def test_cka_invariant_to_orthogonal_transform_and_isotropic_scaling():
    X, Y = _random(seed=0), _random(p=4, seed=2)
    base = linear_cka(X, Y)
    assert 0 < base < 1
    assert linear_cka(X @ _orthogonal(6), Y) == pytest.approx(base, abs=1e-12)
    assert linear_cka(X, 7.5 * Y @ _orthogonal(4, seed=3)) == pytest.approx(base, abs=1e-12)
    assert linear_cka(X @ _orthogonal(6), X) == pytest.approx(1.0, abs=1e-12)
    assert linear_cka(0.01 * X, X + 3.0) == pytest.approx(1.0, abs=1e-12)  # centring removes the shift


def test_cka_by_hand():
    # X = [1, 0, -1]^T, Y = [1, -1, 0]^T (already centred): <x,y>^2 / (|x|^2 |y|^2) = 1 / (2 * 2) = 0.25
    X = np.array([[1.0], [0.0], [-1.0]])
    Y = np.array([[1.0], [-1.0], [0.0]])
    assert linear_cka(X, Y) == pytest.approx(0.25)
    # non-linear change of one feature is not invisible: scaling one axis only changes CKA
    Z = _random(p=3, seed=5)
    assert linear_cka(Z, Z * np.array([1.0, 1.0, 10.0])) < 0.99


def test_cka_accepts_torch_and_checks_shapes():
    X = torch.randn(10, 3, generator=torch.Generator().manual_seed(0))
    assert linear_cka(X, X.double()) == pytest.approx(1.0)
    with pytest.raises(ValueError):
        linear_cka(np.ones((3, 2)), np.ones((4, 2)))
    with pytest.raises(ValueError):
        linear_cka(np.ones((3, 2)), _random(3, 2))  # constant X


def test_geodesic_identical_orthogonal_and_by_hand():
    X = _random()
    assert mean_geodesic(X, X) == pytest.approx(0.0, abs=1e-6)
    assert mean_geodesic(X, 3.0 * X) == pytest.approx(0.0, abs=1e-6)  # only directions count
    E = np.eye(4)
    assert mean_geodesic(E[:2], E[2:]) == pytest.approx(math.pi / 2)
    assert mean_geodesic(E[:1], -E[:1]) == pytest.approx(math.pi)
    # rows at 0, 90 and 45 degrees: mean = (0 + pi/2 + pi/4) / 3
    X = np.array([[1.0, 0.0], [1.0, 0.0], [1.0, 0.0]])
    Y = np.array([[2.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    assert mean_geodesic(X, Y) == pytest.approx((math.pi / 2 + math.pi / 4) / 3)
    with pytest.raises(ValueError):
        mean_geodesic(np.ones((2, 3)), np.ones((2, 4)))


@pytest.fixture(scope="module")
def tiny_processor(tiny_en_dir):
    from whisperkd.models.loading import load_processor

    return load_processor(tiny_en_dir)


def _random_whisper(seed, **overrides):
    from transformers import WhisperForConditionalGeneration

    torch.manual_seed(seed)
    return WhisperForConditionalGeneration(tiny_whisper_config(**overrides)).eval()


@pytest.mark.real
def test_representation_geometry_of_models(tiny_processor):
    from whisperkd.models.projector import Projector

    rng = np.random.default_rng(0)
    audios = [0.1 * rng.standard_normal(16000 * s).astype(np.float32) for s in (1, 2)]
    texts = ["hello world", "a second short sentence"]
    teacher = _random_whisper(0)
    same = representation_geometry(teacher, tiny_processor, teacher, tiny_processor, audios, texts)
    assert same["mean_geodesic"] == pytest.approx(0.0, abs=1e-3)
    assert same["linear_cka"] == pytest.approx(1.0, abs=1e-6)
    assert same["utterances"] == 2 and same["tokens"] > 6
    other = representation_geometry(teacher, tiny_processor, _random_whisper(1), tiny_processor, audios, texts)
    assert other["mean_geodesic"] > 0.3 and other["linear_cka"] < 0.99
    narrow = _random_whisper(2, d_model=32, encoder_ffn_dim=64, decoder_ffn_dim=64)
    projected = representation_geometry(teacher, tiny_processor, narrow, tiny_processor, audios, texts,
                                        projector=Projector(32, 64))
    assert 0 < projected["mean_geodesic"] < math.pi and 0 < projected["linear_cka"] <= 1
    from whisperkd.errors import UserError

    with pytest.raises(UserError, match="projector"):
        representation_geometry(teacher, tiny_processor, narrow, tiny_processor, audios, texts)
