"""Standalone TensorFlow source for a plan: the template mirrors this backend's layers and layer names.

Plan values enter the code built here only through ``repr`` (``{x!r}``): a plan deserialised
without checks may hold a string where a number belongs, and it must stay a literal.

The emitted module names weights as :func:`specgraph_tensorflow.weights_dict` does (its ``load_npz``
reads :func:`specgraph_tensorflow.export_npz`'s files). The role part of a name (``kernel``,
``conv2/gamma``, ``se/reduce/bias``) is this backend's own code, copied in from its source
(:data:`_INLINED`), not a second hand-written rule; the slot part (``sp3/in0/op1``) is data this
emitter writes beside each layer's name.
"""

from __future__ import annotations

import inspect
import textwrap
from dataclasses import dataclass

import jinja2

from specgraph import ArgumentError, BackendError, Conv, MaxPool, Node, Plan, Unit, Upsample
from specgraph._codegen import ACTIVATION_FUNCTIONS, Namespace, activation_sources, render_template
from specgraph.backend_api import fuse_slot, op_slot, unit_slot

from ._build import layer_names
from ._layers import ACTIVATION_KERNELS, ConvNorm
from ._units import BlockUnit, SqueezeExcite
from .weights import _layer_variables

__all__ = ["emit"]

# Identifiers the generated module defines or uses itself; spec names must not shadow them.
_MODULE_NAMES = {"annotations", "Any", "tf", "tf_keras", "ACTIVATION", "NORM_MOMENTUM", "NORM_EPSILON",
                 "KERNEL_INITIALIZER", "RESAMPLE_DEPTHWISE_INITIALIZER", "MODEL_NAME",
                 "INPUT_CHANNELS", "SPEC_NAMES", "LAYER_NAMES", "ACTIVATIONS", "no_autograph", "hard_sigmoid",
                 "hard_swish", "activation_fn", "dim", "ConvNorm", "Upsample", "Fuse", "StochasticDepth",
                 "SqueezeExcite", "BlockUnit", "apply_ops", "build_model", "input_shape",
                 "stochastic_depth_drop_rate", "name", "rate", "image", "outputs", "x", "layer", "layers",
                 "in_xla_compilation", "same_pads", "depthwise_by_shifts", "GraphOrParentsInXlaContext", "ast",
                 "os", "sys", "zipfile", "SLOTS", "NPY_DTYPES", "WeightsError", "weights_dict", "parse_npy", "read_npz",
                 "load_npz", "_layer_variables", *ACTIVATION_FUNCTIONS}

# The backend's weight-role naming, as it runs, copied into the emitted module: template name ->
# (the function or method, the indent it takes there). The emitted layers have the attributes these
# read (conv, norm, reduce, expand, parts, shortcut, fusion_weights) because they mirror the backend's.
_INLINED = {
    "layer_variables": (_layer_variables, 0),
    "conv_norm_named_variables": (ConvNorm.named_variables, 4),
    "squeeze_excite_named_variables": (SqueezeExcite.named_variables, 4),
    "block_unit_named_layers": (BlockUnit.named_layers, 4),
}


def _source(function: object, indent: int) -> str:
    return textwrap.indent(textwrap.dedent(inspect.getsource(function)), " " * indent).rstrip()


@dataclass(frozen=True)
class _Line:
    """One node of the straight-line build: a comment, then its statements."""

    comment: str
    statements: tuple[str, ...]


def _op(op: Conv | MaxPool | Upsample, name: str, level: int, resample: bool) -> str:
    if isinstance(op, Conv):
        if op.groups != 1 and not op.depthwise:
            raise BackendError(f"{name}: grouped conv with groups={op.groups} is not supported")
        flags = ("" if not op.depthwise else ", depthwise=True") + ("" if op.norm else ", norm=False") \
            + ("" if op.activation else ", activation=False") + (", bias=True" if op.bias else "")
        if op.depthwise and resample:
            flags += ", depthwise_initializer=RESAMPLE_DEPTHWISE_INITIALIZER"
        return f"ConvNorm({op.out_channels!r}, {op.kernel!r}, {op.stride!r}{flags}, name={name!r})"
    if isinstance(op, MaxPool):
        return f"tf_keras.layers.MaxPool2D({op.kernel!r}, {op.stride!r}, padding=\"same\", name={name!r})"
    if isinstance(op, Upsample):
        if op.mode != "nearest":
            raise BackendError(f"{name}: upsample mode {op.mode!r} is not supported")
        return f"Upsample({op.factor!r}, {level!r}, name={name!r})"
    raise BackendError(f"{name}: cannot emit op {type(op).__name__}")


