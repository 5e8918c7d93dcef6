"""Model Garden weights -> a :class:`SpecgraphNet`, mapped by structure.

Keras names layers by per-class counters in creation order. We replay Model Garden's
creation order from the plan: the stem conv, then per block its inputs' resampling
convs (``conv2d_K`` / ``depthwise_conv2d_K``, each followed by ``batch_normalization_K``)
and its block layers (``bottleneck_block_n`` ...), and last the endpoint convs.
Counters are global to a Keras session, so each class's offset is read off the
source (its smallest index); endpoints are the *last* convs, because Model Garden
creates pruned blocks (SpineNet's sp16) before them without using them.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from specgraph import BackendError, Conv, Plan, Problem

from ._model import SpecgraphNet

__all__ = ["WeightsError", "load_modelgarden_weights", "modelgarden_kwargs", "modelgarden_names"]


class WeightsError(BackendError):
    """The source does not fit the model: every missing, extra or mis-shaped variable is listed."""


_BN_VARS = {"gamma": "weight", "beta": "bias", "moving_mean": "running_mean", "moving_variance": "running_var"}
_BLOCK_CLASS = {"bottleneck": "bottleneck_block", "residual": "residual_block", "mbconv": "inverted_bottleneck_block"}
_TOP = re.compile(r"^(.+?)(?:_(\d+))?$")


@dataclass(frozen=True)
class _Ref:
    """A Keras layer by class and model-local creation index (resolved against the source later)."""

    cls: str
    index: int
    from_end: bool = False  # index counts back from the class's last layer


@dataclass(frozen=True)
class _Entry:
    layer: _Ref
    inner: str  # "" for a top-level layer, else "conv2d_1", "squeeze_excitation/conv2d_2", ...
    var: str
    torch_key: str
    layout: str  # "conv", "depthwise", "vector"


def _name(cls: str, index: int) -> str:
    return cls if index == 0 else f"{cls}_{index}"


class _Counter:
    def __init__(self) -> None:
        self.counts: dict[str, int] = defaultdict(int)

    def next(self, cls: str) -> int:
        self.counts[cls] += 1
        return self.counts[cls] - 1


def _conv_bn(entries: list[_Entry], conv: _Ref, bn: _Ref | None, prefix: str, depthwise: bool, inner_conv: str = "",
             inner_bn: str = "") -> None:
    kernel = "depthwise_kernel" if depthwise else "kernel"
    entries.append(_Entry(conv, inner_conv, kernel, f"{prefix}.conv.weight", "depthwise" if depthwise else "conv"))
    if bn is not None:
        for var, attr in _BN_VARS.items():
            entries.append(_Entry(bn, inner_bn, var, f"{prefix}.norm.{attr}", "vector"))


def _unit_entries(entries: list[_Entry], block: _Ref, unit: Any, prefix: str) -> None:
    conv, bn = _Counter(), _Counter()

    def add(name: str, depthwise: bool = False) -> None:
        cname = _name("depthwise_conv2d", conv.next("dw")) if depthwise else _name("conv2d", conv.next("conv"))
        bname = _name("batch_normalization", bn.next("bn"))
        _conv_bn(entries, block, block, f"{prefix}.{name}", depthwise, cname, bname)

    if unit.type in ("bottleneck", "residual"):
        if unit.projection:
            add("shortcut")
        for name in ("conv1", "conv2", "conv3") if unit.type == "bottleneck" else ("conv1", "conv2"):
            add(name)
        return
    # mbconv: Keras names the SE convs when SE is built, after the projection conv exists.
    if unit.expand:
        add("expand")
    add("depthwise", depthwise=True)
    add("project")
    if unit.se_channels > 0:
        for name in ("reduce", "expand"):
            inner = f"squeeze_excitation/{_name('conv2d', conv.next('conv'))}"
            entries.append(_Entry(block, inner, "kernel", f"{prefix}.se.{name}.weight", "conv"))
            entries.append(_Entry(block, inner, "bias", f"{prefix}.se.{name}.bias", "vector"))


def _unpruned(plan: Plan) -> Plan:
    """The same network with every output block kept: Model Garden creates pruned blocks too.

    Their layers consume name counters, so they must be replayed (without expecting
    their variables). Falls back to ``plan`` when the spec cannot be replanned.
    """
    if not plan.pruned:
        return plan
    import specgraph

    try:
        spec = specgraph.load(plan.spec_name)
        for min_level in range(plan.min_level - 1, -1, -1):
            full = specgraph.plan(spec, plan.variant, plan.input_size, min_level, plan.max_level)
            if all(name in full for name in plan.pruned):
                return full
    except specgraph.SpecgraphError:
        pass
    return plan


def modelgarden_names(plan: Plan) -> list[_Entry]:
    """Every Model Garden variable of the plan's network, with the torch state-dict key it maps to."""
    entries: list[_Entry] = []
    top = _Counter()
    endpoints = [n for n in plan.nodes if n.kind == "endpoint"]
    for node in _unpruned(plan).nodes:
        if node.kind == "endpoint":
            continue
        if node.name in plan.pruned:
            _conv_bn_ghost(top, node)
            continue
        chains = [(f"nodes.{node.name}.ops", node.ops)] if node.kind == "stem" else [
            (f"nodes.{node.name}.inputs.{j}.ops", e.ops) for j, e in enumerate(node.inputs)]
        for prefix, ops in chains:
            for i, op in enumerate(ops):
                if isinstance(op, Conv):
                    cls = "depthwise_conv2d" if op.depthwise else "conv2d"
                    bn = _Ref("batch_normalization", top.next("batch_normalization")) if op.norm else None
                    # The conv is created before its BN: take the conv index first.
                    _conv_bn(entries, _Ref(cls, top.next(cls)), bn, f"{prefix}.{i}", op.depthwise)
        for k, unit in enumerate(node.units):
            cls = _BLOCK_CLASS[unit.type]
            _unit_entries(entries, _Ref(cls, top.next(cls)), unit, f"nodes.{node.name}.units.{k}")
    for back, node in enumerate(reversed(endpoints)):
        for i, op in enumerate(node.ops):
            if isinstance(op, Conv):
                _conv_bn(entries, _Ref("conv2d", back, from_end=True),
                         _Ref("batch_normalization", back, from_end=True), f"nodes.{node.name}.ops.{i}", False)
    return entries


