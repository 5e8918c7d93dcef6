"""Weight loading: .npz round trip, Model Garden checkpoints, and all-or-nothing mismatch errors."""

from __future__ import annotations

import numpy as np
import pytest
import specgraph_tensorflow as sgt
import tensorflow as tf

import specgraph

H, W = 256, 384


def _snapshot(model):
    return {k: v.numpy().copy() for k, v in sgt.weights_dict(model).items()}


def _unchanged(model, snapshot):
    return all(np.array_equal(v.numpy(), snapshot[k]) for k, v in sgt.weights_dict(model).items())


@pytest.fixture(scope="module")
def small_pair():
    """Two fresh Mobile-49XS models (different random init)."""
    build = lambda: specgraph.compile("spinenet_mobile", backend="tensorflow", variant="49XS",  # noqa: E731
                                      input_size=(128, 128))
    return build(), build()


def test_weight_names_are_structural(small_pair):
    names = sgt.weights_dict(small_pair[0])
    assert "stem/op0/kernel" in names and names["stem/op0/kernel"].shape == (3, 3, 3, 4)
    assert names["sp1/in0/op0/kernel"].shape == (3, 3, 9, 1)  # depthwise resampling, stem1 (9 ch) L1 -> L2
    assert names["sp14/unit0/se/reduce/bias"].shape == (13,)  # int(67 * 0.2) SE channels
    assert names["endpoint_7/op0/moving_variance"].shape == (24,)
    # Every variable of the model has exactly one name.
    assert len(names) == len(small_pair[0].weights)
    assert {id(v) for v in names.values()} == {id(v) for v in small_pair[0].weights}


def test_npz_round_trip(small_pair, tmp_path, make_images):
    src, dst = small_pair
    path = tmp_path / "w.npz"
    sgt.export_npz(src, path)
    sgt.load_weights(dst, str(path))
    x = make_images(1, 96, 160)
    a, b = src(x, training=False), dst(x, training=False)
    for level in a:
        np.testing.assert_array_equal(a[level].numpy(), b[level].numpy())


def test_mismatches_are_all_listed_and_nothing_is_loaded(small_pair):
    src, dst = small_pair
    arrays = {k: v.numpy() for k, v in sgt.weights_dict(src).items()}
    del arrays["sp3/unit0/project/gamma"]
    arrays["sp3/unit0/bogus"] = np.zeros(3)
    arrays["endpoint_3/op0/kernel"] = np.zeros((1, 1, 24, 25))
    before = _snapshot(dst)
    with pytest.raises(sgt.WeightMismatchError) as info:
        sgt.load_weights(dst, arrays)
    assert sgt.WeightMismatchError is specgraph.WeightsError  # the old name still works
    assert isinstance(info.value, specgraph.BackendError)
    problems = {p.path: p.message for p in info.value.problems}
    assert problems.keys() == {"sp3/unit0/project/gamma", "sp3/unit0/bogus", "endpoint_3/op0/kernel"}
    assert problems["sp3/unit0/project/gamma"].startswith("missing")
    assert problems["sp3/unit0/bogus"].startswith("unexpected")
    assert "[1, 1, 24, 25]" in problems["endpoint_3/op0/kernel"]
    assert len(info.value.problems) == 3
    assert _unchanged(dst, before)


@pytest.mark.slow
@pytest.mark.modelgarden
def test_wrong_modelgarden_variant_lists_every_shape(mg_mobile_49xs):
    model = specgraph.compile("spinenet_mobile", backend="tensorflow", variant="49S", input_size=(H, W))
    before = _snapshot(model)
    with pytest.raises(sgt.WeightMismatchError) as info:
        sgt.load_weights(model, mg_mobile_49xs)
    problems = {p.path: p.message for p in info.value.problems}
    assert all(m.startswith("shape ") for m in problems.values())
    assert problems["stem/op0/kernel"] == "shape [3, 3, 3, 4] does not fit: expected [3, 3, 3, 5]"
    assert len(problems) > 100  # every conv of the 49S differs from 49XS, all reported at once
    assert _unchanged(model, before)


@pytest.mark.slow
@pytest.mark.modelgarden
def test_modelgarden_model_without_merge_block_is_refused(mobile_49xs):
    """Model Garden at an unknown input width drops sp11 (merge-only): the loader says so instead of misloading."""
    import tf_keras
    from official.vision.modeling.backbones import spinenet_mobile

    s = spinenet_mobile.SCALING_MAP["49XS"]
    dynamic = spinenet_mobile.SpineNetMobile(input_specs=tf_keras.layers.InputSpec(shape=[None, None, None, 3]),
                                             endpoints_num_filters=s["endpoints_num_filters"],
                                             filter_size_scale=s["filter_size_scale"])
    before = _snapshot(mobile_49xs)
    with pytest.raises(sgt.WeightMismatchError, match="fixed input_specs shape") as info:
        sgt.load_weights(mobile_49xs, dynamic)
    plan = mobile_49xs.plan
    convs = sum(1 for n in plan.nodes for op in (*n.ops, *(o for e in n.inputs for o in e.ops))
                if isinstance(op, specgraph.Conv) and not op.depthwise)
    # sp11's two 1x1 resampling convs and its block are the difference.
    assert f"conv layers: the plan has {convs}, the Model Garden model has {convs - 2}" in str(info.value)
    assert "mbconv layers: the plan has 18, the Model Garden model has 17" in str(info.value)
    assert _unchanged(mobile_49xs, before)


@pytest.mark.slow
@pytest.mark.modelgarden
def test_load_from_modelgarden_checkpoint(mg_mobile_49xs, tmp_path, make_images, rel_diff):
    path = tf.train.Checkpoint(backbone=mg_mobile_49xs).write(str(tmp_path / "ckpt"))
    model = specgraph.compile("spinenet_mobile", backend="tensorflow", variant="49XS", input_size=(H, W))
    sgt.load_weights(model, path)
    x = make_images(1, H, W, seed=5)
    diff = rel_diff(mg_mobile_49xs(x, training=False), model(x, training=False))
    assert max(diff.values()) <= 1e-5, diff
