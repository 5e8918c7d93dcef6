"""Plan -> Keras functional graph. Every shape, channel count and resampling step is read from the plan."""

from __future__ import annotations

import re
from typing import Any

import tensorflow as tf
import tf_keras

from specgraph import Activation, BackendError, Conv, Edge, MaxPool, Node, Norm, Op, Plan, SeparableConv, Upsample
from specgraph.backend_api import frozen_nodes, fuse_slot, fusion_weight_shape, op_slot, unit_slot

from ._layers import ConvNormAct, Fuse, LayerOptions, NormAct
from ._layers import Upsample as UpsampleLayer
from ._units import make_unit

__all__ = ["build_graph", "freeze", "layer_names"]

# Model Garden initialises the resampling depthwise kernels with Keras's default.
RESAMPLE_DEPTHWISE_INIT = "glorot_uniform"


# What TensorFlow accepts as a (root) name scope, less "/", "\\" and ">" (a layer name is a scope).
_VALID_NAME = re.compile(r"[A-Za-z0-9.][A-Za-z0-9_.-]*")


def layer_names(plan: Plan) -> dict[str, str]:
    """Node name -> the prefix of its Keras layer names (``{prefix}_unit0``, ``{prefix}_in0_op1``...).

    A name TensorFlow accepts is kept as it is; any other (``</svg>``, ``a<b``) has its other
    characters replaced by ``_`` and a numeric suffix where that collides with another node's prefix.
    The emitter names its layers from this map too, so both models have the same layer names.
    """
    names = {node.name: node.name for node in plan.nodes if _VALID_NAME.fullmatch(node.name)}
    taken = set(names.values())
    for node in plan.nodes:
        if node.name in names:
            continue
        base = re.sub(r"[^A-Za-z0-9_.-]", "_", node.name)
        base = base if _VALID_NAME.fullmatch(base) else f"n{base}"
        name, k = base, 1
        while name in taken:
            k += 1
            name = f"{base}_{k}"
        taken.add(name)
        names[node.name] = name
    return names


