"""Block units (``bottleneck``, ``residual``, ``mbconv``) built from a plan ``Unit``."""

from __future__ import annotations

from typing import Any

import tensorflow as tf
import tf_keras

from specgraph import Unit

from ._layers import (
    ConvNorm,
    LayerOptions,
    PlannedLayer,
    StochasticDepth,
    _initializer,
    _no_autograph,
    activation_fn,
    build_sublayer,
    hard_sigmoid,
)

__all__ = ["BlockUnit", "SqueezeExcite", "make_unit"]


class SqueezeExcite(PlannedLayer):
    """``x * hard_sigmoid(conv_b(relu(conv_a(mean_hw(x)))))``; both 1x1 convs have a bias."""

    def __init__(self, se_channels: int, channels: int, *, options: LayerOptions, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        def conv(filters: int, name: str) -> tf_keras.layers.Conv2D:
            return tf_keras.layers.Conv2D(filters, 1, padding="same", use_bias=True,
                                          kernel_initializer=_initializer(options.kernel_initializer),
                                          kernel_regularizer=options.kernel_regularizer,
                                          bias_regularizer=options.bias_regularizer, name=name)

        self.reduce = conv(se_channels, "reduce")
        self.expand = conv(channels, "expand")

    def build(self, input_shape: Any) -> None:
        shape = tf.TensorShape(input_shape)
        squeezed = build_sublayer(self.reduce, [shape[0], 1, 1, shape[3]], self.compute_dtype)
        build_sublayer(self.expand, squeezed, self.compute_dtype)
        super().build(input_shape)

    def compute_output_shape(self, input_shape: Any) -> tf.TensorShape:
        return tf.TensorShape(input_shape)

    @_no_autograph
    def call(self, x: tf.Tensor, training: Any = None) -> tf.Tensor:
        s = tf.reduce_mean(x, axis=[1, 2], keepdims=True)
        s = hard_sigmoid(self.expand(tf.nn.relu(self.reduce(s))))
        return x * s

    def named_variables(self) -> dict[str, tf.Variable]:
        return {"reduce/kernel": self.reduce.kernel, "reduce/bias": self.reduce.bias,
                "expand/kernel": self.expand.kernel, "expand/bias": self.expand.bias}


class BlockUnit(PlannedLayer):
    """One unit of a block group. ``parts`` maps role names to sublayers in build order."""

    def __init__(self, unit: Unit, drop_rate: float, *, options: LayerOptions, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.unit_type = unit.type
        u, o = unit, options
        self.parts: dict[str, tf_keras.layers.Layer] = {}
        self.shortcut = None
        self.residual = True
        if u.type == "bottleneck":
            if u.projection:
                self.shortcut = ConvNorm(u.out_channels, 1, u.stride, options=o, activation=False, name="shortcut")
            self.parts = {
                "conv1": ConvNorm(u.filters, 1, 1, options=o, name="conv1"),
                "conv2": ConvNorm(u.filters, 3, u.stride, options=o, name="conv2"),
                "conv3": ConvNorm(u.out_channels, 1, 1, options=o, activation=False, name="conv3"),
            }
            self.out_act = activation_fn(o.activation)
        elif u.type == "residual":
            if u.projection:
                self.shortcut = ConvNorm(u.out_channels, 1, u.stride, options=o, activation=False, name="shortcut")
            self.parts = {
                "conv1": ConvNorm(u.filters, 3, u.stride, options=o, name="conv1"),
                "conv2": ConvNorm(u.out_channels, 3, 1, options=o, activation=False, name="conv2"),
            }
            self.out_act = activation_fn(o.activation)
        elif u.type == "mbconv":
            width = u.expand_channels if u.expand else u.in_channels
            if u.expand:
                self.parts["expand"] = ConvNorm(width, 1, 1, options=o, name="expand")
            self.parts["depthwise"] = ConvNorm(width, 3, u.stride, options=o, depthwise=True, name="depthwise")
            if u.se_channels > 0:
                self.parts["se"] = SqueezeExcite(u.se_channels, width, options=o, name="se")
            self.parts["project"] = ConvNorm(u.out_channels, 1, 1, options=o, activation=False, name="project")
            self.residual = u.residual
            self.out_act = None  # no activation after an mbconv add
        else:
            raise ValueError(f"unknown unit type {u.type!r}")
        # Keras tracks sublayers held in attributes; a plain dict attribute is tracked too.
        self.drop = StochasticDepth(drop_rate, name="drop") if drop_rate and self.residual else None

    def build(self, input_shape: Any) -> None:
        # In call order, so variables are created in the same order as by a traced build.
        if self.shortcut is not None:
            build_sublayer(self.shortcut, input_shape, self.compute_dtype)
        shape = tf.TensorShape(input_shape)
        for layer in self.parts.values():
            shape = build_sublayer(layer, shape, self.compute_dtype)
        if self.drop is not None:
            build_sublayer(self.drop, shape, self.compute_dtype)
        super().build(input_shape)

    def compute_output_shape(self, input_shape: Any) -> tf.TensorShape:
        shape = tf.TensorShape(input_shape)
        for layer in self.parts.values():
            shape = tf.TensorShape(layer.compute_output_shape(shape))
        return shape

    @_no_autograph
    def call(self, x: tf.Tensor, training: Any = None) -> tf.Tensor:
        shortcut = x
        if self.shortcut is not None:
            shortcut = self.shortcut(x, training=training)
        for layer in self.parts.values():
            x = layer(x) if isinstance(layer, SqueezeExcite) else layer(x, training=training)
        if not self.residual:
            return x
        if self.drop is not None:
            x = self.drop(x, training=training)
        x = x + shortcut
        return self.out_act(x) if self.out_act is not None else x

    def named_layers(self) -> dict[str, tf_keras.layers.Layer]:
        out = dict(self.parts)
        if self.shortcut is not None:
            out["shortcut"] = self.shortcut
        return out


def make_unit(unit: Unit, drop_rate: float, options: LayerOptions, name: str) -> BlockUnit:
    return BlockUnit(unit, drop_rate, options=options, name=name)
