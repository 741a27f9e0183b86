"""The output layer in int8 for CPU inference: the largest single cost of a small decoder's token.

Whisper's output projection maps each decoder state to 51,865 logits: in base that is 26.6 M multiply-adds and
106 MB of float32 weights read for every token, against ~3.7 M for a decoder layer, so a 2-layer student spends
most of a token there. torch's own dynamic quantisation (``torch.ao.quantization.quantize_dynamic``: int8
weights with one scale per output token, activations quantised on the fly) reads a quarter of the bytes; docs/demo.md ("The fast
student") measures its effect on time and WER.

A model carries the choice in its config (``config.whisperkd_output_layer = "int8"``, :func:`mark_int8`, set by
``student.output_layer: int8`` when a run saves its student); :func:`for_inference` applies it when a model is
loaded to transcribe or evaluate on CPU. The saved weights stay float32: ``transformers.pipeline`` and
CTranslate2 converters read the model as it is (float32 output layer).
"""

from __future__ import annotations

import warnings

import torch
from torch import nn

with warnings.catch_warnings():  # torch.ao.quantization announces its move to torchao; 2.13 still has it
    warnings.simplefilter("ignore")
    from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

CONFIG_KEY = "whisperkd_output_layer"
CHOICES = ("float32", "int8")


def mark_int8(model, choice: str = "int8") -> None:
    """Record the output layer ``choice`` in ``model.config`` (saved with ``save_pretrained``)."""
    if choice not in CHOICES:
        raise ValueError(f"output layer {choice!r}: use one of {', '.join(CHOICES)}")
    setattr(model.config, CONFIG_KEY, choice)


def quantize_output_layer(model):
    """Replace ``model.proj_out`` by its int8 dynamically quantised copy (in place; returns ``model``).
    Only for inference: the quantised layer has no gradients and is no longer tied to the token embedding."""
    with warnings.catch_warnings():  # quantize_dynamic warns about the same move on every call
        warnings.simplefilter("ignore")
        holder = nn.Sequential(nn.Linear(model.proj_out.in_features, model.proj_out.out_features, bias=False))
        holder[0].weight = nn.Parameter(model.proj_out.weight.detach().clone(), requires_grad=False)
        model.proj_out = quantize_dynamic(holder, {nn.Linear: per_channel_dynamic_qconfig}, dtype=torch.qint8)[0]
    return model


def for_inference(model):
    """``model`` as it should run to transcribe: its output layer in int8 when its config asks for it and it runs
    in float32 on CPU (int8 dynamic quantisation is a CPU kernel); else unchanged."""
    if getattr(getattr(model, "config", None), CONFIG_KEY, "float32") != "int8":
        return model
    param = next(model.parameters())
    if param.device.type == "cpu" and param.dtype == torch.float32:
        quantize_output_layer(model)
    return model
