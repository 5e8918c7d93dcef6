"""Small Keras layers, one per plan op: conv+norm+act, upsample-and-crop, fusion, stochastic depth.

Their logic is ``_runtime``'s (which emitted models copy); here they take the model's
:class:`LayerOptions` and build without tracing (:class:`PlannedLayer`). The layers hold no
structural knowledge; the builder reads every channel count, kernel and stride from the plan.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import tensorflow as tf
import tf_keras

from specgraph.backend_api import ACTIVATION_FORMULAS, canonical_activation

from . import _runtime
from ._runtime import InverseCdfGenerator as InverseCdfGenerator  # (its old home; tests read it here)
from ._runtime import build_sublayer, depthwise_by_shifts, in_xla_compilation
from ._runtime import initializer as _initializer  # noqa: F401  (likewise)

__all__ = ["ACTIVATION_KERNELS", "ConvNormAct", "Fuse", "LayerOptions", "NormAct", "PlannedLayer", "StochasticDepth",
           "Upsample",
           "activation_fn", "activation_kernel", "build_sublayer", "depthwise_by_shifts", "hard_sigmoid",
           "in_xla_compilation"]

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


class ConvNormAct(PlannedLayer, _runtime.ConvNormAct):
    """A plan ``Conv`` op: conv (depthwise when asked), then batch norm, then the activation."""

    def __init__(self, filters: int, kernel: int, stride: int, *, options: LayerOptions, depthwise: bool = False,
                 norm: bool = True, activation: bool = True, bias: bool = False,
                 depthwise_initializer: Any = None, separable: bool = False, **kwargs: Any) -> None:
        init = (depthwise_initializer or options.kernel_initializer) if depthwise else options.kernel_initializer
        super().__init__(filters, kernel, stride, depthwise=depthwise, norm=norm, separable=separable,
                         activation=activation_fn(options.activation) if activation else None, bias=bias,
                         norm_momentum=options.norm_momentum, norm_epsilon=options.norm_epsilon,
                         sync_bn=options.use_sync_bn, kernel_initializer=init,
                         kernel_regularizer=options.kernel_regularizer, bias_regularizer=options.bias_regularizer,
                         shifts_under_xla=options.xla_depthwise == "shifted", **kwargs)


class NormAct(PlannedLayer, _runtime.NormAct):
    """A plan ``Norm`` op (``norm``) or ``Activation`` op (``activation``) on its own."""

    def __init__(self, *, options: LayerOptions, norm: bool = True, activation: bool = False, function: str = "",
                 **kwargs: Any) -> None:
        # ``function``: an activation of the op's own instead of the model's.
        act = activation_fn(function or options.activation) if activation else None
        super().__init__(norm=norm, activation=act,
                         norm_momentum=options.norm_momentum, norm_epsilon=options.norm_epsilon,
                         sync_bn=options.use_sync_bn, **kwargs)


class Upsample(PlannedLayer, _runtime.Upsample):
    """A plan ``Upsample`` (``_runtime.Upsample``)."""


class Fuse(PlannedLayer, _runtime.Fuse):
    """A block's input fusion; ``activation`` is an activation name (or None)."""

    def __init__(self, method: str, count: int, activation: str | None, weight_shape: Any = None,
                 **kwargs: Any) -> None:
        super().__init__(method, count, activation_fn(activation) if activation else None, weight_shape, **kwargs)
        self.activation = activation

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "activation": self.activation}


class StochasticDepth(PlannedLayer, _runtime.StochasticDepth):
    """Drops the whole residual branch per sample while training (``_runtime.StochasticDepth``)."""
