"""The framework-neutral weight layout shared with the TensorFlow backend.

A weight is named by its place in the plan plus its role, as
``specgraph_tensorflow.weights_dict`` names it: ``sp3/in0/op0/kernel``,
``sp3/unit0/conv2/gamma``, ``sp14/unit0/se/reduce/bias``, ``sp3/fuse/weights``,
``stem/op0/moving_variance``. Kernels are stored in TensorFlow layout (HWIO;
depthwise ``[kh, kw, C, 1]``), so one ``.npz`` moves weights either way.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import Any

import numpy as np
from torch import nn

from specgraph import ArgumentError, Problem, WeightsError
from specgraph._weights import Target, read_npz
from specgraph.backend_api import LoadReport, fuse_slot, op_slot, select_weights, unit_slot

from ._model import SpecgraphModel
from ._weights import (
    OP_KEYS,
    as_numpy,
    copy_into,
    from_tf_layout,
    node_of,
    numpy_dtype,
    require_model,
    tf_shape,
    to_tf_layout,
)

__all__ = ["load_structural", "structural_name", "to_structural"]



def _roles() -> dict[str, str]:
    """A state-dict key's tail (after the op or unit) -> its role: the op modules' keys (``OP_KEYS``; a conv's
    weight is ``kernel``, depthwise or not: Model Garden's ``depthwise_kernel`` is its name only), the block units'
    convs and norms (as a conv op's) and the squeeze-excitation's two convs."""
    roles = {"reduce.weight": "reduce/kernel", "reduce.bias": "reduce/bias",
             "expand.weight": "expand/kernel", "expand.bias": "expand/bias"}
    for keys in OP_KEYS.values():
        for role, (suffix, _) in keys.items():
            roles.setdefault(suffix, role)
    return roles


_ROLES = _roles()
_KEY = re.compile(r"^nodes\.(?P<node>[^.]+)\.(?:(?:inputs\.(?P<edge>\d+)\.)?ops\.(?P<op>\d+)|units\.(?P<unit>\d+)\."
                  r"(?P<part>[a-z0-9]+)|(?P<fuse>fusion_weights))(?:\.(?P<rest>.+))?$")


def structural_name(key: str) -> str | None:
    """The shared name of a torch state-dict key (None for buffers with no counterpart)."""
    ArgumentError.expect(key, str, "key", "a state-dict key (str)")
    if key.endswith("num_batches_tracked"):
        return None
    m = _KEY.match(key)
    if m is None:
        raise WeightsError(Problem("no shared name for this state-dict key", key))
    node = m["node"]
    if m["fuse"]:
        return f"{fuse_slot(node)}/weights"
    role = _ROLES.get(m["rest"] or "")
    if role is None:
        raise WeightsError(Problem("no shared name for this state-dict key", key))
    if m["unit"] is not None:
        return f"{unit_slot(node, int(m['unit']))}/{m['part']}/{role}"
    edge = int(m["edge"]) if m["edge"] is not None else None
    return f"{op_slot(node, int(m['op']), edge)}/{role}"


def _layouts(model: nn.Module) -> dict[str, str]:
    """State-dict key -> "conv", "depthwise" or "vector": how its TensorFlow counterpart is laid out."""
    depthwise = {f"{name}.weight" for name, m in model.named_modules()
                 if isinstance(m, nn.Conv2d) and m.groups > 1 and m.groups == m.in_channels == m.out_channels}
    return {key: "depthwise" if key in depthwise else "conv" if t.ndim == 4 else "vector"
            for key, t in model.state_dict().items()}


def _own_state(model: SpecgraphModel) -> dict[str, Any]:
    """The state dict less the keys of nodes that share another's weights (the owner's keys name them)."""
    sharing = {node.name for node in model.plan.nodes if node.shares}
    return {key: t for key, t in model.state_dict().items() if not sharing or node_of(key) not in sharing}


def to_structural(model: SpecgraphModel) -> dict[str, np.ndarray]:
    """Every weight and BN statistic as ``{shared name: array}`` (TensorFlow layouts)."""
    require_model(model)
    layouts = _layouts(model)
    out = {}
    for key, tensor in _own_state(model).items():
        name = structural_name(key)
        if name is not None:
            out[name] = to_tf_layout(tensor.detach().cpu().numpy(), layouts[key])
    return out


def _is_state_dict(names: list[str]) -> bool:
    """Whether (prefix-stripped) source names are torch state-dict keys (``nodes.sp3.units.0...``), not shared
    names (``sp3/unit0/...``): a shared name starts with a node name, and no ``nodes.`` module is a node."""
    return bool(names) and all(name.startswith("nodes.") for name in names)


def load_structural(model: SpecgraphModel, arrays: Mapping[str, Any] | str | os.PathLike[str], *, strict: bool = True,
                    prefix: str = "") -> LoadReport:
    """Load ``{shared name: array}`` (or an ``.npz`` path) into ``model``; all or nothing.

    Names, shapes, dtypes (floating or integer) and values (finite) are all checked before
    anything is copied; every problem is listed in one :class:`specgraph.WeightsError` and
    the model is left as it was.

    ``prefix``: only names starting with it are read, the prefix stripped: ``"backbone/"`` for a
    backbone's shared names inside a detector's, or ``"backbone.body."`` for a torchvision detector's
    own ``state_dict()`` (names that are then ``nodes.<node>...`` state-dict keys are read as a torch
    state dict, in torch layout). ``strict=False`` loads what matches and reports the rest (missing
    and unexpected names) instead of refusing; anything it loads is still checked first.
    Returns a :class:`specgraph.LoadReport` (loaded, missing, unexpected, by the names read).
    """
    require_model(model)
    file = None
    if isinstance(arrays, str | os.PathLike):
        file = os.fspath(arrays)
        arrays = read_npz(file)
    elif not isinstance(arrays, Mapping):
        raise ArgumentError(Problem(f"expected a mapping of shared name -> array or an .npz path; got "
                                    f"{type(arrays).__name__}", "arrays"))
    if not isinstance(prefix, str):  # checked again (with strict) in select_weights; needed here to strip it
        raise ArgumentError(Problem(f"expected a string such as 'backbone/', got {type(prefix).__name__}", "prefix"))
    arrays = {str(k): as_numpy(v) for k, v in arrays.items()}
    layouts = _layouts(model)
    state = model.state_dict()
    if _is_state_dict([k[len(prefix):] for k in arrays if k.startswith(prefix)]):
        # A torch state dict (e.g. a detector's): by key, in torch layout; BN step counters are not weights.
        arrays = {k: v for k, v in arrays.items() if not k.endswith("num_batches_tracked")}
        targets = {key: Target(tuple(t.shape), numpy_dtype(t.dtype), structural_name(key) or "")
                   for key, t in state.items() if not key.endswith("num_batches_tracked")}
        checked, report = select_weights(arrays, targets, strict=strict, prefix=prefix, file=file)
        copy_into(model, checked)
        return report
    keys = {name: key for key in _own_state(model) if (name := structural_name(key)) is not None}
    targets = {name: Target(tf_shape(state[key].shape, layouts[key]), numpy_dtype(state[key].dtype), key)
               for name, key in keys.items()}
    checked, report = select_weights(arrays, targets, strict=strict, prefix=prefix, file=file)
    copy_into(model, {keys[name]: from_tf_layout(a, layouts[keys[name]]) for name, a in checked.items()})
    return report
