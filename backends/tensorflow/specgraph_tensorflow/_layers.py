"""Small Keras layers, one per plan op: conv+norm+act, upsample-and-crop, fusion, stochastic depth.

The layers hold no structural knowledge; the builder reads every channel count,
kernel and stride from the plan and passes it in.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import tensorflow as tf
import tf_keras
from tf_keras.src.backend import RandomGenerator
from tf_keras.src.utils.control_flow_util import GraphOrParentsInXlaContext

from specgraph.backend_api import ACTIVATION_FORMULAS, canonical_activation

__all__ = ["ACTIVATION_KERNELS", "ConvNorm", "Fuse", "LayerOptions", "PlannedLayer", "StochasticDepth", "Upsample",
           "activation_fn", "activation_kernel", "build_sublayer", "depthwise_by_shifts", "hard_sigmoid",
           "in_xla_compilation"]

# Calls hold no tensor-dependent Python control flow; skipping autograph makes building faster.
_no_autograph = tf.autograph.experimental.do_not_convert
# (The wrapper hides call signatures from Keras, which then passes ``training`` to every call.)

# One function per canonical activation (specgraph._activations.FORMULAS says what each computes),
# as Model Garden's tf_utils.get_activation resolves the name. Each is self-contained (tf only)
# because the emitter copies the plan's one into standalone source; constants are cast to the
# input's dtype so mixed precision keeps bfloat16.
def act_relu(x: tf.Tensor) -> tf.Tensor:
    return tf.nn.relu(x)


def act_relu6(x: tf.Tensor) -> tf.Tensor:
    return tf.nn.relu6(x)


def act_swish(x: tf.Tensor) -> tf.Tensor:
    return tf.nn.silu(x)


def act_hard_swish(x: tf.Tensor) -> tf.Tensor:
    return x * tf.nn.relu6(x + tf.cast(3.0, x.dtype)) * tf.cast(1.0 / 6.0, x.dtype)


def act_hard_sigmoid(x: tf.Tensor) -> tf.Tensor:
    return tf.nn.relu6(x + tf.cast(3.0, x.dtype)) * tf.cast(0.16667, x.dtype)  # Model Garden's, not 1/6


def act_sigmoid(x: tf.Tensor) -> tf.Tensor:
    return tf.nn.sigmoid(x)


def act_tanh(x: tf.Tensor) -> tf.Tensor:
    return tf.nn.tanh(x)


def act_elu(x: tf.Tensor) -> tf.Tensor:
    return tf.nn.elu(x)


def act_gelu(x: tf.Tensor) -> tf.Tensor:
    return tf.nn.gelu(x, approximate=True)  # Model Garden's gelu is the tanh approximation


def act_mish(x: tf.Tensor) -> tf.Tensor:
    return x * tf.nn.tanh(tf.nn.softplus(x))


def act_leaky_relu(x: tf.Tensor) -> tf.Tensor:
    return tf.nn.leaky_relu(x)  # alpha 0.2


def act_linear(x: tf.Tensor) -> tf.Tensor:
    return tf.identity(x)


ACTIVATION_KERNELS: dict[str, Callable[[tf.Tensor], tf.Tensor]] = {
    name: globals()[f"act_{name}"] for name in ACTIVATION_FORMULAS}
hard_sigmoid = act_hard_sigmoid  # squeeze-excitation's gate


def activation_kernel(name: str) -> Callable[[tf.Tensor], tf.Tensor]:
    """The function for any accepted activation name (aliases too); :class:`BackendError` otherwise."""
    return ACTIVATION_KERNELS[canonical_activation(name)]


activation_fn = activation_kernel  # the name the layers (and the emitted source) call


@dataclass(frozen=True)
class LayerOptions:
    """What every layer of one model shares (the model-level options)."""

    activation: str = "relu"
    norm_momentum: float = 0.99
    norm_epsilon: float = 0.001
    use_sync_bn: bool = False
    kernel_initializer: Any = "VarianceScaling"
    kernel_regularizer: Any = None
    bias_regularizer: Any = None
    xla_depthwise: str = "shifted"


XLA_DEPTHWISE = ("shifted", "native")


def in_xla_compilation() -> bool:
    """Whether ops are being traced for XLA (``tf.function(jit_compile=True)``, Keras ``jit_compile``)."""
    return not tf.executing_eagerly() and GraphOrParentsInXlaContext(tf.compat.v1.get_default_graph())


def _dim(x: tf.Tensor, axis: int) -> int | tf.Tensor:
    static = x.shape[axis]
    return static if static is not None else tf.shape(x)[axis]


def _same_pads(n: Any, kernel: int, stride: int) -> tuple[Any, Any, Any]:
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
    out_h, top, bottom = _same_pads(_dim(x, 1), k, stride)
    out_w, left, right = _same_pads(_dim(x, 2), k, stride)
    x = tf.pad(x, [[0, 0], [top, bottom], [left, right], [0, 0]])
    kernel = tf.cast(kernel, x.dtype)
    span_h, span_w = (out_h - 1) * stride + 1, (out_w - 1) * stride + 1
    y = None
    for i in range(k):
        for j in range(k):
            tap = x[:, i:i + span_h:stride, j:j + span_w:stride, :] * kernel[i, j, :, 0]
            y = tap if y is None else y + tap
    return y if bias is None else y + tf.cast(bias, y.dtype)


# Off only in tests, to check the shapes computed here against a traced construction.
TRACE_CONSTRUCTION = False


class PlannedLayer(tf_keras.layers.Layer):
    """A layer whose output shape is known without running ``call``.

    When a functional model is wired, Keras traces every layer's ``call`` in a scratch graph only to
    learn its output shape and dtype; for this backend that trace was about half of the build time.
    These layers build their weights and answer the shape from :meth:`compute_output_shape`
    instead (pure shape arithmetic, read from the same kernel / stride / level the plan gave). The
    model, its variables and what ``call`` computes are the same; ``call`` is traced when the
    model is first run, as it would be anyway.
    """

    # Overrides tf_keras's (private) hook for exactly this step; anything unusual takes Keras's own path.
    def _infer_output_signature(self, inputs: Any, args: Any, kwargs: Any, input_masks: Any) -> Any:
        flat = tf.nest.flatten(inputs)
        plain = (not TRACE_CONSTRUCTION and self._activity_regularizer is None
                 and all(m is None for m in tf.nest.flatten(input_masks))
                 and all(isinstance(x, tf_keras.__internal__.KerasTensor) and x.dtype.is_floating for x in flat))
        if not plain:
            return super()._infer_output_signature(inputs, args, kwargs, input_masks)
        with tf.name_scope(self._name_scope()):  # the scope a traced build would create the variables in
            self._maybe_build(inputs)
        shape = self.compute_output_shape(tf.nest.map_structure(lambda x: x.shape, inputs))
        self._set_save_spec(inputs, args, kwargs)
        # Inputs are cast to the compute dtype (mixed precision) and every op here keeps it.
        return tf_keras.__internal__.KerasTensor(tf.TensorSpec(shape, self.compute_dtype))


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


def _initializer(value: Any) -> Any:
    # A fresh object per layer so no two layers share an initializer's state.
    init = tf_keras.initializers.get(tf_keras.initializers.serialize(tf_keras.initializers.get(value)))
    if (isinstance(init, tf_keras.initializers.VarianceScaling) and init.distribution == "truncated_normal"
            and init.seed is None):
        # Same distribution, same config; only an unseeded draw, so a seeded one stays Keras's numbers.
        init._random_generator = InverseCdfGenerator(None, rng_type="stateless")
    return init


class ConvNorm(PlannedLayer):
    """A plan ``Conv`` op: conv (depthwise when asked), then batch norm, then the activation."""

    def __init__(self, filters: int, kernel: int, stride: int, *, options: LayerOptions, depthwise: bool = False,
                 norm: bool = True, activation: bool = True, bias: bool = False,
                 depthwise_initializer: Any = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if depthwise:
            # Depthwise kernels are never regularized in Model Garden (regularize_depthwise=False).
            self.conv = tf_keras.layers.DepthwiseConv2D(
                kernel, stride, padding="same", use_bias=bias,
                depthwise_initializer=_initializer(depthwise_initializer or options.kernel_initializer),
                bias_regularizer=options.bias_regularizer, name="conv")
        else:
            self.conv = tf_keras.layers.Conv2D(
                filters, kernel, stride, padding="same", use_bias=bias,
                kernel_initializer=_initializer(options.kernel_initializer),
                kernel_regularizer=options.kernel_regularizer, bias_regularizer=options.bias_regularizer,
                name="conv")
        self.norm = tf_keras.layers.BatchNormalization(
            momentum=options.norm_momentum, epsilon=options.norm_epsilon, synchronized=options.use_sync_bn,
            name="norm") if norm else None
        self.act = activation_fn(options.activation) if activation else None
        self.shifts_under_xla = depthwise and options.xla_depthwise == "shifted"

    def build(self, input_shape: Any) -> None:
        shape = build_sublayer(self.conv, input_shape, self.compute_dtype)
        if self.norm is not None:
            build_sublayer(self.norm, shape, self.compute_dtype)
        super().build(input_shape)

    def compute_output_shape(self, input_shape: Any) -> tf.TensorShape:
        return tf.TensorShape(self.conv.compute_output_shape(input_shape))

    @_no_autograph
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
        out = {"kernel": self.conv.depthwise_kernel if isinstance(self.conv, tf_keras.layers.DepthwiseConv2D)
               else self.conv.kernel}
        if self.conv.use_bias:
            out["bias"] = self.conv.bias
        if self.norm is not None:
            out.update(gamma=self.norm.gamma, beta=self.norm.beta, moving_mean=self.norm.moving_mean,
                       moving_variance=self.norm.moving_variance)
        return out


class Upsample(PlannedLayer):
    """A plan ``Upsample``: repeat each pixel ``factor x factor``, crop to ``ceil(image / 2**level)``.

    Called on ``[x, image]``: the crop size comes from the image at run time, so one
    model serves every input size (at sizes divisible by ``2**max_level`` the crop is a no-op).
    """

    def __init__(self, factor: int, level: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.factor, self.level = factor, level

    @_no_autograph
    def call(self, inputs: list[tf.Tensor], training: Any = None) -> tf.Tensor:
        x, image = inputs
        f = self.factor
        n, h, w, c = (_dim(x, i) for i in range(4))
        y = tf.reshape(x, [n, h, 1, w, 1, c])
        y = tf.tile(y, [1, 1, f, 1, f, 1])
        y = tf.reshape(y, [n, h * f, w * f, c])
        step = 2**self.level
        th = (_dim(image, 1) + step - 1) // step
        tw = (_dim(image, 2) + step - 1) // step
        if isinstance(th, int) and isinstance(tw, int) and isinstance(h, int) and isinstance(w, int) \
                and (th, tw) == (h * f, w * f):
            return y
        return y[:, :th, :tw, :]

    def compute_output_shape(self, input_shape: Any) -> tf.TensorShape:
        x, image = (tf.TensorShape(s) for s in input_shape)
        step = 2**self.level

        def size(n: int | None, limit: int | None) -> int | None:
            # The crop: ceil(image / 2**level), never more than the repeated size.
            if n is None or limit is None:
                return None  # a crop of an unknown size, as tracing would infer
            return min(-(-n // step), limit * self.factor)

        return tf.TensorShape([x[0], size(image[1], x[1]), size(image[2], x[2]), x[3]])

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "factor": self.factor, "level": self.level}


class Fuse(PlannedLayer):
    """A block's input fusion: ``sum`` or fast normalised ``weighted``, then the activation if asked."""

    def __init__(self, method: str, count: int, activation: str | None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if method not in ("sum", "weighted"):
            raise ValueError(f"unknown fusion {method!r}")
        self.method, self.count, self.activation = method, count, activation
        self.act = activation_fn(activation) if activation else None

    def build(self, input_shape: Any) -> None:
        if self.method == "weighted":
            self.fusion_weights = self.add_weight(name="weights", shape=(self.count,), initializer="ones",
                                                  trainable=True, dtype=tf.float32)
        super().build(input_shape)

    def compute_output_shape(self, input_shape: Any) -> tf.TensorShape:
        shape = tf.TensorShape(None)
        for s in input_shape:
            shape = shape.merge_with(tf.TensorShape(s))
        return shape

    @_no_autograph
    def call(self, inputs: list[tf.Tensor], training: Any = None) -> tf.Tensor:
        if self.method == "sum":
            # A chain of AddV2, as Model Garden's Add layers give: grappler's remapper fuses AddV2
            # (not AddN) with the conv before it, and the summation order matches bit for bit.
            x = inputs[0]
            for t in inputs[1:]:
                x = x + t
        else:
            w = tf.nn.relu(tf.cast(self.fusion_weights, inputs[0].dtype))
            x = tf.add_n([w[i] * t for i, t in enumerate(inputs)]) / (tf.reduce_sum(w) + tf.cast(1e-4, w.dtype))
        return self.act(x) if self.act is not None else x

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "method": self.method, "count": self.count, "activation": self.activation}


class StochasticDepth(PlannedLayer):
    """Drops the whole residual branch per sample while training; kept samples are scaled by 1/keep."""

    def __init__(self, rate: float, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.rate = rate

    def compute_output_shape(self, input_shape: Any) -> tf.TensorShape:
        return tf.TensorShape(input_shape)

    @_no_autograph
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
