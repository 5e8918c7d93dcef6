"""Inference helpers: the fused inference lowering, batch norm folding, export entry points."""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from specgraph import ArgumentError

from ._fused import InferenceNet
from ._model import SpecgraphNet
from ._ops import ConvNormAct

__all__ = ["export", "fold_batch_norm", "optimize_for_inference", "to_onnx"]


def fold_batch_norm(unit: ConvNormAct) -> None:
    """Fold an eval-mode batch norm into the conv before it (conv gains a bias)."""
    ArgumentError.expect(unit, ConvNormAct, "unit", "a ConvNormAct module")
    norm = unit.norm
    if not isinstance(norm, nn.modules.batchnorm._BatchNorm):
        return
    conv = unit.conv
    scale = norm.weight / torch.sqrt(norm.running_var + norm.eps)
    fused = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                      groups=conv.groups, bias=True).to(conv.weight.device, conv.weight.dtype)
    with torch.no_grad():
        fused.weight.copy_(conv.weight * scale.reshape(-1, 1, 1, 1))
        bias = conv.bias if conv.bias is not None else torch.zeros_like(norm.running_mean)
        fused.bias.copy_((bias - norm.running_mean) * scale + norm.bias)
    unit.conv, unit.norm = fused, nn.Identity()


def optimize_for_inference(model: SpecgraphNet, channels_last: bool = True,
                           fuse: bool = True) -> InferenceNet | SpecgraphNet:
    """A copy for inference (the source model is untouched).

    ``fuse=True``: an :class:`InferenceNet` (BN folded, activations / residual adds /
    block sums inside oneDNN convs, copy-free SAME padding, see ``_fused.py``).
    ``fuse=False``: the same ``SpecgraphNet`` with only its batch norms folded.
    Both in eval mode, channels-last unless ``channels_last=False``.
    """
    ArgumentError.expect(model, SpecgraphNet, "model", "a SpecgraphNet (specgraph_torch.compile)")
    if fuse:
        return InferenceNet(model, channels_last=channels_last)
    model = copy.deepcopy(model).eval()
    for module in model.modules():
        if isinstance(module, ConvNormAct):
            fold_batch_norm(module)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
        model.channels_last = True
    return model


def _expect_model_and_example(model: Any, example: Any) -> None:
    ArgumentError.expect(model, SpecgraphNet, "model", "a SpecgraphNet (specgraph_torch.compile)")
    ArgumentError.expect(example, torch.Tensor, "example", "an NCHW image batch (torch.Tensor)")


def export(model: SpecgraphNet, example: torch.Tensor, **kwargs: Any) -> torch.export.ExportedProgram:
    """``torch.export.export`` of the model in eval mode on one example batch."""
    _expect_model_and_example(model, example)
    return torch.export.export(model.eval(), (example,), **kwargs)


def to_onnx(model: SpecgraphNet, path: str | Path, example: torch.Tensor, **kwargs: Any) -> Path:
    """Write an ONNX file; its outputs are the levels in order, named ``level_3`` ...``level_7``."""
    _expect_model_and_example(model, example)
    ArgumentError.expect(path, (str, os.PathLike), "path", "a file path")
    names = [f"level_{level}" for level, _ in model.plan.endpoints]
    kwargs.setdefault("dynamo", True)
    torch.onnx.export(model.eval(), (example,), str(path), input_names=["images"], output_names=names, **kwargs)
    return Path(path)
