"""How close the student's representations are to the teacher's: linear CKA and mean geodesic distance.

Both compare paired rows: row ``i`` of ``X`` (student) and of ``Y`` (teacher) are the last decoder hidden
states at the same token of the same utterance, teacher-forced on the reference transcript (the
training convention of :mod:`whisperkd.data.collate`: inputs ``seq[:-1]``, counted where labels are set).

- ``mean_geodesic(X, Y)`` = mean over rows of ``acos(cos(x_i, y_i))`` in radians: 0 when every pair points
  the same way, pi/2 when orthogonal. It needs equal widths: the student goes through its projector first.
- ``linear_cka(X, Y)`` = ``||Yc^T Xc||_F^2 / (||Xc^T Xc||_F ||Yc^T Yc||_F)`` with column-centred ``Xc, Yc``
  (Kornblith et al., 2019): 1 for identical inputs, invariant to orthogonal transforms and isotropic
  scaling of either side, defined for different widths.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from whisperkd.data.collate import TokenEncoder, collate_examples, log_mel
from whisperkd.errors import UserError


def _matrix(x, name: str) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().to("cpu", torch.float64).numpy()
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"{name}: expected a 2-D (rows, features) array, got shape {x.shape}")
    return x


def linear_cka(X, Y) -> float:
    """Linear centred kernel alignment of paired rows ``X`` (n, p) and ``Y`` (n, q), in [0, 1]."""
    X, Y = _matrix(X, "X"), _matrix(Y, "Y")
    if X.shape[0] != Y.shape[0]:
        raise ValueError(f"X has {X.shape[0]} rows but Y has {Y.shape[0]}; rows must be paired")
    X = X - X.mean(axis=0, keepdims=True)
    Y = Y - Y.mean(axis=0, keepdims=True)
    cross = np.linalg.norm(Y.T @ X) ** 2
    norm = np.linalg.norm(X.T @ X) * np.linalg.norm(Y.T @ Y)
    if norm == 0:
        raise ValueError("linear CKA is undefined when X or Y is constant over rows")
    return float(cross / norm)


def mean_geodesic(X, Y) -> float:
    """Mean angle ``acos(cos(x_i, y_i))`` in radians between paired rows of equal width."""
    X, Y = _matrix(X, "X"), _matrix(Y, "Y")
    if X.shape != Y.shape:
        raise ValueError(f"X {X.shape} and Y {Y.shape} must have the same shape (project the student first)")
    norms = np.linalg.norm(X, axis=1) * np.linalg.norm(Y, axis=1)
    if np.any(norms == 0):
        raise ValueError("the angle to a zero vector is undefined")
    cos = np.clip(np.sum(X * Y, axis=1) / norms, -1.0, 1.0)
    return float(np.mean(np.arccos(cos)))


@torch.no_grad()
def last_decoder_states(model, processor, audios: list, texts: list[str], batch_size: int = 4) -> tuple[torch.Tensor, list]:
    """The last decoder hidden state (after the final layer norm) at every counted token, as (tokens, d_model)
    float32 rows, and the token sequences that were fed (to check that two models saw the same tokens)."""
    encode = TokenEncoder(processor.tokenizer)
    device = next(model.parameters()).device
    dtype = next(model.parameters()).dtype
    rows, sequences = [], []
    for start in range(0, len(audios), batch_size):
        examples = [{"id": str(i), "text": t, "input_features": log_mel(processor.feature_extractor, a), "tokens": encode(t)}
                    for i, (a, t) in enumerate(zip(audios[start:start + batch_size], texts[start:start + batch_size]))]
        sequences += [e["tokens"] for e in examples]
        batch = collate_examples(examples, pad_id=encode.eot)
        out = model.model(input_features=batch["input_features"].to(device, dtype),
                          decoder_input_ids=batch["decoder_input_ids"].to(device))
        mask = (batch["labels"] != -100).to(device)
        rows.append(out.last_hidden_state[mask].float().cpu())
    return torch.cat(rows), sequences


@torch.no_grad()
def representation_geometry(teacher, teacher_processor, student, student_processor, audios: list, texts: list[str],
                            projector=None, batch_size: int = 4) -> dict:
    """Mean geodesic distance and linear CKA between the student's (projected) and the teacher's last decoder
    hidden states on ``audios`` teacher-forced with ``texts``. ``projector`` maps student width to teacher
    width (None: identity, which needs equal widths)."""
    Y, teacher_tokens = last_decoder_states(teacher, teacher_processor, audios, texts, batch_size)
    X, student_tokens = last_decoder_states(student, student_processor, audios, texts, batch_size)
    if teacher_tokens != student_tokens:
        raise UserError("geometry: teacher and student tokenise the transcripts differently; hidden states can "
                        "only be compared token by token when they share a tokenizer")
    if projector is not None:
        projector = projector.to("cpu", torch.float32)
        X = projector(X)
    if X.shape[1] != Y.shape[1]:
        raise UserError(f"geometry: student width {X.shape[1]} differs from teacher width {Y.shape[1]} and no "
                        f"projector was given; pass the run's adapter folder with projector.safetensors")
    angle = mean_geodesic(X, Y)
    return {"utterances": len(audios), "tokens": int(X.shape[0]), "mean_geodesic": angle,
            "mean_geodesic_degrees": math.degrees(angle), "linear_cka": linear_cka(X, Y)}
