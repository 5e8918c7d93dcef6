"""Model Garden's backbones for the built-in specs, and its names for the inside of each block
type: its Keras class, the auto-generated layer name, and which of its attributes hold each unit
op's weights, in creation order.

Written here once; both backends' Model Garden weight mappings read it (the torch one by
checkpoint names, the Keras one by attributes of a live Model Garden model).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from ._errors import PlanError, Problem, WeightsError
from ._plan import Conv, Node, Norm, Op, Plan, SeparableConv
from ._slots import op_slot

__all__ = ["MODELGARDEN_BACKBONES", "MODELGARDEN_BLOCKS", "MODELGARDEN_DECODERS", "DecoderVariable",
           "ModelGardenBackbone", "ModelGardenBlock", "is_op_block", "modelgarden_backbone",
           "modelgarden_decoder_variables", "modelgarden_parts", "modelgarden_plan"]


@dataclass(frozen=True)
class ModelGardenBlock:
    keras_class: str  # ``official.vision.modeling.layers.nn_blocks`` class
    layer_name: str  # Keras's name for the n-th one: ``layer_name`` then ``layer_name_n``
    # (unit op role, conv attribute, norm attribute), in the order Model Garden creates them
    convs: tuple[tuple[str, str, str], ...]
    # the squeeze-excitation: (unit op role, layer attribute, reduce conv attribute, expand conv attribute);
    # its convs are created after ``convs``, when the block is first called
    squeeze_excite: tuple[str, str, str, str] | None = None

    def conv_attributes(self, role: str) -> tuple[str, str] | None:
        """(conv, norm) attribute of the op ``role``; None when the block has no such conv."""
        return next(((conv, norm) for r, conv, norm in self.convs if r == role), None)


_SHORTCUT = ("shortcut", "_shortcut", "_norm0")

# Unit type (``specgraph.Unit.type``) -> Model Garden's block.
MODELGARDEN_BLOCKS: dict[str, ModelGardenBlock] = {
    "bottleneck": ModelGardenBlock("BottleneckBlock", "bottleneck_block", (
        _SHORTCUT, ("conv1", "_conv1", "_norm1"), ("conv2", "_conv2", "_norm2"), ("conv3", "_conv3", "_norm3"))),
    "residual": ModelGardenBlock("ResidualBlock", "residual_block", (
        _SHORTCUT, ("conv1", "_conv1", "_norm1"), ("conv2", "_conv2", "_norm2"))),
    "mbconv": ModelGardenBlock("InvertedBottleneckBlock", "inverted_bottleneck_block", (
        ("expand", "_conv0", "_norm0"), ("depthwise", "_conv1", "_norm1"), ("project", "_conv2", "_norm2")),
        squeeze_excite=("se", "_squeeze_excitation", "_se_reduce", "_se_expand")),
}


@dataclass(frozen=True)
class ModelGardenBackbone:
    """How Model Garden builds a built-in spec's network: ``module.class_name(**arguments)``."""

    module: str  # imported by a backend (it needs TensorFlow)
    class_name: str
    table: str  # the module's variant table, keyed by variant: SCALING_MAP, RESNET_SPECS
    row_arguments: tuple[str, ...] = ()  # constructor arguments read from the variant's row of ``table``
    variant_argument: str | None = None  # the constructor argument that is the variant itself (ResNet's model_id)
    takes_levels: bool = True  # min_level / max_level (ResNet has none: its endpoints are levels 2..5)


# Built-in spec name -> Model Garden's backbone. The variant tables themselves stay Model Garden's.
MODELGARDEN_BACKBONES: dict[str, ModelGardenBackbone] = {
    "spinenet": ModelGardenBackbone(
        "official.vision.modeling.backbones.spinenet", "SpineNet", "SCALING_MAP",
        ("endpoints_num_filters", "resample_alpha", "block_repeats", "filter_size_scale")),
    "spinenet_mobile": ModelGardenBackbone(
        "official.vision.modeling.backbones.spinenet_mobile", "SpineNetMobile", "SCALING_MAP",
        ("endpoints_num_filters", "block_repeats", "filter_size_scale")),
    "resnet": ModelGardenBackbone(
        "official.vision.modeling.backbones.resnet", "ResNet", "RESNET_SPECS", variant_argument="model_id",
        takes_levels=False),
}


