"""Standalone PyTorch source for a plan: the backend's own layers (``_layers``, copied by source)
and the plan's wiring, written out by the template.

Plan values enter the code built here only through ``repr`` (``{x!r}``): a plan deserialised
without checks may hold a string where a number belongs, and it must stay a literal.
"""

from __future__ import annotations

import ast
import inspect
import re
from dataclasses import dataclass

import jinja2

from specgraph import (
    Activation,
    ArgumentError,
    BackendError,
    Conv,
    MaxPool,
    Node,
    Norm,
    Op,
    Plan,
    SeparableConv,
    SqueezeExcite,
    Unit,
    Upsample,
)
from specgraph._codegen import ACTIVATION_FUNCTIONS, Namespace, kernel_sources, render_template
from specgraph.backend_api import canonical_activation, fusion_weight_shape

from . import _layers
from ._blocks import unit_op_values
from ._ops import ACTIVATION_KERNELS

__all__ = ["emit"]


def _layers_source() -> str:
    """``_layers`` as it runs in the backend, less its docstring, imports and ``__all__`` (the template
    has the imports it needs; the typing names are only in annotations, which are never evaluated)."""
    source = inspect.getsource(_layers)
    lines = source.splitlines()
    drop: set[int] = set()
    for i, stmt in enumerate(ast.parse(source).body):
        docstring = i == 0 and isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Constant)
        imports = isinstance(stmt, ast.Import | ast.ImportFrom)
        type_checking = isinstance(stmt, ast.If) and ast.unparse(stmt.test) == "TYPE_CHECKING"
        exports = isinstance(stmt, ast.Assign) and [ast.unparse(t) for t in stmt.targets] == ["__all__"]
        if docstring or imports or type_checking or exports:
            drop.update(range(stmt.lineno - 1, stmt.end_lineno))
    kept = "\n".join(line for i, line in enumerate(lines) if i not in drop)
    return re.sub(r"\n{3,}", "\n\n\n", kept).strip()


def _defined_names(source: str) -> set[str]:
    """The module-level names ``source`` defines."""
    names: set[str] = set()
    for stmt in ast.parse(source).body:
        if isinstance(stmt, ast.FunctionDef | ast.ClassDef):
            names.add(stmt.name)
        elif isinstance(stmt, ast.Assign | ast.AnnAssign):
            targets = stmt.targets if isinstance(stmt, ast.Assign) else [stmt.target]
            names.update(n.id for t in targets for n in ast.walk(t) if isinstance(n, ast.Name))
    return names


_LAYERS_SOURCE = _layers_source()
# Identifiers the generated module defines itself (the template's, the layers', the activations') and
# the locals of its network class; spec names must not shadow them.
_MODULE_NAMES = {"math", "torch", "F", "nn", "ACTIVATION", "ACTIVATIONS", "SPEC_NAMES", "NORM_MOMENTUM",
                 "NORM_EPSILON", "activation", "make_norm", "make_act", "images", "hw", "nodes", "self", "rate",
                 *_defined_names(_LAYERS_SOURCE), *ACTIVATION_FUNCTIONS}


@dataclass(frozen=True)
class _Line:
    key: str
    var: str
    args: str
    constructor: str
    comment: str


def _flags(op: Conv | SeparableConv) -> str:
    return (f", norm=make_norm({op.out_channels!r})" if op.norm else "") + (
        ", act=make_act()" if op.activation else "") + (", bias=True" if op.bias else "")


def _op(op: Op, level: int, resample: bool) -> tuple[str, int]:
    if isinstance(op, Conv):
        groups = f", groups={op.groups!r}" if op.groups != 1 else ""
        flags = _flags(op)
        if resample and op.depthwise:  # as the backend's resampling chains (Model Garden's Mobile resamplers)
            flags += ", glorot=True"
        return (f"ConvNormAct({op.in_channels!r}, {op.out_channels!r}, {op.kernel!r}, {op.stride!r}{groups}{flags})",
                level + op.level_step)
    if isinstance(op, SeparableConv):
        return (f"SeparableConvNormAct({op.in_channels!r}, {op.out_channels!r}, {op.kernel!r}, {op.stride!r}"
                f"{_flags(op)})", level + op.level_step)
    if isinstance(op, Norm):
        return f"make_norm({op.channels!r})", level
    if isinstance(op, Activation):
        return (f"_Fn({op.function!r}, ACTIVATIONS[{op.function!r}])" if op.function else "make_act()"), level
    if isinstance(op, MaxPool):
        return f"MaxPoolSame({op.kernel!r}, {op.stride!r})", level + op.level_step
    if isinstance(op, Upsample):
        level += op.level_step
        kind = "UpsampleBilinear" if op.mode == "bilinear" else "UpsampleNearest"
        return f"{kind}({op.factor!r}, {level!r})", level
    raise BackendError(f"cannot emit op {type(op).__name__}")


