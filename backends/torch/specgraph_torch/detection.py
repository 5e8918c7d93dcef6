"""Adapters for detection libraries (torchvision; detectron2 reads ``output_shape()`` directly)."""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

import torch
from torch import nn

from specgraph import BackendError, Problem

from ._model import SpecgraphModel

__all__ = ["TorchvisionBackbone", "anchor_generator"]


class TorchvisionBackbone(nn.Module):
    """What torchvision detectors expect: ``out_channels`` and ``forward(x) -> OrderedDict`` of maps.

    Level keys ("3".."7") keep their order from fine to coarse, matching one anchor size per level.
    """

    def __init__(self, model: SpecgraphModel) -> None:
        super().__init__()
        model.plan.require_image("TorchvisionBackbone")
        if model.out_channels is None:
            widths = ", ".join(f"{f.level}: {f.channels}" for f in model.feature_info)
            raise BackendError(Problem(
                f"torchvision detectors need one width at every level; these endpoints differ ({widths}): "
                "use a spec with endpoint convs (`[endpoints] conv = true` and endpoints_num_filters) or a decoder "
                "(resnet_fpn)", "model"))
        self.body = model
        self.out_channels = model.out_channels
        self.size_divisibility = model.size_divisibility

    def forward(self, x: torch.Tensor) -> OrderedDict[str, torch.Tensor]:
        return OrderedDict(self.body(x))


def anchor_generator(model: SpecgraphModel | TorchvisionBackbone, scales: int = 3, base: float = 4.0,
                     aspect_ratios: tuple[float, ...] = (0.5, 1.0, 2.0)) -> Any:
    """RetinaNet's usual anchors: per level, ``base * stride * 2**(k/scales)`` for k < scales."""
    from torchvision.models.detection.anchor_utils import AnchorGenerator

    net = model.body if isinstance(model, TorchvisionBackbone) else model
    sizes = tuple(tuple(base * f.stride * 2 ** (k / scales) for k in range(scales)) for f in net.feature_info)
    return AnchorGenerator(sizes, (aspect_ratios,) * len(sizes))
