"""Standalone TensorFlow source for a plan: the backend's runtime module, copied by source, plus the wiring.

Plan values enter the code built here only through ``repr`` (``{x!r}``): a plan deserialised
without checks may hold a string where a number belongs, and it must stay a literal.

The emitted module's layers, weight-role naming (``kernel``, ``conv2/gamma``, ``se/reduce/bias``) and
``.npz`` loader are :mod:`specgraph_tensorflow._runtime`'s source, so it names weights as
:func:`specgraph_tensorflow.weights_dict` does and loads :func:`specgraph_tensorflow.export_npz`'s files;
the slot part (``sp3/in0/op1``) is data this emitter writes beside each layer's name. Units are written
from the plan's unit ops (``Unit.ops``) through the backend's own op table (``_units.unit_steps``).
"""

from __future__ import annotations

import ast
import functools
import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

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
from specgraph._codegen import ACTIVATION_FUNCTIONS, Namespace, activation_sources, render_template
from specgraph.backend_api import canonical_activation, fuse_slot, fusion_weight_shape, op_slot, unit_slot

from . import _runtime
from ._build import layer_names
from ._layers import ACTIVATION_KERNELS
from ._units import unit_steps

__all__ = ["emit"]

# Identifiers the template defines or uses itself (the runtime module's are added from its source);
# spec names must not shadow them.
_TEMPLATE_NAMES = {"annotations", "Any", "tf", "tf_keras", "ACTIVATION", "NORM_MOMENTUM", "NORM_EPSILON", "NORM",
                   "RESAMPLE_DEPTHWISE_INITIALIZER", "MODEL_NAME", "INPUT_CHANNELS", "SPEC_NAMES", "LAYER_NAMES",
                   "ACT", "activation_fn", "apply_ops", "build_model", "input_shape", "stochastic_depth_drop_rate",
                   "name", "rate", "image", "outputs", "x", "layer", "layers", "SLOTS", "WeightsError",
                   "weights_dict", "load_npz", "once", "built", "inputs", *ACTIVATION_FUNCTIONS}


@functools.cache
def _runtime_module() -> tuple[str, str, frozenset[str]]:
    """``_runtime``'s source split for the template: (its imports, the rest, every top-level name it binds).
    Its docstring, ``__future__`` import and ``__all__`` are left out (the template has its own)."""
    source = inspect.getsource(_runtime)
    lines = source.splitlines()
    tree = ast.parse(source)
    drop: set[int] = set()
    imports: list[str] = []
    names: set[str] = set()
    for k, node in enumerate(tree.body):
        span = set(range(node.lineno, node.end_lineno + 1))
        if isinstance(node, ast.Import | ast.ImportFrom):
            if not (isinstance(node, ast.ImportFrom) and node.module == "__future__"):
                imports.append(ast.get_source_segment(source, node))
                names.update((alias.asname or alias.name).split(".")[0] for alias in node.names)
            drop |= span
        elif k == 0 and isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant):
            drop |= span  # the docstring
        elif isinstance(node, ast.Assign) and [getattr(t, "id", None) for t in node.targets] == ["__all__"]:
            drop |= span
        else:
            for sub in ast.walk(node) if not isinstance(node, ast.FunctionDef | ast.ClassDef) else [node]:
                if isinstance(sub, ast.FunctionDef | ast.ClassDef):
                    names.add(sub.name)
                elif isinstance(sub, ast.Name) and isinstance(sub.ctx, ast.Store):
                    names.add(sub.id)
    body = "\n".join(line for n, line in enumerate(lines, 1) if n not in drop).strip()
    while "\n\n\n\n" in body:
        body = body.replace("\n\n\n\n", "\n\n\n")
    return "\n".join(imports), body, frozenset(names)


@dataclass(frozen=True)
class _Line:
    """One node of the straight-line build: a comment, then its statements."""

    comment: str
    statements: tuple[str, ...]


def _conv(op: Conv, name: str, resample: bool = False) -> str:
    if op.groups != 1 and not op.depthwise:
        raise BackendError(f"{name}: grouped conv with groups={op.groups} is not supported")
    flags = ("" if not op.depthwise else ", depthwise=True") + ("" if op.norm else ", norm=False") \
        + (", activation=ACT" if op.activation else "") + (", bias=True" if op.bias else "")
    if op.depthwise and resample:
        flags += ", kernel_initializer=RESAMPLE_DEPTHWISE_INITIALIZER"
    return f"ConvNormAct({op.out_channels!r}, {op.kernel!r}, {op.stride!r}{flags}, name={name!r}, **NORM)"


def _squeeze_excite(op: SqueezeExcite, name: str) -> str:
    # Activation names become the backend's function names (``canonical_activation`` refuses any other).
    inner, gate = (f"act_{canonical_activation(a)}" for a in (op.inner, op.gate))
    return f"SqueezeExcite({op.se_channels!r}, {op.channels!r}, inner={inner}, gate={gate}, name={name!r})"


