"""The Keras layers and helpers a planned model runs, self-contained (tensorflow, tf_keras, stdlib only).

The backend subclasses these layers (``_layers``, ``_units``); the emitter copies this module's
source into every emitted model. So both run one implementation. Constructors take plain
values (channel counts, flags, activation functions); nothing here knows a plan.
"""

from __future__ import annotations

import ast
import math
import os
import sys
import zipfile
from collections.abc import Callable, Sequence
from typing import Any

import tensorflow as tf
import tf_keras
from tf_keras.src.backend import RandomGenerator
from tf_keras.src.utils.control_flow_util import GraphOrParentsInXlaContext

__all__ = ["BlockUnit", "ConvNormAct", "Fuse", "InverseCdfGenerator", "NormAct", "NpzError", "SqueezeExcite",
           "StochasticDepth",
           "UNIT_JOINS", "Upsample", "build_sublayer", "depthwise_by_shifts", "dim", "in_xla_compilation",
           "initializer", "layer_variables", "load_named", "no_autograph", "parse_npy", "read_npz_arrays",
           "same_pads"]

# Calls hold no tensor-dependent Python control flow; skipping autograph makes building faster.
no_autograph = tf.autograph.experimental.do_not_convert
# (The wrapper hides call signatures from Keras, which then passes ``training`` to every call.)


def in_xla_compilation() -> bool:
    """Whether ops are being traced for XLA (``tf.function(jit_compile=True)``, Keras ``jit_compile``)."""
    return not tf.executing_eagerly() and GraphOrParentsInXlaContext(tf.compat.v1.get_default_graph())


def dim(x: tf.Tensor, axis: int) -> int | tf.Tensor:
    static = x.shape[axis]
    return static if static is not None else tf.shape(x)[axis]


def same_pads(n: Any, kernel: int, stride: int) -> tuple[Any, Any, Any]:
    """TensorFlow's SAME padding along one axis of size ``n`` (int or scalar tensor): (out, before, after)."""
    out = (n + stride - 1) // stride
    total = (out - 1) * stride + kernel - n
    total = max(total, 0) if isinstance(total, int) else tf.maximum(total, 0)
    return out, total // 2, total - total // 2


def depthwise_by_shifts(x: tf.Tensor, kernel: tf.Tensor, stride: int, bias: tf.Tensor | None = None) -> tf.Tensor:
    """A SAME-padded depthwise conv (``kernel`` of shape (k, k, C, 1)) as k*k shifted multiply-adds.

    The same function as ``tf.nn.depthwise_conv2d`` (only the summation order differs, ~1e-7
    relative). XLA's CPU backend lowers a depthwise conv to a generic grouped convolution that
    runs ~10x slower than TensorFlow's kernel; this form it fuses into one elementwise loop.
    """
    k = int(kernel.shape[0])
    out_h, top, bottom = same_pads(dim(x, 1), k, stride)
    out_w, left, right = same_pads(dim(x, 2), k, stride)
    x = tf.pad(x, [[0, 0], [top, bottom], [left, right], [0, 0]])
    kernel = tf.cast(kernel, x.dtype)
    span_h, span_w = (out_h - 1) * stride + 1, (out_w - 1) * stride + 1
    y = None
    for i in range(k):
        for j in range(k):
            tap = x[:, i:i + span_h:stride, j:j + span_w:stride, :] * kernel[i, j, :, 0]
            y = tap if y is None else y + tap
    return y if bias is None else y + tf.cast(bias, y.dtype)


def build_sublayer(layer: tf_keras.layers.Layer, input_shape: Any, dtype: Any) -> tf.TensorShape:
    """Build ``layer`` for inputs of ``input_shape`` as its first call would; returns its output shape."""
    with tf.name_scope(layer._name_scope()):  # same variable names as when built by a call
        layer._maybe_build(tf_keras.__internal__.KerasTensor(tf.TensorSpec(input_shape, dtype)))
    return tf.TensorShape(layer.compute_output_shape(input_shape))


# erf(sqrt 2) = P(|Z| < 2) for a standard normal Z: the uniform's range for the +-2 stddev cut.
_ERF_2SD = math.erf(math.sqrt(2.0))