def modelgarden_backbone(plan: Plan, tables: Callable[[str, str], Mapping[Any, Any]]
                         ) -> tuple[str, str, dict[str, Any]]:
    """Model Garden's module, class name and constructor arguments for ``plan``'s network.

    ``tables(module, table)`` returns that Model Garden module's variant table (the backend imports it).
    A :class:`WeightsError` when Model Garden has no such spec or variant.
    """
    entry = MODELGARDEN_BACKBONES.get(plan.spec_name)
    key: Any = plan.variant
    if entry is not None and entry.variant_argument is not None:
        key = int(plan.variant) if plan.variant.isdigit() else None
    row = tables(entry.module, entry.table).get(key) if entry is not None else None
    if entry is None or row is None:
        raise WeightsError(Problem("no Model Garden model has this spec and variant",
                                   f"{plan.spec_name} {plan.variant}"))
    arguments: dict[str, Any] = {"activation": plan.activation, "norm_momentum": plan.norm_momentum,
                                 "norm_epsilon": plan.norm_epsilon}
    if entry.takes_levels:
        arguments.update(min_level=plan.min_level, max_level=plan.max_level)
    if entry.variant_argument is not None:
        arguments[entry.variant_argument] = key
    arguments.update({name: row[name] for name in entry.row_arguments})
    return entry.module, entry.class_name, arguments


def modelgarden_plan(plan: Plan) -> Plan:
    """What Model Garden builds for ``plan``: endpoints at every level of ``min_level..max_level``.

    A level selection (``levels=[3, 5]``) is the same network less some endpoints and the blocks
    only they need; Model Garden has no such option, so its layers (and name counters) are those
    of the contiguous plan, which the plan rebuilds from its own pruned nodes (``Plan.contiguous``),
    so a spec read from a file works too. A :class:`WeightsError` when it cannot.
    """
    try:
        return plan.contiguous()
    except PlanError as exc:
        levels = [int(level) for level, _ in plan.endpoints]
        raise WeightsError(Problem(f"Model Garden weights for levels {levels} need the network of levels "
                                   f"{plan.min_level}..{plan.max_level}: {exc.problems[0].message}",
                                   f"{plan.spec_name} {plan.variant}")) from None


# How each built-in decoder spec's Model Garden decoder names its layers: ``named`` (FPN: after the spec's op
# blocks, ``lateral_3``, ``post_hoc_3``, ``coarser_6``, ``norm_3``) or ``created`` (NAS-FPN: Keras's per-class
# names, ``conv2d_7``, ``batch_normalization_12``, ``separable_conv2d_3``, in the order it creates them, which is
# the plan's order of op blocks, each one's input projections, then its ops). Keyed by the decoder's spec name: the
# part its op blocks are in, in any composition (a flat spec: its own name). Other specs: ``named``.
MODELGARDEN_DECODERS: dict[str, str] = {"fpn": "named", "nasfpn": "created"}

# Keras's variables (our weight roles too) of each weighted decoder layer kind, in Keras's order.
_NORM_VARIABLES = ("gamma", "beta", "moving_mean", "moving_variance")


@dataclass(frozen=True)
class DecoderVariable:
    """One Model Garden decoder variable and where it goes in a specgraph model."""

    node: str
    edge: int | None  # the op is on the node's edge-th input (a projection), or (None) one of its own ops
    op_index: int  # its place in those ops
    op: Op
    role: str  # our weight role and Keras's variable name: kernel, bias, depthwise_kernel, gamma, ...
    layer: str  # the Keras layer's name (``index`` None), or its class's name prefix (``conv2d``)
    index: int | None = None  # the layer's creation position among the decoder's layers of its class

    @property
    def slot(self) -> str:
        """The op's weight slot (``op_slot``): ``lateral_3/op0``, ``nasfpn_2/b5/op1``, ``p3/in0/op0``."""
        return op_slot(self.node, self.op_index, self.edge)