# A unit's weighted op kind -> the source of its layer, as ``_units.LAYERS`` builds it.
_LAYERS: dict[type, Callable[[Any, str], str]] = {Conv: _conv, SqueezeExcite: _squeeze_excite}


def _weighted(op: Op) -> bool:
    """Whether the backend's builder keeps a slot for the op (it holds weights)."""
    return isinstance(op, Conv | SeparableConv | Norm)


def _op(op: Op, name: str, level: int, resample: bool) -> str:
    if isinstance(op, Conv):
        return _conv(op, name, resample)
    if isinstance(op, SeparableConv):
        flags = ("" if op.norm else ", norm=False") + (", activation=ACT" if op.activation else "") + (
            ", bias=True" if op.bias else "")
        return (f"ConvNormAct({op.out_channels!r}, {op.kernel!r}, {op.stride!r}, separable=True{flags}, "
                f"name={name!r}, **NORM)")
    if isinstance(op, Norm):
        return f"NormAct(name={name!r}, **NORM)"
    if isinstance(op, Activation):
        act = f"act_{canonical_activation(op.function)}" if op.function else "ACT"
        return f"NormAct(norm=False, activation={act}, name={name!r})"
    if isinstance(op, MaxPool):
        return f"tf_keras.layers.MaxPool2D({op.kernel!r}, {op.stride!r}, padding=\"same\", name={name!r})"
    if isinstance(op, Upsample):
        return f"Upsample({op.factor!r}, {level!r}, {op.mode!r}, name={name!r})"
    raise BackendError(f"{name}: cannot emit op {type(op).__name__}")


def _once(layer: str, shared: bool) -> str:
    """A layer of a node whose weights are shared: made by its first caller, found by name by the others."""
    return f"once(built, {layer})" if shared else layer


def _ops(x: str, ops: tuple, prefix: str, level: int, resample: bool, indent: int, slot: tuple[str, int | None],
         slots: dict[str, str], levels: bool = False, shared: bool = False) -> str:
    """``apply_ops(x, image, op0, op1, ...)``: the ops run in order, as the backend's builder calls them.
    Each weighted op's slot (``op_slot(*slot, ...)``: node, input edge) -> its layer name goes into ``slots``.
    ``levels``: ``level`` is where the ops start, each op at the level it reaches (an op block's ops); else every
    op is at ``level`` (a chain's upsample crops to its target)."""
    if not ops:
        return x
    layers = []
    for k, op in enumerate(ops):
        if levels:
            level += op.level_step
        layers.append(_once(_op(op, f"{prefix}_op{k}", level, resample), shared))
    node, edge = slot
    slots.update({op_slot(node, k, edge): f"{prefix}_op{k}" for k, op in enumerate(ops) if _weighted(op)})
    if len(layers) == 1:
        return f"apply_ops({x}, image, {layers[0]})"
    pad = " " * (indent + 4)
    return f"apply_ops(\n{pad}{x}, image,\n" + "".join(f"{pad}{layer},\n" for layer in layers) + " " * indent + ")"


def _unit(unit: Unit, drop: str, name: str) -> str:
    """``BlockUnit([(role, path, layer or join), ...], ...)`` from the unit's ops, one a line."""
    steps = unit_steps(unit, lambda op, role: _LAYERS[type(op)](op, role))
    items = "".join(f"        ({role!r}, {path!r}, {step if path != 'join' else repr(step)}),\n"
                    for role, path, step in steps)
    return f"BlockUnit([\n{items}    ], activation=ACT{drop}, name={name!r})"


def _activations(plan: Plan) -> dict[str, str]:
    """The template's activation values: the backend's functions for the plan's activation, the
    squeeze-excitation's gate and every unit's squeeze-excitation activations, by source."""
    values = activation_sources(ACTIVATION_KERNELS, plan.activation)
    have = {values["activation_function"], "act_hard_sigmoid"}
    names = [name for node in plan.nodes for unit in node.units for step in unit.ops
             if isinstance(step.op, SqueezeExcite) for name in (step.op.inner, step.op.gate)]
    names += [op.function for node in plan.nodes for op in node.ops if isinstance(op, Activation) and op.function]
    for name in names:
        kind = canonical_activation(name)
        if f"act_{kind}" not in have:
            have.add(f"act_{kind}")
            source = inspect.getsource(ACTIVATION_KERNELS[kind]).rstrip()
            values["activation_source"] += "\n\n\n" + source
    return values


def _edges(node: Node, var: dict[str, str], prefix: str, slots: dict[str, str], shared: bool, reference: int) -> str:
    pad = " " * 8
    edges = [_ops(var[e.source], e.ops, f"{prefix}_in{j}", e.target_level - reference, True, 8, (node.name, j), slots,
                  shared=shared) for j, e in enumerate(node.inputs)]
    parts = "".join(f"\n{pad}{edge}," for edge in edges)
    return f"[{parts}\n    ]"


