"""The hooks of the backend contract (``specgraph.backend_api.ConformingBackend``) that the
conformance suite drives: numpy in, numpy out, so one suite checks every backend."""

from __future__ import annotations

import ast
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from specgraph import ArgumentError

from ._layers import fuse_inputs
from ._model import SpecgraphModel
from ._ops import activation_kernel

__all__ = ["apply_activation", "apply_fusion", "count_parameters", "emitted_model", "predict"]


def predict(model: torch.nn.Module, images: Any) -> dict[str, np.ndarray]:
    """Eval-mode inference on NCHW float32 numpy images (a decoder: ``{level: NCHW features}``):
    ``{level: NCHW array}``."""
    model.eval()
    with torch.no_grad():
        if isinstance(images, Mapping):
            out = model({level: torch.as_tensor(np.asarray(x, dtype=np.float32)) for level, x in images.items()})
        else:
            out = model(torch.as_tensor(np.asarray(images, dtype=np.float32)))
    return {level: t.numpy() for level, t in out.items()}


def count_parameters(model: torch.nn.Module) -> int:
    """Parameters plus norm statistics (running mean and variance), as ``specgraph.stats`` counts;
    ``num_batches_tracked`` is torch's bookkeeping, not a weight."""
    params = sum(p.numel() for p in model.parameters())
    stats = sum(b.numel() for name, b in model.named_buffers() if name.endswith(("running_mean", "running_var")))
    return params + stats


def emitted_model(source: str, model: SpecgraphModel) -> torch.nn.Module:
    """Run emitted ``source`` in a fresh namespace, build its model and give it ``model``'s state dict."""
    ArgumentError.expect(source, str, "source", "emitted Python source (specgraph_torch.emit)")
    namespace: dict[str, Any] = {"__name__": "specgraph_emitted"}
    exec(compile(source, "<emitted>", "exec"), namespace)
    class_name = [n.name for n in ast.parse(source).body if isinstance(n, ast.ClassDef)][-1]  # the network
    emitted = namespace[class_name]()
    emitted.load_state_dict(model.state_dict())
    return emitted.eval()


def apply_activation(name: str, x: Any) -> np.ndarray:
    return activation_kernel(name)(torch.as_tensor(np.asarray(x))).numpy()


def apply_fusion(method: str, xs: Any, weights: Any) -> np.ndarray:
    w = torch.as_tensor(np.asarray(weights)) if weights is not None else None
    with torch.no_grad():
        return fuse_inputs([torch.as_tensor(np.asarray(x)) for x in xs], w, method).numpy()