def _layers_of(op: Op) -> list[tuple[str, tuple[str, ...]]]:
    """The Keras layers a weighted decoder op is (class name prefix, its variables), in creation order."""
    layers: list[tuple[str, tuple[str, ...]]] = []
    if isinstance(op, SeparableConv):
        layers.append(("separable_conv2d", ("depthwise_kernel", "pointwise_kernel", *(("bias",) if op.bias else ()))))
    elif isinstance(op, Conv):
        layers.append(("depthwise_conv2d" if op.depthwise else "conv2d",
                       ("depthwise_kernel" if op.depthwise else "kernel", *(("bias",) if op.bias else ()))))
    if isinstance(op, Norm) or (isinstance(op, Conv | SeparableConv) and op.norm):
        layers.append(("batch_normalization", _NORM_VARIABLES))
    return layers


def is_op_block(node: Node) -> bool:
    """A block given as single ops (a decoder's node), not as a block group."""
    return node.kind == "block" and not node.units


def modelgarden_decoder_variables(plan: Plan) -> list[DecoderVariable]:
    """Every Model Garden decoder variable of the plan's op blocks, in creation order (see ``MODELGARDEN_DECODERS``).

    A :class:`WeightsError` for op blocks a named decoder has no layer for (a block with two weighted layers)."""
    part = next((node.part for node in plan.nodes if is_op_block(node)), None)
    naming = MODELGARDEN_DECODERS.get(part or plan.spec_name, "named")
    out: list[DecoderVariable] = []
    counts: dict[str, int] = {}
    problems = []
    for node in plan.nodes:
        if not is_op_block(node):
            continue
        ops = [(j, i, op) for j, edge in enumerate(node.inputs) for i, op in enumerate(edge.ops)]
        ops += [(None, i, op) for i, op in enumerate(node.ops)]
        layers = [((edge, i, op), cls, variables) for edge, i, op in ops for cls, variables in _layers_of(op)]
        if naming == "named" and len(layers) > 1:
            problems.append(Problem(f"{len(layers)} weighted layers; a Model Garden decoder layer named after the "
                                    "block holds one", node.name))
            continue
        for (edge, i, op), cls, variables in layers:
            if naming == "named":
                out += [DecoderVariable(node.name, edge, i, op, role, node.name) for role in variables]
            else:
                index = counts.get(cls, 0)
                counts[cls] = index + 1
                out += [DecoderVariable(node.name, edge, i, op, role, cls, index) for role in variables]
    if problems:
        raise WeightsError(problems)
    return out


def modelgarden_parts(source: Any, plan: Plan) -> tuple[Any, Any]:
    """(backbone, decoder) Model Garden models from ``source``: a detection model (its ``backbone`` and
    ``decoder``), a ``(backbone, decoder)`` pair, or a backbone alone (decoder None). A plan with op blocks
    needs the decoder; a plan without takes the backbone alone. A decoder's own plan (it takes feature maps) takes
    the decoder alone: ``(None, decoder)``."""
    if plan.inputs:
        if hasattr(source, "backbone") and hasattr(source, "decoder"):
            return None, source.decoder
        return None, source[1] if isinstance(source, tuple | list) and len(source) == 2 else source
    if hasattr(source, "backbone") and hasattr(source, "decoder"):
        backbone, decoder = source.backbone, source.decoder
    elif isinstance(source, tuple | list) and len(source) == 2:
        backbone, decoder = source
    else:
        backbone, decoder = source, None
    wants_decoder = any(is_op_block(node) for node in plan.nodes)
    if wants_decoder and decoder is None:
        raise WeightsError(Problem("the plan has decoder blocks (op blocks): give the Model Garden backbone and "
                                   "decoder, as (backbone, decoder) or a detection model holding both", "source"))
    return backbone, decoder if wants_decoder else None