class _Builder:
    def __init__(self, plan: Plan, options: LayerOptions, drop_rate: float) -> None:
        self.plan, self.options, self.drop_rate = plan, options, drop_rate
        self.names = layer_names(plan)
        # Structural key ("sp3/in0/op1", "sp3/unit0") -> layer, in Model Garden's creation order.
        self.slots: dict[str, tf_keras.layers.Layer] = {}
        # Node name -> its weight-bearing layers (a node name may hold "/", so keys are not split).
        self.node_slots: dict[str, list[tf_keras.layers.Layer]] = {}
        # Node name -> every layer it made, in order; a node that shares another's weights calls those instead.
        self.made: dict[str, list[tf_keras.layers.Layer]] = {}
        self._making: list[tf_keras.layers.Layer] = []
        self._reusing: Any = None  # an iterator over the owner's layers while a sharing node is wired
        # Upsampling crops to ceil(image / 2**level), the image's size read from a reference tensor at run time:
        # the image, or a decoder's finest input (level counted from its own).
        self.reference_level = min((int(level) for level, _ in plan.inputs), default=0)

    def layer(self, key: str | None, make: Any) -> tf_keras.layers.Layer:
        """A new layer from ``make()`` (a weight slot under ``key``), or the owner's next one for a sharing node."""
        if self._reusing is not None:
            return next(self._reusing)
        layer = make()
        self._making.append(layer)
        if key is not None:
            self.slots[key] = layer
        return layer

    def op(self, op: Op, x: tf.Tensor, image: tf.Tensor, key: str, name: str, level: int, *,
           resample: bool) -> tf.Tensor:
        if isinstance(op, SeparableConv):
            return self.layer(key, lambda: ConvNormAct(
                op.out_channels, op.kernel, op.stride, options=self.options, separable=True, norm=op.norm,
                activation=op.activation, bias=op.bias, name=name))(x)
        if isinstance(op, Norm | Activation):
            return self.layer(key if isinstance(op, Norm) else None, lambda: NormAct(
                options=self.options, norm=isinstance(op, Norm), activation=isinstance(op, Activation),
                function=getattr(op, "function", ""), name=name))(x)
        if isinstance(op, Conv):
            if op.groups != 1 and not op.depthwise:
                raise BackendError(f"{key}: grouped conv with groups={op.groups} is not supported")
            return self.layer(key, lambda: ConvNormAct(
                op.out_channels, op.kernel, op.stride, options=self.options, depthwise=op.depthwise, norm=op.norm,
                activation=op.activation, bias=op.bias,
                depthwise_initializer=RESAMPLE_DEPTHWISE_INIT if resample else None, name=name))(x)
        if isinstance(op, MaxPool):
            return self.layer(None, lambda: tf_keras.layers.MaxPool2D(op.kernel, op.stride, padding="same",
                                                                      name=name))(x)
        if isinstance(op, Upsample):
            return self.layer(None, lambda: UpsampleLayer(op.factor, level - self.reference_level, op.mode,
                                                          name=name))([x, image])
        raise BackendError(f"{key}: unknown op {op!r}")

    def edge(self, edge: Edge, index: int, x: tf.Tensor, image: tf.Tensor) -> tf.Tensor:
        for k, op in enumerate(edge.ops):
            # Intermediate ops run at the level their output size says; only the last reaches the target.
            x = self.op(op, x, image, op_slot(edge.target, k, index), f"{self.names[edge.target]}_in{index}_op{k}",
                        edge.target_level, resample=True)
        return x

    def units(self, node: Node, x: tf.Tensor) -> tf.Tensor:
        rate = self.drop_rate * node.drop_fraction if node.drop_fraction else 0.0
        for u, unit in enumerate(node.units):
            x = self.layer(unit_slot(node.name, u), lambda: make_unit(
                unit, rate, self.options, name=f"{self.names[node.name]}_unit{u}"))(x)  # noqa: B023 (called here)
        return x

    def build(self, image: tf.Tensor | dict[str, tf.Tensor]) -> dict[str, tf.Tensor]:
        """The endpoints, wired on the image; a decoder's on its inputs ``{level: tensor}``."""
        tensors: dict[str, tf.Tensor] = {}
        if self.plan.inputs:
            features = image
            tensors.update({name: features[level] for level, name in self.plan.inputs})
            image = features[str(self.reference_level)]
        for node in self.plan.nodes:
            if node.kind == "input":
                continue
            first = len(self.slots)
            self._making, self._reusing = [], iter(self.made[node.shares]) if node.shares else None
            tensors[node.name] = self.node(node, tensors, image)
            self.made[node.name] = self._making
            self.node_slots[node.name] = list(self.slots.values())[first:]
        return {level: tensors[name] for level, name in self.plan.endpoints}

    def node(self, node: Node, tensors: dict[str, tf.Tensor], image: tf.Tensor) -> tf.Tensor:
        """Wire one node on its parents' tensors; returns its output."""
        if node.kind == "stem":
            x = image
            for k, op in enumerate(node.ops):
                x = self.op(op, x, image, op_slot(node.name, k), f"{self.names[node.name]}_op{k}", node.level,
                            resample=False)
            return x
        if node.kind == "stem_block":
            return self.units(node, tensors[node.inputs[0].source])
        if node.kind == "block":
            parents = [self.edge(e, j, tensors[e.source], image) for j, e in enumerate(node.inputs)]
            shape = fusion_weight_shape(node.fusion, len(node.inputs), node.fused_channels)
            fuse = self.layer(fuse_slot(node.name) if shape is not None else None, lambda: Fuse(
                node.fusion or "sum", len(parents), self.options.activation if node.fusion_activation else None,
                shape, name=f"{self.names[node.name]}_fuse"))
            x = self.units(node, fuse(parents))
            for k, op in enumerate(node.ops):  # an op block's ops
                level = node.fused_level + sum(o.level_step for o in node.ops[:k + 1])
                x = self.op(op, x, image, op_slot(node.name, k), f"{self.names[node.name]}_op{k}", level,
                            resample=False)
            return x
        if node.kind == "endpoint":
            x = tensors[node.inputs[0].source]
            for k, op in enumerate(node.ops):
                x = self.op(op, x, image, op_slot(node.name, k), f"{self.names[node.name]}_op{k}", node.level,
                            resample=False)
            return x
        raise BackendError(f"node {node.name}: unknown kind {node.kind!r}")


def _batch_norms(layer: tf_keras.layers.Layer) -> list[tf_keras.layers.Layer]:
    return [sub for sub in layer._flatten_layers(include_self=True, recursive=True)
            if isinstance(sub, tf_keras.layers.BatchNormalization)]


def freeze(plan: Plan, node_slots: dict[str, list[tf_keras.layers.Layer]], *, frozen_bn: bool = False,
           freeze_at: int = 0) -> None:
    """``frozen_bn``: every batch norm ``trainable=False``, which in tf_keras also makes it run in inference
    mode (its moving statistics, never updated); ``freeze_at``: the first ``freeze_at`` nodes in plan order
    (the stem first) not trainable at all, batch norms included."""
    frozen = set(frozen_nodes(plan, freeze_at))
    for node in plan.nodes:
        layers = node_slots.get(node.name, [])
        if node.name in frozen:
            for layer in layers:
                layer.trainable = False  # Keras sets its sublayers (and their batch norms) too
        elif frozen_bn:
            for layer in layers:
                for norm in _batch_norms(layer):
                    norm.trainable = False


def build_graph(plan: Plan, image: tf.Tensor | dict[str, tf.Tensor], options: LayerOptions, drop_rate: float, *,
                frozen_bn: bool = False,
                freeze_at: int = 0) -> tuple[dict[str, tf.Tensor], dict[str, Any]]:
    """Wire ``plan`` on the Keras input ``image``; returns the endpoint tensors and the weight slots.

    ``frozen_bn`` / ``freeze_at`` freeze batch norms and the first nodes (see :func:`freeze`).
    """
    builder = _Builder(plan, options, drop_rate)
    outputs = builder.build(image)
    freeze(plan, builder.node_slots, frozen_bn=frozen_bn, freeze_at=freeze_at)
    return outputs, builder.slots
