"""Model Garden weights -> a :class:`SpecgraphModel`, mapped by structure.

Keras names layers by per-class counters in creation order. We replay Model Garden's
creation order from the plan: the stem conv, then per block its inputs' resampling
convs (``conv2d_K`` / ``depthwise_conv2d_K``, each followed by ``batch_normalization_K``)
and its block layers (``bottleneck_block_n`` ...), and last the endpoint convs.
Counters are global to a Keras session, so each class's offset is read off the
source (its smallest index); endpoints are the *last* convs, because Model Garden
creates pruned blocks (SpineNet's sp16) before them without using them.
"""

from __future__ import annotations

import importlib
import os
import re
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from specgraph import ArgumentError, Conv, Node, Plan, Problem, WeightsError
from specgraph._weights import Target, convert_weights, read_npz
from specgraph.backend_api import (
    MODELGARDEN_BLOCKS,
    is_op_block,
    modelgarden_backbone,
    modelgarden_decoder_variables,
    modelgarden_parts,
    modelgarden_plan,
)

from ._model import SpecgraphModel

# WeightsError is specgraph.WeightsError, re-exported under the name this package always had.
__all__ = ["WeightsError", "load_modelgarden_weights", "modelgarden_kwargs", "modelgarden_names"]


_BN_VARS = {"gamma": "weight", "beta": "bias", "moving_mean": "running_mean", "moving_variance": "running_var"}
# Keras layer name of each unit type's Model Garden block (``bottleneck_block`` ...).
_BLOCK_CLASS = {unit_type: block.layer_name for unit_type, block in MODELGARDEN_BLOCKS.items()}
_TOP = re.compile(r"^(.+?)(?:_(\d+))?$")


@dataclass(frozen=True)
class _Ref:
    """A Keras layer by class and model-local creation index (resolved against the source later), or by its
    own name (``named``: a decoder's ``lateral_3``)."""

    cls: str
    index: int
    from_end: bool = False  # index counts back from the class's last layer
    named: bool = False
    decoder: bool = False  # a decoder's layer: counted among the decoder's names (when the source tells them apart)


@dataclass(frozen=True)
class _Entry:
    layer: _Ref
    inner: str  # "" for a top-level layer, else "conv2d_1", "squeeze_excitation/conv2d_2", ...
    var: str
    torch_key: str
    layout: str  # "conv", "depthwise", "vector"


# Torch key suffix and layout of each Keras variable (our role) of a decoder op, per op kind.
# A weighted op's role (the Keras variable name) -> its key under the op's module and its layout: the one table of
# both the Model Garden decoder mapping and the shared (structural) names (``_interop``).
_NORM_KEYS = {"gamma": "weight", "beta": "bias", "moving_mean": "running_mean", "moving_variance": "running_var"}
OP_KEYS: dict[str, dict[str, tuple[str, str]]] = {
    "conv": {"kernel": ("conv.weight", "conv"), "depthwise_kernel": ("conv.weight", "depthwise"),
             "bias": ("conv.bias", "vector"), **{k: (f"norm.{v}", "vector") for k, v in _NORM_KEYS.items()}},
    "separable_conv": {"depthwise_kernel": ("depthwise.conv.weight", "depthwise"),
                       "pointwise_kernel": ("pointwise.conv.weight", "conv"),
                       "bias": ("pointwise.conv.bias", "vector"),
                       **{k: (f"pointwise.norm.{v}", "vector") for k, v in _NORM_KEYS.items()}},
    "norm": {k: (v, "vector") for k, v in _NORM_KEYS.items()},
}