def _comment(node: Node) -> str:
    size = f"{node.size[0]}x{node.size[1]}"
    kind = node.block_type or node.kind
    parents = ", ".join(f"{e.source} ({e.describe()})" for e in node.inputs)
    text = f"{node.name}: {node.kind} at level {node.level}, {node.channels} channels, {size} at the planned size; "
    return text + kind + (f"; from {parents}" if parents else "")  # the template's doc filter makes it one line


def emit(plan: Plan, header: dict[str, str]) -> str:
    """One Python file defining ``build_model()`` for ``plan`` that needs only tensorflow and tf_keras."""
    ArgumentError.expect(plan, Plan, "plan", "a Plan (specgraph.plan)")
    ArgumentError.expect(header, dict, "header", "the header fields (specgraph.backend_api.header(plan))")
    runtime_imports, runtime_source, runtime_names = _runtime_module()
    names = Namespace(reserved=_TEMPLATE_NAMES | runtime_names)
    prefixes = layer_names(plan)
    var = {node.name: names.add(node.name) for node in plan.nodes}
    lines = []
    slots: dict[str, str] = {}  # structural slot -> Keras layer name, in the backend's slot order
    owners = {node.shares for node in plan.nodes if node.shares}
    # Upsampling crops to ceil(image / 2**level) of a reference tensor: the image, or a decoder's finest input
    # (levels counted from its own), as the backend's builder does.
    inputs = sorted(((level, var[name]) for level, name in plan.inputs), key=lambda item: int(item[0]))
    reference = int(inputs[0][0]) if inputs else 0
    for node in plan.nodes:
        if node.kind == "input":  # a decoder's feature map: a Keras input, no layers
            continue
        # A node that shares weights names its layers as its owner's (so `once` finds them) and has no slots.
        prefix, v = prefixes[node.shares or node.name], var[node.name]
        shared = node.name in owners or node.shares is not None
        node_slots = slots if node.shares is None else {}
        if node.kind == "stem":
            x = _ops("image", node.ops, prefix, node.level - reference, False, 4, (node.name, None), node_slots)
        elif node.kind == "stem_block":
            x = var[node.inputs[0].source]
        elif node.kind == "block":
            act = "ACT" if node.fusion_activation else "None"
            shape = fusion_weight_shape(node.fusion, len(node.inputs), node.fused_channels)
            fuse = _once(f"Fuse({(node.fusion or 'sum')!r}, {len(node.inputs)}, {act}, {shape!r}, "
                         f"name={prefix + '_fuse'!r})", shared)
            x = f"{fuse}({_edges(node, var, prefix, node_slots, shared, reference)})"
            if shape is not None:  # only a fusion with weights has a slot (as in the backend)
                node_slots[fuse_slot(node.name)] = f"{prefix}_fuse"
            if node.ops:  # an op block's ops run on the fused inputs
                x = _ops(x, node.ops, prefix, node.fused_level - reference, False, 4, (node.name, None), node_slots,
                         levels=True, shared=shared)
        elif node.kind == "endpoint":
            x = _ops(var[node.inputs[0].source], node.ops, prefix, node.level - reference, False, 4, (node.name, None),
                     node_slots)
        else:
            raise BackendError(f"node {node.name}: unknown kind {node.kind!r}")
        drop = f", drop_rate=rate * {node.drop_fraction!r}" if node.drop_fraction else ""
        statements = []
        for k, unit in enumerate(node.units):
            if k or node.kind != "stem_block":  # a stem block's first unit takes its parent directly
                statements.append(f"{v} = {x}")
                x = v
            x = f"{_once(_unit(unit, drop, f'{prefix}_unit{k}'), shared)}({x})"
            node_slots[unit_slot(node.name, k)] = f"{prefix}_unit{k}"
        statements.append(f"{v} = {x}")
        lines.append(_Line(_comment(node), tuple(statements)))
    loader = jinja2.PackageLoader("specgraph_tensorflow", "templates")
    return render_template(loader, "model.py.j2", {
        "header": header, "activation": plan.activation, "norm_momentum": plan.norm_momentum,
        **_activations(plan), "runtime_imports": runtime_imports, "runtime_source": runtime_source,
        "norm_epsilon": plan.norm_epsilon, "input_channels": plan.input_channels,
        "model_name": f"{plan.spec_name}_{plan.variant}".replace(".", "_"),
        "names": sorted(names.origin.items()),
        "layer_names": [(node.name, prefixes[node.name]) for node in plan.nodes],
        "nodes": lines, "outputs": [(level, var[name]) for level, name in plan.endpoints],
        "slots": list(slots.items()), "shares_weights": bool(owners),
        "inputs": [(level, v, plan.node(name).channels) for (level, v), (_, name) in
                   zip(inputs, sorted(plan.inputs, key=lambda item: int(item[0])), strict=True)],
    })
