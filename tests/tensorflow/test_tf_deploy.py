"""Deployment paths: TFLite, mixed_bfloat16, XLA."""

from __future__ import annotations

import numpy as np
import pytest
import specgraph_tensorflow as sgt
import tensorflow as tf
import tf_keras

import specgraph


@pytest.mark.filterwarnings("ignore:.*tf.lite.Interpreter is deprecated:UserWarning")
def test_tflite_mobile_49_matches_keras(make_images, randomize_norms):
    model = specgraph.compile("spinenet_mobile", backend="tensorflow", variant="49", input_size=(256, 256))
    randomize_norms(model, seed=3)
    lite = sgt.to_tflite(model, (192, 256))
    x = make_images(1, 192, 256, seed=9)
    got = lite.run(x)
    ref = {k: v.numpy() for k, v in model(x, training=False).items()}
    assert sorted(got) == sorted(ref) == ["3", "4", "5", "6", "7"]
    for level in ref:
        assert got[level].shape == ref[level].shape
        assert np.abs(ref[level]).max() > 0.1
        assert np.abs(got[level] - ref[level]).max() <= 1e-4, level


def test_mixed_bfloat16_builds_and_runs(make_images, randomize_norms):
    reference = specgraph.compile("spinenet_mobile", backend="tensorflow", variant="49XS", input_size=(128, 128))
    randomize_norms(reference, seed=4)
    tf_keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        model = specgraph.compile("spinenet_mobile", backend="tensorflow", variant="49XS", input_size=(128, 128))
    finally:
        tf_keras.mixed_precision.set_global_policy("float32")
    assert all(v.dtype == tf.float32 for v in model.weights)  # variables stay float32
    model.set_weights(reference.get_weights())
    x = make_images(2, 128, 160, seed=2)
    out, ref = model(x, training=False), reference(x, training=False)
    for level in ref:
        assert out[level].dtype == tf.bfloat16
        o, r = out[level].numpy().astype(np.float32), ref[level].numpy()
        assert np.isfinite(o).all()
        # bfloat16 keeps ~3 significant digits; through ~60 layers a few percent is expected.
        assert np.abs(o - r).max() / np.abs(r).max() < 0.1, level


def test_xla_jit_compile_matches_eager(mobile_49xs, make_images):
    x = tf.constant(make_images(2, 128, 192, seed=6))
    jitted = tf.function(lambda images: mobile_49xs(images, training=False), jit_compile=True)
    out, ref = jitted(x), mobile_49xs(x, training=False)
    for level in ref:
        r = ref[level].numpy()
        assert out[level].shape == r.shape
        assert np.abs(r).max() > 0
        assert np.abs(out[level].numpy() - r).max() / np.abs(r).max() <= 1e-4, level