class InverseCdfGenerator(RandomGenerator):
    """Keras's stateless random generator, drawing truncated normals by the inverse CDF.

    ``mean + stddev * sqrt(2) * erfinv(u)``, ``u`` uniform on ``(-erf(sqrt 2), erf(sqrt 2))``, is
    exactly the normal truncated at +-2 stddev that ``stateless_truncated_normal`` draws by
    rejection, at half its cost on CPU (a uniform draw and one erfinv). It matters because the
    draws are a third of a model's build time; other distributions are Keras's own.
    """

    def truncated_normal(self, shape: Any, mean: float = 0.0, stddev: float = 1.0, dtype: Any = None,
                         nonce: Any = None) -> tf.Tensor:
        dtype = tf.as_dtype(dtype or tf_keras.backend.floatx())
        seed = self.make_seed_for_stateless_op()  # (created with rng_type="stateless" only)
        if nonce:
            seed = tf.random.experimental.stateless_fold_in(seed, nonce)
        # Drawn in float32 (at least): erfinv near +-erf(sqrt 2) needs the resolution.
        wide = tf.float64 if dtype == tf.float64 else tf.float32
        u = tf.random.stateless_uniform(shape, seed, minval=-_ERF_2SD, maxval=_ERF_2SD, dtype=wide)
        x = tf.math.erfinv(u) * (stddev * math.sqrt(2.0))
        if mean:
            x = x + mean
        return tf.cast(x, dtype)


def initializer(value: Any) -> Any:
    # A fresh object per layer so no two layers share an initializer's state.
    init = tf_keras.initializers.get(tf_keras.initializers.serialize(tf_keras.initializers.get(value)))
    if (isinstance(init, tf_keras.initializers.VarianceScaling) and init.distribution == "truncated_normal"
            and init.seed is None):
        # Same distribution, same config; only an unseeded draw, so a seeded one stays Keras's numbers.
        init._random_generator = InverseCdfGenerator(None, rng_type="stateless")
    return init


