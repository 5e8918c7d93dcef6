"""The fast paths compute what the plain model computes: the XLA depthwise formulation and the
traced-free functional construction (shapes answered by ``compute_output_shape``)."""

from __future__ import annotations

import numpy as np
import pytest
import specgraph_tensorflow as sgt
import tensorflow as tf
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