def _conv_bn_ghost(top: _Counter, node: Any) -> None:
    """Advance the counters past a block Model Garden creates but does not use."""
    for edge in node.inputs:
        for op in edge.ops:
            if isinstance(op, Conv):
                top.next("depthwise_conv2d" if op.depthwise else "conv2d")
                if op.norm:
                    top.next("batch_normalization")
    for unit in node.units:
        top.next(_BLOCK_CLASS[unit.type])


def modelgarden_kwargs(plan: Plan) -> tuple[str, dict[str, Any]]:
    """The Model Garden class name and constructor kwargs that build the plan's network."""
    from official.vision.modeling.backbones import spinenet, spinenet_mobile

    common = {"min_level": plan.min_level, "max_level": plan.max_level, "activation": plan.activation,
              "norm_momentum": plan.norm_momentum, "norm_epsilon": plan.norm_epsilon}
    if plan.spec_name == "spinenet" and plan.variant in spinenet.SCALING_MAP:
        s = spinenet.SCALING_MAP[plan.variant]
        return "SpineNet", {**common, "endpoints_num_filters": s["endpoints_num_filters"],
                            "resample_alpha": s["resample_alpha"], "block_repeats": s["block_repeats"],
                            "filter_size_scale": s["filter_size_scale"]}
    if plan.spec_name == "spinenet_mobile" and plan.variant in spinenet_mobile.SCALING_MAP:
        s = spinenet_mobile.SCALING_MAP[plan.variant]
        return "SpineNetMobile", {**common, "endpoints_num_filters": s["endpoints_num_filters"],
                                  "block_repeats": s["block_repeats"], "filter_size_scale": s["filter_size_scale"]}
    raise WeightsError(f"no Model Garden model for {plan.spec_name} variant {plan.variant}")