class ConvNormAct(tf_keras.layers.Layer):
    """A conv op: SAME conv (depthwise or separable when asked), then batch norm, then ``activation`` (a
    function) if given."""

    def __init__(self, filters: int, kernel: int, stride: int, *, depthwise: bool = False, norm: bool = True,
                 activation: Callable[[tf.Tensor], tf.Tensor] | None = None, bias: bool = False,
                 norm_momentum: float = 0.99, norm_epsilon: float = 0.001, sync_bn: bool = False,
                 kernel_initializer: Any = "VarianceScaling", kernel_regularizer: Any = None,
                 bias_regularizer: Any = None, shifts_under_xla: bool = True, separable: bool = False,
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.separable = separable
        if separable:
            # Keras's SeparableConv2D, as Model Garden's decoders use it: depthwise, 1x1, one bias after both.
            self.conv = tf_keras.layers.SeparableConv2D(
                filters, kernel, stride, padding="same", use_bias=bias,
                depthwise_initializer=initializer(kernel_initializer),
                pointwise_initializer=initializer(kernel_initializer), pointwise_regularizer=kernel_regularizer,
                bias_regularizer=bias_regularizer, name="conv")
        elif depthwise:
            # Depthwise kernels are never regularized in Model Garden (regularize_depthwise=False).
            self.conv = tf_keras.layers.DepthwiseConv2D(
                kernel, stride, padding="same", use_bias=bias, depthwise_initializer=initializer(kernel_initializer),
                bias_regularizer=bias_regularizer, name="conv")
        else:
            self.conv = tf_keras.layers.Conv2D(
                filters, kernel, stride, padding="same", use_bias=bias,
                kernel_initializer=initializer(kernel_initializer), kernel_regularizer=kernel_regularizer,
                bias_regularizer=bias_regularizer, name="conv")
        self.norm = tf_keras.layers.BatchNormalization(
            momentum=norm_momentum, epsilon=norm_epsilon, synchronized=sync_bn, name="norm") if norm else None
        self.act = activation
        self.shifts_under_xla = depthwise and shifts_under_xla

    def build(self, input_shape: Any) -> None:
        shape = build_sublayer(self.conv, input_shape, self.compute_dtype)
        if self.norm is not None:
            build_sublayer(self.norm, shape, self.compute_dtype)
        super().build(input_shape)

    def compute_output_shape(self, input_shape: Any) -> tf.TensorShape:
        return tf.TensorShape(self.conv.compute_output_shape(input_shape))

    @no_autograph
    def call(self, x: tf.Tensor, training: Any = None) -> tf.Tensor:
        if self.shifts_under_xla and in_xla_compilation():
            # Same weights, same function; a formulation XLA compiles well (see depthwise_by_shifts).
            conv = self.conv
            x = depthwise_by_shifts(x, conv.depthwise_kernel, conv.strides[0], conv.bias if conv.use_bias else None)
        else:
            x = self.conv(x)
        if self.norm is not None:
            x = self.norm(x, training=training)
        return self.act(x) if self.act is not None else x

    def named_variables(self) -> dict[str, tf.Variable]:
        """Variables by role: kernel, bias, gamma, beta, moving_mean, moving_variance."""
        if self.separable:
            out = {"depthwise_kernel": self.conv.depthwise_kernel, "pointwise_kernel": self.conv.pointwise_kernel}
        else:
            out = {"kernel": self.conv.depthwise_kernel if isinstance(self.conv, tf_keras.layers.DepthwiseConv2D)
                   else self.conv.kernel}
        if self.conv.use_bias:
            out["bias"] = self.conv.bias
        if self.norm is not None:
            out.update(gamma=self.norm.gamma, beta=self.norm.beta, moving_mean=self.norm.moving_mean,
                       moving_variance=self.norm.moving_variance)
        return out


class NormAct(tf_keras.layers.Layer):
    """A ``Norm`` op (batch norm, ``norm``) or an ``Activation`` op (``activation``, a function) on its own."""

    def __init__(self, *, norm: bool = True, activation: Callable[[tf.Tensor], tf.Tensor] | None = None,
                 norm_momentum: float = 0.99, norm_epsilon: float = 0.001, sync_bn: bool = False,
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.norm = tf_keras.layers.BatchNormalization(
            momentum=norm_momentum, epsilon=norm_epsilon, synchronized=sync_bn, name="norm") if norm else None
        self.act = activation

    def build(self, input_shape: Any) -> None:
        if self.norm is not None:
            build_sublayer(self.norm, input_shape, self.compute_dtype)
        super().build(input_shape)

    def compute_output_shape(self, input_shape: Any) -> tf.TensorShape:
        return tf.TensorShape(input_shape)

    @no_autograph
    def call(self, x: tf.Tensor, training: Any = None) -> tf.Tensor:
        if self.norm is not None:
            x = self.norm(x, training=training)
        return self.act(x) if self.act is not None else x

    def named_variables(self) -> dict[str, tf.Variable]:
        if self.norm is None:
            return {}
        return {"gamma": self.norm.gamma, "beta": self.norm.beta, "moving_mean": self.norm.moving_mean,
                "moving_variance": self.norm.moving_variance}


class SqueezeExcite(tf_keras.layers.Layer):
    """``x * gate(expand(inner(reduce(mean_hw(x)))))``; both 1x1 convs have a bias."""

    def __init__(self, se_channels: int, channels: int, *, inner: Callable[[tf.Tensor], tf.Tensor],
                 gate: Callable[[tf.Tensor], tf.Tensor], kernel_initializer: Any = "VarianceScaling",
                 kernel_regularizer: Any = None, bias_regularizer: Any = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)

        def conv(filters: int, name: str) -> tf_keras.layers.Conv2D:
            return tf_keras.layers.Conv2D(filters, 1, padding="same", use_bias=True,
                                          kernel_initializer=initializer(kernel_initializer),
                                          kernel_regularizer=kernel_regularizer,
                                          bias_regularizer=bias_regularizer, name=name)

        self.reduce = conv(se_channels, "reduce")
        self.expand = conv(channels, "expand")
        self.inner, self.gate = inner, gate

    def build(self, input_shape: Any) -> None:
        shape = tf.TensorShape(input_shape)
        squeezed = build_sublayer(self.reduce, [shape[0], 1, 1, shape[3]], self.compute_dtype)
        build_sublayer(self.expand, squeezed, self.compute_dtype)
        super().build(input_shape)

    def compute_output_shape(self, input_shape: Any) -> tf.TensorShape:
        return tf.TensorShape(input_shape)

    @no_autograph
    def call(self, x: tf.Tensor, training: Any = None) -> tf.Tensor:
        s = tf.reduce_mean(x, axis=[1, 2], keepdims=True)
        return x * self.gate(self.expand(self.inner(self.reduce(s))))

    def named_variables(self) -> dict[str, tf.Variable]:
        return {"reduce/kernel": self.reduce.kernel, "reduce/bias": self.reduce.bias,
                "expand/kernel": self.expand.kernel, "expand/bias": self.expand.bias}


class Upsample(tf_keras.layers.Layer):
    """``nearest``: repeat each pixel ``factor x factor``, crop to ``ceil(image / 2**level)``; ``bilinear``: resize
    to that size (``tf.image.resize``, half-pixel centres). ``level`` counts from the reference ``image``'s: a
    decoder's reference is its finest input.

    Called on ``[x, image]``: the crop size comes from the image at run time, so one
    model serves every input size (at sizes divisible by ``2**max_level`` the crop is a no-op).
    """

    def __init__(self, factor: int, level: int, mode: str = "nearest", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if mode not in ("nearest", "bilinear"):
            raise ValueError(f"unknown upsampling mode {mode!r}; known: nearest, bilinear")
        self.factor, self.level, self.mode = factor, level, mode

    def _at_level(self, n: Any) -> Any:
        # ceil(n / 2**level); a level below the reference's (a decoder's finest input stands for the image):
        # n * 2**-level.
        return (n + 2**self.level - 1) // 2**self.level if self.level >= 0 else n * 2 ** (-self.level)

    @no_autograph
    def call(self, inputs: list[tf.Tensor], training: Any = None) -> tf.Tensor:
        x, image = inputs
        if self.mode == "bilinear":
            size = [self._at_level(tf.shape(image)[1]), self._at_level(tf.shape(image)[2])]
            return tf.cast(tf.image.resize(x, size, method="bilinear"), x.dtype)
        f = self.factor
        n, h, w, c = (dim(x, i) for i in range(4))
        y = tf.reshape(x, [n, h, 1, w, 1, c])
        y = tf.tile(y, [1, 1, f, 1, f, 1])
        y = tf.reshape(y, [n, h * f, w * f, c])
        th = self._at_level(dim(image, 1))
        tw = self._at_level(dim(image, 2))
        if isinstance(th, int) and isinstance(tw, int) and isinstance(h, int) and isinstance(w, int) \
                and (th, tw) == (h * f, w * f):
            return y
        return y[:, :th, :tw, :]

    def compute_output_shape(self, input_shape: Any) -> tf.TensorShape:
        x, image = (tf.TensorShape(s) for s in input_shape)

        def size(n: int | None, limit: int | None) -> int | None:
            # The crop: ceil(image / 2**level), never more than the repeated size (a resize: exactly it).
            if self.mode == "bilinear":
                return None if n is None else self._at_level(n)
            if n is None or limit is None:
                return None  # a crop of an unknown size, as tracing would infer
            return min(self._at_level(n), limit * self.factor)

        return tf.TensorShape([x[0], size(image[1], x[1]), size(image[2], x[2]), x[3]])

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "factor": self.factor, "level": self.level, "mode": self.mode}


FUSION_METHODS = ("sum", "weighted", "weighted_channel", "softmax", "attention", "concat")


class Fuse(tf_keras.layers.Layer):
    """A block's input fusion by ``method`` (specgraph._fusions.FUSIONS says what each computes) with trainable
    weights of ``weight_shape`` (the plan's: one per input, or per input and channel; None: none), then
    ``activation`` (a function) if given."""

    def __init__(self, method: str, count: int, activation: Callable[[tf.Tensor], tf.Tensor] | None = None,
                 weight_shape: Sequence[int] | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if method not in FUSION_METHODS:
            raise ValueError(f"unknown fusion {method!r}; known: {', '.join(FUSION_METHODS)}")
        self.method, self.count = method, count
        self.weight_shape = tuple(weight_shape) if weight_shape is not None else None
        self.act = activation

    def build(self, input_shape: Any) -> None:
        if self.weight_shape is not None:
            self.fusion_weights = self.add_weight(name="weights", shape=self.weight_shape, initializer="ones",
                                                  trainable=True, dtype=tf.float32)
        super().build(input_shape)

    def compute_output_shape(self, input_shape: Any) -> tf.TensorShape:
        if self.method == "concat":
            shapes = [tf.TensorShape(s) for s in input_shape]
            channels = [s[-1] for s in shapes]
            merged = tf.TensorShape(None)
            for s in shapes:
                merged = merged.merge_with(s[:-1].concatenate([None]))
            return merged[:-1].concatenate([None if None in channels else sum(channels)])
        shape = tf.TensorShape(None)
        for s in input_shape:
            shape = shape.merge_with(tf.TensorShape(s))
        return shape

    @no_autograph
    def call(self, inputs: list[tf.Tensor], training: Any = None) -> tf.Tensor:
        if self.method in ("sum", "attention"):
            # A chain of AddV2, as Model Garden's Add layers give: grappler's remapper fuses AddV2
            # (not AddN) with the conv before it, and the summation order matches bit for bit.
            x, rest = inputs[0], inputs[1:]
            if self.method == "attention":
                x = x + rest[0] * tf.math.sigmoid(tf.math.reduce_max(x, axis=[1, 2], keepdims=True))
                rest = rest[1:]
            for t in rest:
                x = x + t
        elif self.method == "concat":
            x = tf.concat(inputs, axis=-1)
        elif self.method == "softmax":
            w = tf.nn.softmax(tf.cast(self.fusion_weights, inputs[0].dtype), axis=0)
            x = tf.add_n([w[i] * t for i, t in enumerate(inputs)])
        else:  # fast normalised: a weight per input ((n,)) or per input and channel ((n, C), broadcast on NHWC)
            w = tf.nn.relu(tf.cast(self.fusion_weights, inputs[0].dtype))
            x = tf.add_n([w[i] * t for i, t in enumerate(inputs)]) / (tf.reduce_sum(w, axis=0) +
                                                                       tf.cast(1e-4, w.dtype))
        return self.act(x) if self.act is not None else x

    def named_variables(self) -> dict[str, tf.Variable]:
        return {"weights": self.fusion_weights}

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "method": self.method, "count": self.count,
                "weight_shape": self.weight_shape}


class StochasticDepth(tf_keras.layers.Layer):
    """Drops the whole residual branch per sample while training; kept samples are scaled by 1/keep."""

    def __init__(self, rate: float, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.rate = rate

    def compute_output_shape(self, input_shape: Any) -> tf.TensorShape:
        return tf.TensorShape(input_shape)

    @no_autograph
    def call(self, x: tf.Tensor, training: Any = None) -> tf.Tensor:
        if not self.rate:
            return x
        if training is None:
            training = tf_keras.backend.learning_phase()
        keep = 1.0 - self.rate

        def drop() -> tf.Tensor:
            shape = tf.stack([tf.shape(x)[0], 1, 1, 1])
            mask = tf.floor(keep + tf.random.uniform(shape, dtype=x.dtype))
            return x / tf.cast(keep, x.dtype) * mask

        return tf_keras.backend.in_train_phase(drop, x, training=training)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "rate": self.rate}


def join_add(unit: Any, x: tf.Tensor, shortcut: tf.Tensor, training: Any) -> tf.Tensor:
    """``drop(branch) + shortcut``."""
    return (x if unit.drop is None else unit.drop(x, training=training)) + shortcut


def join_activation(unit: Any, x: tf.Tensor, shortcut: tf.Tensor, training: Any) -> tf.Tensor:
    return unit.act(x)


# A unit's join ops by the plan's op name: (unit, branch, shortcut, training) -> the new branch.
UNIT_JOINS = {"add": join_add, "activation": join_activation}


class BlockUnit(tf_keras.layers.Layer):
    """One unit of a block group, from its ops in build order: ``(role, path, layer)`` for a weighted op
    (``path`` ``shortcut`` reads the unit's input, ``branch`` the branch so far), ``(role, "join", kind)``
    for a join op (:data:`UNIT_JOINS`). ``activation`` is the join's activation function."""

    def __init__(self, ops: Sequence[tuple[str, str, Any]], *, activation: Callable[[tf.Tensor], tf.Tensor] | None
                 = None, drop_rate: float = 0.0, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        shortcuts = [layer for _, path, layer in ops if path == "shortcut"]
        if len(shortcuts) > 1 or any(path == "join" and kind not in UNIT_JOINS for _, path, kind in ops):
            raise ValueError(f"unsupported unit ops {[(role, path) for role, path, _ in ops]}")
        # Assigned first, replaced below: keeps the order Keras tracks (and checkpoints list) the sublayers in.
        self.parts: dict[str, tf_keras.layers.Layer] = {}
        self.shortcut = shortcuts[0] if shortcuts else None
        self.parts = {role: layer for role, path, layer in ops if path == "branch"}
        # Strings only: Keras does not track it.
        self.recipe = tuple((role, path, layer if path == "join" else "") for role, path, layer in ops)
        self.act = activation
        has_add = any(path == "join" and kind == "add" for _, path, kind in ops)
        self.drop = StochasticDepth(drop_rate, name="drop") if drop_rate and has_add else None

    def build(self, input_shape: Any) -> None:
        # In call order, so variables are created in the same order as by a traced build.
        shape = tf.TensorShape(input_shape)
        for role, path, _ in self.recipe:
            if path == "shortcut":
                build_sublayer(self.shortcut, input_shape, self.compute_dtype)
            elif path == "branch":
                shape = build_sublayer(self.parts[role], shape, self.compute_dtype)
        if self.drop is not None:
            build_sublayer(self.drop, shape, self.compute_dtype)
        super().build(input_shape)

    def compute_output_shape(self, input_shape: Any) -> tf.TensorShape:
        shape = tf.TensorShape(input_shape)
        for layer in self.parts.values():
            shape = tf.TensorShape(layer.compute_output_shape(shape))
        return shape

    @no_autograph
    def call(self, x: tf.Tensor, training: Any = None) -> tf.Tensor:
        inputs = shortcut = x
        for role, path, kind in self.recipe:
            if path == "shortcut":
                shortcut = self.shortcut(inputs, training=training)
            elif path == "branch":
                x = self.parts[role](x, training=training)
            else:
                x = UNIT_JOINS[kind](self, x, shortcut, training)
        return x

    def named_layers(self) -> dict[str, tf_keras.layers.Layer]:
        out = dict(self.parts)
        out.update({role: self.shortcut for role, path, _ in self.recipe if path == "shortcut"})
        return out


def layer_variables(layer: Any) -> dict[str, tf.Variable]:
    """A weighted layer's variables by role (``kernel``, ``conv2/gamma``, ``se/reduce/bias``, ``weights``)."""
    if isinstance(layer, ConvNormAct | NormAct | SqueezeExcite | Fuse):
        return layer.named_variables()
    if isinstance(layer, BlockUnit):
        return {f"{part}/{role}": v for part, sub in layer.named_layers().items()
                for role, v in layer_variables(sub).items()}
    raise TypeError(f"no weight naming for {type(layer).__name__}")


# Reading numpy's .npz without numpy (the emitted model's loader).

class NpzError(ValueError):
    """A refused ``.npz``; ``problems`` lists every problem. Nothing was loaded."""

    def __init__(self, path: str, problems: list[str]) -> None:
        super().__init__(f"{path}: {len(problems)} problem(s), nothing loaded:\n  " + "\n  ".join(problems))
        self.path, self.problems = path, problems


# .npy element types (numpy's dtype codes) that tf.io.decode_raw reads; weights are floating or integer.
NPY_DTYPES = {"f2": tf.float16, "f4": tf.float32, "f8": tf.float64, "i1": tf.int8, "i2": tf.int16,
              "i4": tf.int32, "i8": tf.int64, "u1": tf.uint8, "u2": tf.uint16}


def parse_npy(data: bytes) -> tf.Tensor:
    """One ``.npy`` array (format versions 1-3) as a tensor, read without numpy; ValueError if it cannot be."""
    if data[:6] != b"\x93NUMPY" or len(data) < 10:
        raise ValueError("not an .npy array")
    if data[6] == 1:
        size, start = int.from_bytes(data[8:10], "little"), 10
    elif data[6] in (2, 3):
        size, start = int.from_bytes(data[8:12], "little"), 12
    else:
        raise ValueError(f".npy format version {data[6]} is unknown")
    try:  # a Python literal; literal_eval runs no code
        header = ast.literal_eval(data[start:start + size].decode("utf-8" if data[6] == 3 else "latin-1"))
        descr, fortran, shape = header["descr"], header["fortran_order"], tuple(int(n) for n in header["shape"])
    except (ValueError, SyntaxError, TypeError, KeyError) as exc:
        raise ValueError(f"unreadable .npy header ({exc})") from None
    if not isinstance(descr, str) or descr[:1] not in "<>|=" or descr[1:] not in NPY_DTYPES:
        raise ValueError(f"dtype {descr!r} is not a floating or integer type this loader reads")
    dtype = NPY_DTYPES[descr[1:]]
    raw = data[start + size:]
    count = 1
    for n in shape:
        count *= n
    if len(raw) != count * dtype.size:
        raise ValueError(f"{len(raw)} bytes of data where shape {list(shape)} needs {count * dtype.size} (truncated?)")
    big = descr[0] == ">" or (descr[0] == "=" and sys.byteorder == "big")
    flat = tf.io.decode_raw(raw, dtype, little_endian=not big) if count else tf.zeros([0], dtype)
    if fortran:  # column-major: the reversed shape, transposed
        return tf.transpose(tf.reshape(flat, shape[::-1]))
    return tf.reshape(flat, shape)


def read_npz_arrays(path: str | os.PathLike[str]) -> dict[str, tf.Tensor | str]:
    """``{name: tensor}`` of an ``.npz`` (``numpy.savez``), or the reason an entry cannot be read, read without
    numpy; OSError or zipfile.BadZipFile if the file cannot be opened."""
    arrays: dict[str, tf.Tensor | str] = {}
    with zipfile.ZipFile(path) as archive:
        for member in archive.namelist():
            name = member.removesuffix(".npy")
            try:
                arrays[name] = parse_npy(archive.read(member))
            except (ValueError, zipfile.BadZipFile, EOFError) as exc:  # a bad member, a truncated archive
                arrays[name] = str(exc)
    return arrays


def load_named(targets: dict[str, tf.Variable], path: str | os.PathLike[str]) -> None:
    """Assign an ``.npz``'s arrays to ``targets`` by name, all or nothing: every name, shape, dtype (floating or
    integer) and value (finite) is checked and every array converted before the first assignment; any problem
    raises one :class:`NpzError` listing them all (missing, unexpected, wrong shape...), nothing assigned."""
    try:
        arrays = read_npz_arrays(path)
    except (OSError, zipfile.BadZipFile, EOFError) as exc:
        raise NpzError(str(path), [f"cannot read the file: {exc}"]) from None
    problems = [f"{name}: missing (expected shape {targets[name].shape.as_list()})"
                for name in targets if name not in arrays]
    problems += [f"{name}: unexpected (not a weight of this model)" for name in arrays if name not in targets]
    values = {}
    for name, variable in targets.items():
        value = arrays.get(name)
        if value is None:
            continue
        if isinstance(value, str):
            problems.append(f"{name}: {value}")
        elif value.shape.as_list() != variable.shape.as_list():
            problems.append(f"{name}: shape {value.shape.as_list()} in the file, {variable.shape.as_list()} in the "
                            "model")
        else:  # converted now, so that no assignment below can fail half-way
            values[name] = tf.cast(value, variable.dtype)
            if variable.dtype.is_floating and not bool(tf.reduce_all(tf.math.is_finite(values[name]))):
                problems.append(f"{name}: holds NaN or inf (or values beyond {variable.dtype.name})")
    if problems:
        raise NpzError(str(path), problems)
    for name, variable in targets.items():
        variable.assign(values[name])