def _decoder_entries(plan: Plan) -> list[_Entry]:
    """The Model Garden decoder's variables (``modelgarden_decoder_variables``) with their torch keys."""
    entries = []
    for v in modelgarden_decoder_variables(plan):
        suffix, layout = OP_KEYS[v.op.op][v.role]
        chain = f"nodes.{v.node}.ops" if v.edge is None else f"nodes.{v.node}.inputs.{v.edge}.ops"
        layer = _Ref(v.layer, 0, named=True) if v.index is None else _Ref(v.layer, v.index, decoder=True)
        entries.append(_Entry(layer, "", v.role, f"{chain}.{v.op_index}.{suffix}", layout))
    return entries


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
    """The unit's weighted ops in Model Garden's creation order (``MODELGARDEN_BLOCKS``): its convs, then
    the squeeze-excitation's, which Keras names when it is built, after the block's other convs exist."""
    mg = MODELGARDEN_BLOCKS[unit.type]
    ops = {step.role: step.op for step in unit.weighted_ops}
    conv, bn = _Counter(), _Counter()
    for role, _, _ in mg.convs:
        op = ops.get(role)
        if op is None:  # an optional op this unit leaves out (shortcut, expand)
            continue
        cname = _name("depthwise_conv2d", conv.next("dw")) if op.depthwise else _name("conv2d", conv.next("conv"))
        bname = _name("batch_normalization", bn.next("bn")) if op.norm else ""
        _conv_bn(entries, block, block if op.norm else None, f"{prefix}.{role}", op.depthwise, cname, bname)
    se_role = mg.squeeze_excite[0] if mg.squeeze_excite is not None else None
    if se_role in ops:
        for name in ("reduce", "expand"):  # the torch SqueezeExcite's convs, in Model Garden's order
            inner = f"squeeze_excitation/{_name('conv2d', conv.next('conv'))}"
            entries.append(_Entry(block, inner, "kernel", f"{prefix}.{se_role}.{name}.weight", "conv"))
            entries.append(_Entry(block, inner, "bias", f"{prefix}.{se_role}.{name}.bias", "vector"))


def _unpruned(plan: Plan) -> tuple[Node, ...]:
    """Every node of the network in build order, the pruned blocks too: Model Garden creates them.

    Their layers consume name counters, so they must be replayed (without expecting their
    variables); the plan keeps them (``Plan.pruned_nodes``), whatever spec it came from.
    """
    kept = {node.name for _, node in plan.pruned_nodes}
    missing = [name for name in plan.pruned if name not in kept]
    if missing:
        # Replaying without them would shift every later layer name: refuse rather than mis-map.
        raise WeightsError(Problem(f"the plan lacks the structure of its pruned block(s) {', '.join(missing)}, "
                                   "which Model Garden creates too (a plan dict from an older specgraph?); plan "
                                   "the spec again", f"{plan.spec_name} {plan.variant}"))
    return plan.unpruned_nodes


def node_of(torch_key: str) -> str:
    return torch_key.split(".", 2)[1]  # nodes.<node>.…; a module name never holds a dot


def modelgarden_names(plan: Plan) -> list[_Entry]:
    """Every Model Garden variable of the plan's network, with the torch state-dict key it maps to."""
    ArgumentError.expect(plan, Plan, "plan", "a Plan (specgraph.plan)")
    return [e for e in _modelgarden_entries(modelgarden_plan(plan)) if node_of(e.torch_key) in plan]


def _modelgarden_entries(plan: Plan) -> list[_Entry]:
    """:func:`modelgarden_names` of a plan with contiguous endpoints (as Model Garden builds them)."""
    entries: list[_Entry] = []
    top = _Counter()
    endpoints = [n for n in plan.nodes if n.kind == "endpoint"]
    entries += _decoder_entries(plan)
    for node in _unpruned(plan):
        if node.kind == "endpoint" or is_op_block(node):
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
    ArgumentError.expect(plan, Plan, "plan", "a Plan (specgraph.plan)")
    _, class_name, kwargs = modelgarden_backbone(
        plan, lambda module, table: getattr(importlib.import_module(module), table))
    return class_name, kwargs


def _from_checkpoint(path: str, plan: Plan) -> dict[str, np.ndarray]:
    """The Model Garden backbone's variables from any checkpoint holding one (backbone-only, written with
    ``write()`` or ``save()``, or a RetinaNet / Mask R-CNN training checkpoint): the TensorFlow backend's
    reader, which knows Model Garden's checkpoint layout (the ``modelgarden`` extra installs it)."""
    try:
        from specgraph_tensorflow._mg_weights import modelgarden_from_checkpoint
    except ImportError as exc:
        raise WeightsError(Problem("reading a Model Garden checkpoint needs specgraph-tensorflow and Model Garden: "
                                   "pip install 'specgraph-torch[modelgarden]'", file=path)) from exc
    return _from_keras(modelgarden_from_checkpoint(plan, path))


