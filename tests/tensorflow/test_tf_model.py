"""The Keras model: parameter counts, any input size, options, and hand-checked layer semantics."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import specgraph_tensorflow as sgt
import tensorflow as tf
import tf_keras
from specgraph_tensorflow._layers import Fuse, StochasticDepth, Upsample, hard_sigmoid

import specgraph

slow = pytest.mark.slow
# Model Garden's count_params() at a fixed input size (reference table D), and the sizes of the issue.
VARIANTS = [
    pytest.param("spinenet", "49S", 640, 9_146_351, 9_089_215),
    pytest.param("spinenet", "49", 640, 21_920_192, 21_831_488, marks=slow),
    pytest.param("spinenet", "96", 640, 36_385_728, 36_262_976, marks=slow),
    pytest.param("spinenet", "143", 640, 60_413_888, 60_247_616, marks=slow),
    pytest.param("spinenet", "143L", 640, 101_011_093, 100_796_257, marks=slow),
    pytest.param("spinenet", "190", 640, 126_849_216, 126_587_664, marks=slow),
    pytest.param("spinenet_mobile", "49", 384, 2_313_892, 2_268_708),
    pytest.param("spinenet_mobile", "49S", 384, 1_004_872, 975_678),
    pytest.param("spinenet_mobile", "49XS", 384, 869_400, 842_456),
]


@pytest.mark.parametrize(("spec", "variant", "size", "params", "trainable"), VARIANTS)
def test_parameter_counts(spec, variant, size, params, trainable):
    plan = specgraph.plan(specgraph.load(spec), variant, (size, size))
    model = specgraph.compile(plan, backend="tensorflow")
    stats = specgraph.stats(plan)
    assert model.count_params() == stats.params == params
    trainable_count = sum(int(np.prod(v.shape)) for v in model.trainable_variables)
    assert trainable_count == stats.trainable_params == trainable
    del model
    tf_keras.backend.clear_session()  # the big variants hold ~0.5 GB each


def test_any_input_size(mobile_49xs, make_images):
    assert mobile_49xs.input_shape == (None, None, None, 3)
    for height, width in [(97, 130), (64, 200), (33, 33)]:
        out = mobile_49xs(make_images(1, height, width), training=False)
        for level, tensor in out.items():
            step = 2 ** int(level)
            assert tensor.shape == (1, math.ceil(height / step), math.ceil(width / step), 24), (height, width)
            assert np.isfinite(tensor.numpy()).all()


def test_upsample_repeats_then_crops_to_the_runtime_size():
    x = tf.reshape(tf.range(6, dtype=tf.float32), (1, 2, 3, 1))  # [[0 1 2] [3 4 5]] at level 4
    rows = np.array([[0, 0, 1, 1, 2, 2], [0, 0, 1, 1, 2, 2], [3, 3, 4, 4, 5, 5], [3, 3, 4, 4, 5, 5]])
    image = tf.zeros((1, 25, 41, 3))  # level 3 is ceil(25/8) x ceil(41/8) = 4 x 6: nothing cropped
    np.testing.assert_array_equal(Upsample(factor=2, level=3)([x, image]).numpy()[0, :, :, 0], rows)
    image = tf.zeros((1, 24, 40, 3))  # level 3 is 3 x 5: cropped
    np.testing.assert_array_equal(Upsample(factor=2, level=3)([x, image]).numpy()[0, :, :, 0],
                                  rows[:3, :5])


def test_hard_sigmoid_uses_model_gardens_constant():
    got = hard_sigmoid(tf.constant([-4.0, 0.0, 1.0, 4.0])).numpy()
    np.testing.assert_allclose(got, [0.0, 3 * 0.16667, 4 * 0.16667, 6 * 0.16667], rtol=1e-7)


def test_weighted_fusion_by_hand():
    a, b = tf.fill((1, 2, 2, 1), 3.0), tf.fill((1, 2, 2, 1), 5.0)
    fuse = Fuse("weighted", 2, activation=None, weight_shape=(2,))  # the shape the builder takes from the plan
    fuse([a, b])
    np.testing.assert_allclose(fuse([a, b]).numpy(), (3 + 5) / (2 + 1e-4), rtol=1e-6)  # weights start at 1
    fuse.fusion_weights.assign([2.0, -1.0])  # relu drops the negative weight
    np.testing.assert_allclose(fuse([a, b]).numpy(), 2 * 3 / (2 + 1e-4), rtol=1e-6)
    relu_sum = Fuse("sum", 2, activation="relu")
    np.testing.assert_array_equal(relu_sum([a, -3 * b]).numpy(), 0.0)


def test_stochastic_depth_drops_whole_samples():
    layer = StochasticDepth(0.5)
    x = tf.ones((64, 2, 2, 3))
    np.testing.assert_array_equal(layer(x, training=False).numpy(), x.numpy())
    tf.random.set_seed(0)
    y = layer(x, training=True).numpy()
    per_sample = y.reshape(64, -1)
    assert set(np.unique(per_sample)) <= {0.0, 2.0}
    assert (per_sample.min(axis=1) == per_sample.max(axis=1)).all()  # one draw per sample
    assert 0 < (per_sample[:, 0] == 0).sum() < 64


def test_drop_rate_scales_with_block_position(mini):
    plan = specgraph.plan(specgraph.load(mini()), input_size=(64, 64))
    model = sgt.compile(plan, stochastic_depth_drop_rate=0.2)
    body = [n for n in plan.nodes if n.kind == "block"]
    for node in body:
        drop = model.slots[f"{node.name}/unit0"].drop
        assert drop is not None and drop.rate == pytest.approx(0.2 * node.drop_fraction)
    assert body[-1].drop_fraction == 1.0
    assert model.slots["s1/unit0"].drop is None  # stem blocks never drop


def test_structure_comes_from_the_plan_ops(mini, make_images):
    """Editing an op in the plan changes the model: the backend reads ops, not the spec."""
    plan = specgraph.plan(specgraph.load(mini()), input_size=(64, 64))
    node = plan.node("endpoint_3")
    conv = dataclasses.replace(node.ops[0], out_channels=7)
    nodes = tuple(dataclasses.replace(n, ops=(conv,)) if n.name == "endpoint_3" else n for n in plan.nodes)
    edited = dataclasses.replace(plan, nodes=nodes)
    out = sgt.compile(edited)(make_images(1, 64, 64))
    assert out["3"].shape == (1, 8, 8, 7) and out["4"].shape == (1, 4, 4, 16)


def test_options_are_checked(mini):
    plan = specgraph.plan(specgraph.load(mini()), input_size=(64, 64), min_level=4)
    with pytest.raises(specgraph.BackendError, match="min_level=3 does not match the plan's min_level=4"):
        sgt.compile(plan, min_level=3)
    with pytest.raises(specgraph.BackendError, match="unknown option"):
        sgt.compile(plan, resample_alpha=0.5)
    with pytest.raises(specgraph.BackendError, match="unknown activation 'reluu'"):
        sgt.compile(plan, activation="reluu")
    model = specgraph.compile(plan, backend="tensorflow", norm_epsilon=1e-5)
    assert sorted(model.output_specs) == ["4", "5", "6", "7"]
    assert model.slots["endpoint_4/op0"].norm.epsilon == 1e-5
    assert isinstance(specgraph.get_backend("tensorflow").compile(plan), sgt.SpecgraphModel)


def test_initializers_follow_model_garden(mobile_49xs):
    slots = mobile_49xs.slots
    conv = slots["stem/op0"].conv
    assert type(conv.kernel_initializer).__name__ == "VarianceScaling"
    assert conv.kernel_initializer.get_config() | {"seed": None} == {
        "scale": 1.0, "mode": "fan_in", "distribution": "truncated_normal", "seed": None}
    # Model Garden's resampling DepthwiseConv2D ignores kernel_initializer: Keras's default applies.
    assert type(slots["sp1/in0/op0"].conv.depthwise_initializer).__name__ == "GlorotUniform"
    # Inside blocks the depthwise kernel does get the model's initializer.
    assert type(slots["sp1/unit0"].parts["depthwise"].conv.depthwise_initializer).__name__ == "VarianceScaling"
    se = slots["sp1/unit0"].parts["se"]
    assert not se.reduce.bias.numpy().any() and not se.expand.bias.numpy().any()
    norm = slots["sp1/unit0"].parts["project"].norm
    assert (norm.momentum, norm.epsilon) == (0.99, 0.001)
    np.testing.assert_array_equal(norm.moving_variance.numpy(), 1.0)


def test_compile_checks_options_and_memory_before_building():
    data = specgraph.load("spinenet").to_dict()
    data["variants"]["49"].update(filter_size_scale=16.0, block_repeats=64)  # about a terabyte of weights
    huge = specgraph.plan(specgraph.load(data), "49", 640)
    with pytest.raises(specgraph.ResourceError, match="check_memory=False"):
        sgt.compile(huge)
    plan = specgraph.plan(specgraph.load("spinenet_mobile"), "49XS", 64)
    for options, name in (({"norm_momentum": math.nan}, "norm_momentum"), ({"norm_epsilon": -1.0}, "norm_epsilon"),
                          ({"stochastic_depth_drop_rate": "x"}, "stochastic_depth_drop_rate")):
        with pytest.raises(specgraph.ArgumentError) as info:
            sgt.compile(plan, **options)
        assert info.value.problems[0].path == name