def _ops(x: str, ops: tuple, prefix: str, level: int, resample: bool, indent: int, slot: tuple[str, int | None],
         slots: dict[str, str]) -> str:
    """``apply_ops(x, image, op0, op1, ...)``: the ops run in order, as the backend's builder calls them.
    Each conv's slot (``op_slot(*slot, ...)``: node, input edge) -> its layer name goes into ``slots``."""
    if not ops:
        return x
    layers = [_op(op, f"{prefix}_op{k}", level, resample) for k, op in enumerate(ops)]
    node, edge = slot
    slots.update({op_slot(node, k, edge): f"{prefix}_op{k}" for k, op in enumerate(ops) if isinstance(op, Conv)})
    if len(layers) == 1:
        return f"apply_ops({x}, image, {layers[0]})"
    pad = " " * (indent + 4)
    return f"apply_ops(\n{pad}{x}, image,\n" + "".join(f"{pad}{layer},\n" for layer in layers) + " " * indent + ")"


def _unit(unit: Unit, drop: str, name: str) -> str:
    args = f"{unit.type!r}, {unit.out_channels!r}, {unit.stride!r}"
    if unit.type in ("bottleneck", "residual"):
        args += f", filters={unit.filters!r}" + (", projection=True" if unit.projection else "")
    elif unit.type == "mbconv":
        width = unit.expand_channels if unit.expand else unit.in_channels
        args += f", width={width!r}" + (", expand=True" if unit.expand else "")
        args += (f", se_channels={unit.se_channels!r}" if unit.se_channels > 0 else "")
        args += ("" if unit.residual else ", residual=False")
    else:
        raise BackendError(f"{name}: unknown unit type {unit.type!r}")
    return f"BlockUnit({args}{drop}, name={name!r})"


def _edges(node: Node, var: dict[str, str], prefix: str, slots: dict[str, str]) -> str:
    pad = " " * 8
    edges = [_ops(var[e.source], e.ops, f"{prefix}_in{j}", e.target_level, True, 8, (node.name, j), slots)
             for j, e in enumerate(node.inputs)]
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
    names = Namespace(reserved=_MODULE_NAMES)
    prefixes = layer_names(plan)
    var = {node.name: names.add(node.name) for node in plan.nodes}
    lines = []
    slots: dict[str, str] = {}  # structural slot -> Keras layer name, in the backend's slot order
    for node in plan.nodes:
        prefix, v = prefixes[node.name], var[node.name]
        if node.kind == "stem":
            x = _ops("image", node.ops, prefix, node.level, False, 4, (node.name, None), slots)
        elif node.kind == "stem_block":
            x = var[node.inputs[0].source]
        elif node.kind == "block":
            act = "ACTIVATION" if node.fusion_activation else "None"
            x = (f"Fuse({(node.fusion or 'sum')!r}, {len(node.inputs)}, {act}, name={prefix + '_fuse'!r})"
                 f"({_edges(node, var, prefix, slots)})")
            if node.fusion == "weighted":  # only a weighted fusion has weights (the backend's slots too)
                slots[fuse_slot(node.name)] = f"{prefix}_fuse"
        elif node.kind == "endpoint":
            x = _ops(var[node.inputs[0].source], node.ops, prefix, node.level, False, 4, (node.name, None), slots)
        else:
            raise BackendError(f"node {node.name}: unknown kind {node.kind!r}")
        drop = f", drop_rate=rate * {node.drop_fraction!r}" if node.drop_fraction else ""
        statements = []
        for k, unit in enumerate(node.units):
            if k or node.kind != "stem_block":  # a stem block's first unit takes its parent directly
                statements.append(f"{v} = {x}")
                x = v
            x = f"{_unit(unit, drop, f'{prefix}_unit{k}')}({x})"
            slots[unit_slot(node.name, k)] = f"{prefix}_unit{k}"
        statements.append(f"{v} = {x}")
        lines.append(_Line(_comment(node), tuple(statements)))
    loader = jinja2.PackageLoader("specgraph_tensorflow", "templates")
    return render_template(loader, "model.py.j2", {
        "header": header, "activation": plan.activation, "norm_momentum": plan.norm_momentum,
        **activation_sources(ACTIVATION_KERNELS, plan.activation),
        "norm_epsilon": plan.norm_epsilon, "input_channels": plan.input_channels,
        "model_name": f"{plan.spec_name}_{plan.variant}".replace(".", "_"),
        "names": sorted(names.origin.items()),
        "layer_names": [(node.name, prefixes[node.name]) for node in plan.nodes],
        "nodes": lines, "outputs": [(level, var[name]) for level, name in plan.endpoints],
        "slots": list(slots.items()),
        "inlined": {key: _source(function, indent) for key, (function, indent) in _INLINED.items()},
    })