def _from_checkpoint(path: str, plan: Plan) -> dict[str, np.ndarray]:
    """Restore a ``tf.train.Checkpoint(model=...)`` into a freshly built Model Garden model."""
    import tensorflow as tf
    import tf_keras
    from official.vision.modeling.backbones import spinenet, spinenet_mobile

    cls_name, kwargs = modelgarden_kwargs(plan)
    cls = spinenet.SpineNet if cls_name == "SpineNet" else spinenet_mobile.SpineNetMobile
    shape = [None, *plan.input_size, plan.input_channels]
    model = cls(input_specs=tf_keras.layers.InputSpec(shape=shape), **kwargs)
    status = tf.train.Checkpoint(model=model).read(path)
    try:
        status.assert_consumed()
    except (AssertionError, ValueError) as exc:
        raise WeightsError(f"checkpoint {path} does not fit {cls_name} {plan.variant}: {exc}") from exc
    return _from_keras(model)


def _from_keras(model: Any) -> dict[str, np.ndarray]:
    return {w.name.removesuffix(":0"): np.asarray(w.numpy()) for w in model.weights}


def _read(source: Any, plan: Plan) -> dict[str, np.ndarray]:
    if hasattr(source, "weights") and not isinstance(source, (str, Path)):
        return _from_keras(source)
    if isinstance(source, Mapping):
        return {str(k).removesuffix(":0"): np.asarray(v) for k, v in source.items()}
    path = str(source)
    if path.endswith(".npz"):
        with np.load(path) as data:
            return {k.removesuffix(":0"): data[k] for k in data.files}
    return _from_checkpoint(path, plan)


def _resolve(entries: list[_Entry], names: set[str]) -> dict[str, _Entry]:
    """Keras variable name -> entry, with each class's counter offset / last index read from ``names``."""
    seen: dict[str, list[int]] = defaultdict(list)
    for name in names:
        m = _TOP.match(name.split("/", 1)[0])
        if m:
            seen[m.group(1)].append(int(m.group(2) or 0))
    out: dict[str, _Entry] = {}
    for e in entries:
        idx = seen.get(e.layer.cls) or [0]
        index = max(idx) - e.layer.index if e.layer.from_end else min(idx) + e.layer.index
        parts = [_name(e.layer.cls, index), e.inner, e.var]
        out["/".join(p for p in parts if p)] = e
    return out


_LAYOUT: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "conv": lambda a: a.transpose(3, 2, 0, 1),  # HWIO -> OIHW
    "depthwise": lambda a: a.transpose(2, 3, 0, 1),  # [kh, kw, C, 1] -> [C, 1, kh, kw]
    "vector": lambda a: a,
}


def load_modelgarden_weights(model: SpecgraphNet, source: Any) -> SpecgraphNet:
    """Copy Model Garden weights into ``model``; all or nothing.

    ``source``: a built Model Garden Keras model, a ``tf.train.Checkpoint(model=...)``
    path, an ``.npz`` path or a mapping of Keras variable name -> array. Everything is
    checked before anything is copied; problems raise one :class:`WeightsError`.
    """
    values = _read(source, model.plan)
    mapping = _resolve(modelgarden_names(model.plan), set(values))
    state = model.state_dict()
    problems: list[Problem] = []
    for name in sorted(set(mapping) - set(values)):
        problems.append(Problem(f"missing in the source (for {mapping[name].torch_key})", name))
    for name in sorted(set(values) - set(mapping)):
        problems.append(Problem(f"unexpected variable {list(values[name].shape)} in the source", name))
    copies: dict[str, np.ndarray] = {}
    for name in sorted(set(mapping) & set(values)):
        entry = mapping[name]
        array = _LAYOUT[entry.layout](values[name])
        target = state.get(entry.torch_key)
        if target is None:
            problems.append(Problem(f"no torch tensor {entry.torch_key}", name))
        elif tuple(array.shape) != tuple(target.shape):
            problems.append(Problem(f"shape {list(values[name].shape)} does not fit {entry.torch_key} "
                                    f"{list(target.shape)}", name))
        else:
            copies[entry.torch_key] = array
    covered = {e.torch_key for e in mapping.values()}
    for key in sorted(k for k in state if not k.endswith("num_batches_tracked") and k not in covered):
        problems.append(Problem("no Model Garden variable maps to it", key))
    if problems:
        raise WeightsError(problems)
    with torch.no_grad():
        for key, array in copies.items():
            state[key].copy_(torch.from_numpy(np.ascontiguousarray(array)).to(state[key].dtype))
    return model
