"""The fast paths compute what the plain model computes: the XLA depthwise formulation and the
traced-free functional construction (shapes answered by ``compute_output_shape``), the kernel
initializer's inverse-CDF draw."""

from __future__ import annotations

import math

import numpy as np
import pytest
import specgraph_tensorflow as sgt
import tensorflow as tf
import tf_keras
from specgraph_tensorflow import _layers
from specgraph_tensorflow._layers import depthwise_by_shifts

import specgraph
from specgraph import BackendError


def _rel(out, ref):
    out, ref = np.asarray(out), np.asarray(ref)
    assert out.shape == ref.shape
    return float(np.abs(out - ref).max() / np.abs(ref).max())


@pytest.mark.parametrize(("height", "width"), [(16, 16), (15, 22), (7, 1)])
@pytest.mark.parametrize("kernel", [3, 5])
@pytest.mark.parametrize("stride", [1, 2])
def test_depthwise_by_shifts_is_tfs_same_depthwise_conv(height, width, kernel, stride):
    rng = np.random.default_rng(kernel * 10 + stride)
    x = tf.constant(rng.normal(size=(2, height, width, 6)).astype(np.float32))
    w = tf.constant(rng.normal(size=(kernel, kernel, 6, 1)).astype(np.float32))
    b = tf.constant(rng.normal(size=(6,)).astype(np.float32))
    ref = tf.nn.depthwise_conv2d(x, w, [1, stride, stride, 1], "SAME") + b
    assert _rel(depthwise_by_shifts(x, w, stride, b), ref) <= 1e-6
    # Unknown H, W at trace time: the SAME pads are computed as tensors.
    dynamic = tf.function(lambda t: depthwise_by_shifts(t, w, stride, b),
                          input_signature=[tf.TensorSpec([None, None, None, 6])])
    assert _rel(dynamic(x), ref) <= 1e-6


def _op_types(fn, x):
    return {op.type for op in fn.get_concrete_function(x).graph.get_operations()}


def test_xla_function_matches_the_plain_model_and_uses_no_depthwise_conv(make_images, randomize_norms):
    model = specgraph.compile("spinenet_mobile", backend="tensorflow", variant="49XS", input_size=(128, 192))
    randomize_norms(model, seed=11)
    x = tf.constant(make_images(2, 97, 130, seed=12))  # odd sizes: SAME pads differ top/bottom at stride 2
    fast = sgt.xla_function(model)
    assert "DepthwiseConv2dNative" not in _op_types(fast, x)
    assert "DepthwiseConv2dNative" in _op_types(tf.function(lambda t: model(t, training=False)), x)
    out, ref = fast(x), model(x, training=False)
    for level in ref:
        assert np.abs(ref[level].numpy()).max() > 0
        assert _rel(out[level], ref[level]) <= 1e-4, level


def test_xla_depthwise_native_keeps_tfs_depthwise_conv_under_xla(make_images):
    model = specgraph.compile("spinenet_mobile", backend="tensorflow", variant="49XS", input_size=(128, 128),
                              xla_depthwise="native")
    assert model.get_config()["xla_depthwise"] == "native"
    x = tf.constant(make_images(1, 64, 64, seed=13))
    assert "DepthwiseConv2dNative" in _op_types(sgt.xla_function(model), x)
    with pytest.raises(BackendError, match="xla_depthwise"):
        specgraph.compile("spinenet_mobile", backend="tensorflow", variant="49XS", input_size=(128, 128),
                          xla_depthwise="fast")


def _structure(model):
    return ([(w.name, tuple(w.shape), w.dtype) for w in model.weights],
            [(layer.name, type(layer).__name__, tuple(layer.output.shape), layer.output.dtype)
             for layer in model.layers[1:]])


@pytest.mark.parametrize(("spec", "variant", "input_shape"), [
    ("spinenet_mobile", "49XS", (200, 300, 3)),  # static, not divisible by 2**7: upsampling crops
    ("spinenet_mobile", "49XS", None),           # dynamic H, W
    ("spinenet", "49S", (200, 300, 3)),
])
def test_construction_without_tracing_gives_the_traced_model(monkeypatch, spec, variant, input_shape):
    plan = specgraph.plan(specgraph.load(spec), variant, (256, 384))
    fast = specgraph.compile(plan, backend="tensorflow", input_shape=input_shape)
    monkeypatch.setattr(_layers, "TRACE_CONSTRUCTION", True)
    traced = specgraph.compile(plan, backend="tensorflow", input_shape=input_shape)
    assert _structure(fast) == _structure(traced)
    assert fast.output_specs == traced.output_specs


def _truncated_normal_cdf(x: np.ndarray) -> np.ndarray:
    """CDF of the standard normal truncated to [-2, 2], from the error function alone."""
    phi = lambda t: 0.5 * (1.0 + np.vectorize(math.erf)(t / math.sqrt(2.0)))  # noqa: E731
    return (phi(x) - phi(-2.0)) / (phi(2.0) - phi(-2.0))


def test_default_kernel_initializer_draws_kerass_truncated_normal_by_the_inverse_cdf():
    init = _layers._initializer("VarianceScaling")
    assert isinstance(init._random_generator, _layers.InverseCdfGenerator)
    # Same class and config as Keras's own, so layer configs and SavedModels are unchanged.
    assert tf_keras.initializers.serialize(init) == tf_keras.initializers.serialize(
        tf_keras.initializers.VarianceScaling())
    shape = (3, 3, 64, 256)
    stddev = math.sqrt(1.0 / (3 * 3 * 64)) / 0.87962566103423978  # Keras's fan-in scale
    w = init(shape).numpy().ravel() / stddev
    assert w.dtype == np.float32 and w.size == 3 * 3 * 64 * 256
    assert np.abs(w).max() <= 2.0
    # Kolmogorov-Smirnov distance to the analytic truncated normal; ~1.4e-3 expected at this size.
    w.sort()
    cdf = _truncated_normal_cdf(w[:: 97])
    empirical = (np.arange(w.size)[:: 97] + 0.5) / w.size
    assert np.abs(cdf - empirical).max() < 5e-3
    # Keras's own draw has the same spread; every layer's fresh initializer draws other numbers.
    ref = tf_keras.initializers.VarianceScaling()(shape).numpy().ravel() / stddev
    assert abs(w.std() - ref.std()) < 5e-3
    assert not np.array_equal(_layers._initializer("VarianceScaling")(shape).numpy(),
                              _layers._initializer("VarianceScaling")(shape).numpy())


def test_seeded_or_other_initializers_keep_kerass_generator():
    seeded = _layers._initializer(tf_keras.initializers.VarianceScaling(seed=3))
    assert not isinstance(seeded._random_generator, _layers.InverseCdfGenerator)
    np.testing.assert_array_equal(seeded((3, 3, 4, 8)).numpy(),
                                  tf_keras.initializers.VarianceScaling(seed=3)((3, 3, 4, 8)).numpy())
    uniform = _layers._initializer(tf_keras.initializers.VarianceScaling(distribution="uniform"))
    assert not isinstance(uniform._random_generator, _layers.InverseCdfGenerator)