def _from_keras(model: Any) -> dict[str, np.ndarray]:
    return {w.name.removesuffix(":0"): np.asarray(w.numpy()) for w in model.weights}


def as_numpy(value: Any) -> Any:
    """Torch tensors as numpy arrays (the checks take anything numpy reads; they report the rest)."""
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu()
        return (value.float() if value.dtype == torch.bfloat16 else value).numpy()
    return value


def _read(source: Any, plan: Plan) -> tuple[dict[str, Any], str | None, set[str] | None]:
    """``({Keras variable name without ':0': array}, the file it came from, the decoder's names)``; nothing is
    checked yet. The decoder's names are known when it comes as its own model; else None."""
    if isinstance(source, Mapping):
        values: dict[str, Any] = {}
        twice = []
        for key, value in source.items():
            name = str(key).removesuffix(":0")
            if name in values:
                twice.append(name)
            values[name] = as_numpy(value)
        if twice:
            raise WeightsError([Problem("given twice (with and without ':0')", name) for name in twice])
        return values, None, None
    if isinstance(source, str | os.PathLike):
        path = os.fspath(source)
        if path.endswith(".npz"):
            return {k.removesuffix(":0"): v for k, v in read_npz(path).items()}, path, None
        return _from_checkpoint(path, plan), path, None
    if isinstance(source, tuple | list) or hasattr(source, "weights"):
        backbone, decoder = modelgarden_parts(source, plan)
        values = _from_keras(backbone) if backbone is not None else {}
        theirs = _from_keras(decoder) if decoder is not None else {}
        twice = sorted(set(values) & set(theirs))
        if twice:
            raise WeightsError([Problem("in the backbone and in the decoder", name) for name in twice])
        return {**values, **theirs}, None, set(theirs)
    raise ArgumentError(Problem("expected a Model Garden Keras model (or a (backbone, decoder) pair, or a detection "
                                "model), a checkpoint path, an .npz path or a mapping of variable name -> array; got "
                                f"{type(source).__name__}", "source"))


def require_model(model: Any) -> None:
    ArgumentError.expect(model, SpecgraphModel, "model", "a SpecgraphModel (specgraph_torch.compile)")


def _indices(names: set[str]) -> dict[str, list[int]]:
    """Layer class name prefix -> the creation indices of its layers among ``names``."""
    seen: dict[str, list[int]] = defaultdict(list)
    for name in names:
        m = _TOP.match(name.split("/", 1)[0])
        if m:
            seen[m.group(1)].append(int(m.group(2) or 0))
    return seen


def _resolve(entries: list[_Entry], names: set[str], decoder_names: set[str] | None = None) -> dict[str, _Entry]:
    """Keras variable name -> entry, with each class's counter offset / last index read from ``names``.

    A decoder's layers are counted among ``decoder_names`` when the source told them apart; else the decoder's
    layers of a class are taken to follow the backbone's (Model Garden builds the backbone, then the decoder)."""
    seen = _indices(names - (decoder_names or set()))
    own = _indices(decoder_names) if decoder_names is not None else seen
    backbone_layers: dict[str, set[int]] = defaultdict(set)
    for e in entries:
        if not (e.layer.named or e.layer.decoder or e.layer.from_end):
            backbone_layers[e.layer.cls].add(e.layer.index)
    out: dict[str, _Entry] = {}
    for e in entries:
        idx = (own if e.layer.decoder else seen).get(e.layer.cls) or [0]
        if e.layer.decoder:
            after = 0 if decoder_names is not None else len(backbone_layers[e.layer.cls])
            parts = [_name(e.layer.cls, min(idx) + after + e.layer.index), e.inner, e.var]
        elif e.layer.named:
            parts = [e.layer.cls, e.inner, e.var]
        else:
            index = max(idx) - e.layer.index if e.layer.from_end else min(idx) + e.layer.index
            parts = [_name(e.layer.cls, index), e.inner, e.var]
        out["/".join(p for p in parts if p)] = e
    return out