def _ops(ops: tuple, level: int, resample: bool = False) -> str:
    parts = []
    for op in ops:
        text, level = _op(op, level, resample)
        parts.append(text)
    return f"[{', '.join(parts)}]"


def _chain(ops: tuple, level: int, resample: bool = False) -> str:
    return f"OpChain({_ops(ops, level, resample)})"


def _unit(unit: Unit, drop: str, pad: str) -> str:
    """A ``BlockUnit`` built from the plan's unit ops, one literal tuple each."""
    ops = "".join(f"\n{pad}    {values!r}," for values in unit_op_values(unit))
    return f"BlockUnit([{ops}\n{pad}], make_norm, make_act, ACTIVATIONS, {drop})"


def _constructor(node: Node, levels: dict[str, int]) -> str:
    if node.kind in ("stem", "endpoint"):
        return _chain(node.ops, 0 if node.kind == "stem" else node.level)
    drop = f"rate * {node.drop_fraction!r}" if node.kind == "block" and node.drop_fraction else "0.0"
    pad = " " * 12
    inputs = "".join(f"\n{pad}    {_chain(e.ops, levels[e.source], resample=True)}," for e in node.inputs)
    units = "".join(f"\n{pad}    {_unit(u, drop, pad + '    ')}," for u in node.units)
    fusion_act = "make_act()" if node.fusion_activation else "None"
    ops = _ops(node.ops, node.fused_level) if node.kind == "block" and node.ops else "[]"
    shape = fusion_weight_shape(node.fusion, len(node.inputs), node.fused_channels)
    return (f"BlockNode(\n{pad}[{inputs}\n{pad}],\n{pad}[{units}\n{pad}],\n"
            f"{pad}{node.fusion!r},\n{pad}{fusion_act},\n{pad}{ops},\n{pad}{shape!r},\n        )")


def _activations(plan: Plan) -> dict[str, str]:
    """Every activation name the plan uses (its own, its squeeze-excitations') -> the function's name."""
    names = [plan.activation] + [name for node in plan.nodes for unit in node.units for step in unit.ops
                                 if isinstance(step.op, SqueezeExcite) for name in (step.op.inner, step.op.gate)]
    names += [op.function for node in plan.nodes for op in node.ops if isinstance(op, Activation) and op.function]
    return {name: f"act_{canonical_activation(name)}" for name in dict.fromkeys(names)}


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
        if node.kind == "input":  # a decoder's feature map: forward() takes it by level, no module
            continue
        if node.kind == "stem":
            args = "images"
        elif node.kind == "endpoint":
            args = names[node.inputs[0].source]
        else:
            args = "[" + ", ".join(names[e.source] for e in node.inputs) + "]"
        # A node that shares weights is its owner's module (repr: a string literal, whatever the name holds).
        constructor = f"self.nodes[{node.shares!r}]" if node.shares else _constructor(node, levels)
        lines.append(_Line(node.name, var, args, constructor, _comment(node)))
    activations = _activations(plan)
    sources = kernel_sources(ACTIVATION_KERNELS, [f.removeprefix("act_") for f in activations.values()])
    loader = jinja2.PackageLoader("specgraph_torch", "templates")
    return render_template(loader, "model.py.j2", {
        "header": header, "class_name": class_name, "activation": plan.activation,
        "layers_source": _LAYERS_SOURCE, "activation_source": sources,
        "activations": list(activations.items()), "activation_function": activations[plan.activation],
        "norm_momentum": plan.norm_momentum, "norm_epsilon": plan.norm_epsilon,
        "names": sorted((ident, name) for ident, name in names.origin.items() if ident != class_name),
        "nodes": lines, "outputs": [(level, names[name]) for level, name in plan.endpoints],
        # a decoder's inputs (level, variable), finest first: the finest one's size stands for the image's
        "inputs": sorted(((level, names[name]) for level, name in plan.inputs), key=lambda item: int(item[0])),
    })
