"""Standalone PyTorch source for a plan: the template mirrors this backend's module layout.

Plan values enter the code built here only through ``repr`` (``{x!r}``): a plan deserialised
without checks may hold a string where a number belongs, and it must stay a literal.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass

import jinja2

from specgraph import ArgumentError, BackendError, Conv, MaxPool, Node, Plan, Unit, Upsample
from specgraph._codegen import ACTIVATION_FUNCTIONS, Namespace, activation_sources, render_template

from . import _ops
from ._ops import ACTIVATION_KERNELS

__all__ = ["emit"]

# Identifiers the generated module defines itself; spec names must not shadow them.
_MODULE_NAMES = {"math", "torch", "F", "nn", "ACTIVATION", "SPEC_NAMES", "NORM_MOMENTUM", "NORM_EPSILON",
                 "same_padding", "pad_same", "hard_sigmoid", "Activation", "variance_scaling_", "ConvNormAct",
                 "MaxPoolSame", "UpsampleNearest", "OpChain", "StochasticDepth", "Bottleneck", "Residual",
                 "SqueezeExcitation", "MBConv", "Block", "images", "hw", "nodes", "self", "rate", "_TRUNC_STD",
                 "_keras_fans", "init_variance_scaling", "init_glorot_uniform",
                 *ACTIVATION_FUNCTIONS}


@dataclass(frozen=True)
class _Line:
    key: str
    var: str
    args: str
    constructor: str
    comment: str


def _op(op: Conv | MaxPool | Upsample, level: int, resample: bool) -> tuple[str, int]:
    if isinstance(op, Conv):
        groups = f", groups={op.groups!r}" if op.groups != 1 else ""
        flags = ("" if op.norm else ", norm=False") + ("" if op.activation else ", act=False")
        if resample and op.depthwise:  # as the backend's resampling chains (Model Garden's Mobile resamplers)
            flags += ", glorot=True"
        return (f"ConvNormAct({op.in_channels!r}, {op.out_channels!r}, {op.kernel!r}, {op.stride!r}{groups}{flags})",
                level + op.stride.bit_length() - 1)
    if isinstance(op, MaxPool):
        return f"MaxPoolSame({op.kernel!r}, {op.stride!r})", level + op.stride.bit_length() - 1
    if isinstance(op, Upsample):
        level -= op.factor.bit_length() - 1
        return f"UpsampleNearest({op.factor!r}, {level!r})", level
    raise BackendError(f"cannot emit op {type(op).__name__}")


def _chain(ops: tuple, level: int, resample: bool = False) -> str:
    parts = []
    for op in ops:
        text, level = _op(op, level, resample)
        parts.append(text)
    return f"OpChain({', '.join(parts)})"


def _unit(unit: Unit, drop: str) -> str:
    if unit.type == "bottleneck":
        return f"Bottleneck({unit.in_channels!r}, {unit.filters!r}, {unit.stride!r}, {unit.projection!r}, {drop})"
    if unit.type == "residual":
        return f"Residual({unit.in_channels!r}, {unit.filters!r}, {unit.stride!r}, {unit.projection!r}, {drop})"
    expand = unit.expand_channels if unit.expand else 0
    return (f"MBConv({unit.in_channels!r}, {unit.out_channels!r}, {unit.stride!r}, {expand!r}, "
            f"{unit.se_channels!r}, {unit.residual!r}, {drop})")


def _constructor(node: Node, levels: dict[str, int]) -> str:
    if node.kind in ("stem", "endpoint"):
        return _chain(node.ops, 0 if node.kind == "stem" else node.level)
    drop = f"rate * {node.drop_fraction!r}" if node.kind == "block" and node.drop_fraction else "0.0"
    pad = " " * 12
    inputs = "".join(f"\n{pad}    {_chain(e.ops, levels[e.source], resample=True)}," for e in node.inputs)
    units = "".join(f"\n{pad}    {_unit(u, drop)}," for u in node.units)
    return (f"Block(\n{pad}inputs=[{inputs}\n{pad}],\n{pad}units=[{units}\n{pad}],\n"
            f"{pad}weighted={node.fusion == 'weighted'},\n{pad}fusion_act={node.fusion_activation!r},\n        )")


def _init_source() -> str:
    """The backend's initialisers (Keras's fans and distributions), copied by source: an emitted model
    starts from the compiled model's distribution."""
    functions = (_ops._keras_fans, _ops.init_variance_scaling, _ops.init_glorot_uniform)
    sources = [f"_TRUNC_STD = {_ops._TRUNC_STD!r}"] + [inspect.getsource(f).rstrip() for f in functions]
    return "\n\n\n".join(sources)


def _comment(node: Node) -> str:
    size = f"{node.size[0]}x{node.size[1]}"
    kind = node.block_type or node.kind
    parents = ", ".join(f"{e.source} ({e.describe()})" for e in node.inputs)
    text = f"{node.kind} at level {node.level}, {node.channels} channels, {size} at the planned size; {kind}"
    return text + (f"; from {parents}" if parents else "")  # the template's doc filter makes it one line


def emit(plan: Plan, header: dict[str, str]) -> str:
    """One Python file defining ``nn.Module`` class for ``plan`` that needs only torch."""
    ArgumentError.expect(plan, Plan, "plan", "a Plan (specgraph.plan)")
    ArgumentError.expect(header, dict, "header", "the header fields (specgraph.backend_api.header(plan))")
    names = Namespace(reserved=_MODULE_NAMES)
    class_name = Namespace(reserved=_MODULE_NAMES).add(
        "".join(part.capitalize() for part in f"{plan.spec_name}_{plan.variant}".replace("-", "_").split("_")))
    names.add(class_name)
    levels = {n.name: n.level for n in plan.nodes}
    lines = []
    for node in plan.nodes:
        var = names.add(node.name)
        if node.kind == "stem":
            args = "images"
        elif node.kind == "endpoint":
            args = names[node.inputs[0].source]
        else:
            args = "[" + ", ".join(names[e.source] for e in node.inputs) + "]"
        lines.append(_Line(node.name, var, args, _constructor(node, levels), _comment(node)))
    loader = jinja2.PackageLoader("specgraph_torch", "templates")
    return render_template(loader, "model.py.j2", {
        "header": header, "class_name": class_name, "activation": plan.activation,
        **activation_sources(ACTIVATION_KERNELS, plan.activation),
        "init_source": _init_source(),
        "norm_momentum": plan.norm_momentum, "norm_epsilon": plan.norm_epsilon,
        "names": sorted((ident, name) for ident, name in names.origin.items() if ident != class_name),
        "nodes": lines, "outputs": [(level, names[name]) for level, name in plan.endpoints],
    })