# TensorFlow layout -> torch layout, as a transpose: Conv2D HWIO -> OIHW, DepthwiseConv2D [kh, kw, C, 1] ->
# [C, 1, kh, kw]. Shared with the structural loader in _interop.
_TO_TORCH: dict[str, tuple[int, ...]] = {"conv": (3, 2, 0, 1), "depthwise": (2, 3, 0, 1)}


def from_tf_layout(array: np.ndarray, layout: str) -> np.ndarray:
    """A TensorFlow-layout array in torch layout (``layout``: "conv", "depthwise" or "vector")."""
    return array.transpose(_TO_TORCH[layout]) if layout in _TO_TORCH else array


def to_tf_layout(array: np.ndarray, layout: str) -> np.ndarray:
    """The inverse of :func:`from_tf_layout`."""
    return array.transpose(np.argsort(_TO_TORCH[layout])) if layout in _TO_TORCH else array


def tf_shape(shape: torch.Size, layout: str) -> tuple[int, ...]:
    """The TensorFlow-layout shape of a torch tensor's shape."""
    if layout not in _TO_TORCH:
        return tuple(shape)
    return tuple(shape[i] for i in np.argsort(_TO_TORCH[layout]))


def numpy_dtype(dtype: torch.dtype) -> np.dtype:
    """The numpy dtype arrays are converted to for a tensor of ``dtype`` (float32 where numpy has none: bfloat16)."""
    try:
        return torch.empty(0, dtype=dtype).numpy().dtype
    except TypeError:
        return np.dtype(np.float32)


def copy_into(model: torch.nn.Module, arrays: Mapping[str, np.ndarray]) -> None:
    """Copy checked arrays (torch layout, by state-dict key) into ``model``.

    Every tensor is made on the target's device and dtype before the first copy, so a copy cannot fail
    half-way and leave the model partly loaded.
    """
    state = model.state_dict()
    tensors = {key: torch.from_numpy(np.ascontiguousarray(a)).to(device=state[key].device, dtype=state[key].dtype)
               for key, a in arrays.items()}
    with torch.no_grad():
        for key, tensor in tensors.items():
            state[key].copy_(tensor)


def load_modelgarden_weights(model: SpecgraphModel, source: Any) -> SpecgraphModel:
    """Copy Model Garden weights into ``model``; all or nothing.

    ``source``: a built Model Garden Keras model, a ``tf.train.Checkpoint(model=...)``
    path, an ``.npz`` path or a mapping of Keras variable name -> array. Names, shapes,
    dtypes (floating or integer) and values (finite) are all checked before anything is
    copied; every problem is listed in one :class:`specgraph.WeightsError` and the model
    is left as it was.
    """
    require_model(model)
    full = modelgarden_plan(model.plan)  # a level selection reads the Model Garden network of min..max_level
    values, file, decoder_names = _read(source, full)
    mapping = _resolve(_modelgarden_entries(full), set(values), decoder_names)
    # Variables of the nodes a level selection does not build: in the source, not in the model.
    dropped = {name for name, e in mapping.items() if node_of(e.torch_key) not in model.plan}
    values = {k: v for k, v in values.items() if k not in dropped}
    mapping = {k: e for k, e in mapping.items() if k not in dropped}
    state = model.state_dict()
    problems = [Problem(f"no torch tensor {e.torch_key} to load it into", name)
                for name, e in mapping.items() if e.torch_key not in state]
    targets = {name: Target(tf_shape(state[e.torch_key].shape, e.layout), numpy_dtype(state[e.torch_key].dtype),
                            e.torch_key) for name, e in mapping.items() if e.torch_key in state}
    covered = {e.torch_key for e in mapping.values()}
    problems += [Problem("no Model Garden variable maps to it", key) for key in state
                 if not key.endswith("num_batches_tracked") and key not in covered]
    orphans = set(mapping) - set(targets)  # already reported above; not "unexpected" as well
    arrays = convert_weights({k: v for k, v in values.items() if k not in orphans}, targets, file=file,
                             problems=problems)
    copy_into(model, {mapping[name].torch_key: from_tf_layout(a, mapping[name].layout) for name, a in arrays.items()})
    return model
