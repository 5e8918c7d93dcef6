"""The framework-neutral weight layout shared with the TensorFlow backend.

A weight is named by its place in the plan plus its role, as
``specgraph_tensorflow.weights_dict`` names it: ``sp3/in0/op0/kernel``,
``sp3/unit0/conv2/gamma``, ``sp14/unit0/se/reduce/bias``, ``sp3/fuse/weights``,
``stem/op0/moving_variance``. Kernels are stored in TensorFlow layout (HWIO;
depthwise ``[kh, kw, C, 1]``), so one ``.npz`` moves weights either way.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import numpy as np
import torch
from torch import nn

from ._model import SpecgraphNet
from ._weights import WeightsError

__all__ = ["load_structural", "structural_name", "to_structural"]

_ROLES = {"conv.weight": "kernel", "conv.bias": "bias", "norm.weight": "gamma", "norm.bias": "beta",
          "norm.running_mean": "moving_mean", "norm.running_var": "moving_variance",
          "reduce.weight": "reduce/kernel", "reduce.bias": "reduce/bias",
          "expand.weight": "expand/kernel", "expand.bias": "expand/bias"}
_KEY = re.compile(r"^nodes\.(?P<node>[^.]+)\.(?:(?:inputs\.(?P<edge>\d+)\.)?ops\.(?P<op>\d+)|units\.(?P<unit>\d+)\."
                  r"(?P<part>[a-z0-9]+)|(?P<fuse>fusion_weights))(?:\.(?P<rest>.+))?$")


def structural_name(key: str) -> str | None:
    """The shared name of a torch state-dict key (None for buffers with no counterpart)."""
    if key.endswith("num_batches_tracked"):
        return None
    m = _KEY.match(key)
    if m is None:
        raise WeightsError(f"no shared name for state-dict key {key!r}")
    node = m["node"]
    if m["fuse"]:
        return f"{node}/fuse/weights"
    role = _ROLES.get(m["rest"] or "")
    if role is None:
        raise WeightsError(f"no shared name for state-dict key {key!r}")
    if m["unit"] is not None:
        return f"{node}/unit{m['unit']}/{m['part']}/{role}"
    place = f"in{m['edge']}/op{m['op']}" if m["edge"] is not None else f"op{m['op']}"
    return f"{node}/{place}/{role}"


def _depthwise_keys(model: nn.Module) -> set[str]:
    return {f"{name}.weight" for name, m in model.named_modules()
            if isinstance(m, nn.Conv2d) and m.groups > 1 and m.groups == m.in_channels == m.out_channels}


def _to_tf(array: np.ndarray, depthwise: bool) -> np.ndarray:
    if array.ndim != 4:
        return array
    return array.transpose(2, 3, 0, 1) if depthwise else array.transpose(2, 3, 1, 0)


def _from_tf(array: np.ndarray, depthwise: bool) -> np.ndarray:
    if array.ndim != 4:
        return array
    return array.transpose(2, 3, 0, 1) if depthwise else array.transpose(3, 2, 0, 1)


def to_structural(model: SpecgraphNet) -> dict[str, np.ndarray]:
    """Every weight and BN statistic as ``{shared name: array}`` (TensorFlow layouts)."""
    depthwise = _depthwise_keys(model)
    out = {}
    for key, tensor in model.state_dict().items():
        name = structural_name(key)
        if name is not None:
            out[name] = _to_tf(tensor.detach().cpu().numpy(), key in depthwise)
    return out


def load_structural(model: SpecgraphNet, arrays: Mapping[str, np.ndarray] | str) -> None:
    """Load ``{shared name: array}`` (or an ``.npz`` path) into ``model``; all or nothing.

    Every missing, extra or mis-shaped weight is listed in one ``WeightsError``.
    """
    if isinstance(arrays, str):
        with np.load(arrays) as data:
            arrays = {k: data[k] for k in data.files}
    depthwise = _depthwise_keys(model)
    state = model.state_dict()
    targets = {name: key for key in state if (name := structural_name(key)) is not None}
    problems = [f"missing: {n} {tuple(state[k].shape)}" for n, k in targets.items() if n not in arrays]
    problems += [f"extra: {n} {tuple(np.shape(a))}" for n, a in arrays.items() if n not in targets]
    converted = {}
    for name, key in targets.items():
        if name in arrays:
            value = _from_tf(np.asarray(arrays[name]), key in depthwise)
            if tuple(value.shape) != tuple(state[key].shape):
                problems.append(f"shape: {name} model {tuple(state[key].shape)} (torch layout) vs "
                                f"{tuple(np.shape(arrays[name]))}")
            converted[key] = value
    if problems:
        raise WeightsError([f"{len(problems)} weight mismatch(es) loading shared-layout weights into "
                            f"{model.plan.spec_name} {model.plan.variant}:", *problems])
    with torch.no_grad():
        for key, value in converted.items():
            state[key].copy_(torch.as_tensor(value, dtype=state[key].dtype))
