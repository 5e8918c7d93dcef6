"""Inference helpers: the fused inference lowering, batch norm folding, export entry points."""

from __future__ import annotations

import copy
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from specgraph import ArgumentError
from specgraph.backend_api import input_name, output_name

from ._fused import InferenceNet
from ._model import SpecgraphModel
from ._ops import ConvNormAct

__all__ = ["dynamic_shapes", "export", "fold_batch_norm", "min_dynamic_side", "optimize_for_inference",
           "to_onnx"]


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


def optimize_for_inference(model: SpecgraphModel, channels_last: bool = True,
                           fuse: bool = True) -> InferenceNet | SpecgraphModel:
    """A copy for inference (the source model is untouched).

    ``fuse=True``: an :class:`InferenceNet` (BN folded, activations / residual adds /
    block sums inside oneDNN convs, copy-free SAME padding, see ``_fused.py``).
    ``fuse=False``: the same ``SpecgraphModel`` with only its batch norms folded.
    Both in eval mode, channels-last unless ``channels_last=False``.
    """
    ArgumentError.expect(model, SpecgraphModel, "model", "a SpecgraphModel (specgraph_torch.compile)")
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


def _expect_model_and_example(model: Any, example: Any) -> Any:
    """The example as traced: the image batch, or a decoder's {level: NCHW features} in the plan's input order."""
    ArgumentError.expect(model, SpecgraphModel, "model", "a SpecgraphModel (specgraph_torch.compile)")
    if model.plan.inputs:
        levels = [level for level, _ in model.plan.inputs]
        if not (isinstance(example, Mapping) and sorted(example) == sorted(levels)
                and all(isinstance(v, torch.Tensor) and v.dim() == 4 for v in example.values())):
            got = sorted(map(str, example)) if isinstance(example, Mapping) else type(example).__name__
            raise ArgumentError(f"example: {model.plan.spec_name} is a decoder: expected {{level: NCHW feature map}} "
                                f"at levels {', '.join(levels)}, got {got}")
        return {level: example[level] for level in levels}
    ArgumentError.expect(example, torch.Tensor, "example", "an NCHW image batch (torch.Tensor)")
    if example.dim() != 4:
        raise ArgumentError(f"example: expected an NCHW image batch (4 dimensions), got shape {list(example.shape)}")
    return example


# Largest batch and side the dynamic dimensions admit (a bound is required; these are far above
# what fits in memory at SpineNet's widths).
MAX_DYNAMIC_BATCH = 1024
MAX_DYNAMIC_SIDE = 16384


def min_dynamic_side(model: SpecgraphModel) -> int:
    """The smallest H and W a dynamic export admits: ``2**max_level + 1``, so every level is at least
    2 pixels; at 1 pixel torch's shape analysis cannot decide contiguity and broadcasting."""
    return 2**model.plan.max_level + 1


def dynamic_shapes(model: SpecgraphModel) -> tuple[dict[Any, Any]]:
    """``torch.export`` dynamic shapes for the images: batch 1..1024, H and W 2**max_level+1..16384. A decoder's
    feature maps: the batch only (their sizes are tied level to level by ceil(H / 2), which no Dim expresses)."""
    dim = torch.export.Dim
    if model.plan.inputs:
        batch = dim("batch", min=1, max=MAX_DYNAMIC_BATCH)
        return ({level: {0: batch} for level, _ in model.plan.inputs},)
    side = min_dynamic_side(model)
    return ({0: dim("batch", min=1, max=MAX_DYNAMIC_BATCH),
             2: dim("height", min=side, max=MAX_DYNAMIC_SIDE),
             3: dim("width", min=side, max=MAX_DYNAMIC_SIDE)},)


def _trace_example(model: SpecgraphModel, example: Any, dynamic: bool) -> Any:
    """The tensor traced: the example, or for a dynamic export one of its shape raised to at least
    batch 2 and the minimum side (torch specialises a dimension seen as 1; only shapes are traced)."""
    if not dynamic:
        return example
    if model.plan.inputs:  # a decoder's feature maps: the batch only
        return {k: v if v.shape[0] >= 2 else v.new_zeros((2, *v.shape[1:])) for k, v in example.items()}
    n, c, h, w = example.shape
    side = min_dynamic_side(model)
    shape = (max(n, 2), c, max(h, side), max(w, side))
    return example if tuple(example.shape) == shape else example.new_zeros(shape)


def export(model: SpecgraphModel, example: torch.Tensor | Mapping[str, torch.Tensor], *, dynamic: bool = True,
           **kwargs: Any) -> torch.export.ExportedProgram:
    """``torch.export.export`` of the model in eval mode.

    ``dynamic=True``: one program for any batch (1..1024) and any H, W from ``2**max_level + 1``
    (129 for P7) to 16384, exact (same padding and crops as eager) at every size. ``dynamic=False``:
    fixed to the example's shape. ``dynamic_shapes=`` in ``kwargs`` overrides both. A decoder's
    ``example`` is ``{level: NCHW features}``; its program takes them (any batch, the example's sizes).
    """
    example = _expect_model_and_example(model, example)
    if dynamic and "dynamic_shapes" not in kwargs:
        kwargs["dynamic_shapes"] = dynamic_shapes(model)
    return torch.export.export(model.eval(), (_trace_example(model, example, dynamic),), **kwargs)


def to_onnx(model: SpecgraphModel, path: str | Path, example: torch.Tensor | Mapping[str, torch.Tensor], *,
            dynamic: bool = True, **kwargs: Any) -> Path:
    """Write an ONNX file: input ``images`` (a decoder's: ``features_3`` ... of its inputs, the batch dynamic),
    outputs ``level_3`` ... ``level_7`` (the levels in order).

    ``dynamic=True``: dimensions ``batch``, ``height``, ``width`` are symbolic, as in :func:`export`.
    """
    example = _expect_model_and_example(model, example)
    ArgumentError.expect(path, (str, os.PathLike), "path", "a file path")
    names = [output_name(level) for level, _ in model.plan.endpoints]
    kwargs.setdefault("dynamo", True)
    if dynamic and "dynamic_shapes" not in kwargs:
        kwargs["dynamic_shapes"] = dynamic_shapes(model)
    traced = _trace_example(model, example, dynamic)
    if model.plan.inputs:  # a decoder's feature maps, inputs features_3 ...; passed by name (a dict last in args
        # would be read as keyword arguments)
        if "dynamic_shapes" in kwargs:
            kwargs["dynamic_shapes"] = {"images": kwargs["dynamic_shapes"][0]}
        torch.onnx.export(model.eval(), (), str(path), kwargs={"images": traced},
                          input_names=[input_name(level) for level, _ in model.plan.inputs], output_names=names,
                          **kwargs)
    else:
        torch.onnx.export(model.eval(), (traced,), str(path), input_names=["images"], output_names=names, **kwargs)
    return Path(path)
