"""get_config/from_config (the spec travels in the config) and SavedModel export/reload."""

from __future__ import annotations

import json

import numpy as np
import pytest
import specgraph_tensorflow as sgt
import tensorflow as tf
import tf_keras

import specgraph


def _same_outputs(a, b, x):
    ra, rb = a(x, training=False), b(x, training=False)
    assert sorted(ra) == sorted(rb)
    for level in ra:
        np.testing.assert_array_equal(np.asarray(ra[level]), np.asarray(rb[level]))


@pytest.fixture(scope="module")
def regularized():
    return specgraph.compile("spinenet_mobile", backend="tensorflow", variant="49XS", input_size=(128, 128),
                             kernel_regularizer=tf_keras.regularizers.L2(4e-5), norm_momentum=0.97,
                             stochastic_depth_drop_rate=0.2, activation="swish")


def test_config_round_trip_includes_the_spec(regularized, make_images):
    config = regularized.get_config()
    json.dumps(config)  # plain data
    assert config["spec"] == specgraph.load("spinenet_mobile").to_dict()
    assert config["plan"] is None
    assert (config["variant"], config["activation"], config["norm_momentum"]) == ("49XS", "swish", 0.97)
    rebuilt = sgt.SpecgraphModel.from_config(json.loads(json.dumps(config)))
    assert rebuilt.plan.hash == regularized.plan.hash
    assert rebuilt.get_config() == config
    assert rebuilt.count_params() == regularized.count_params()
    assert len(rebuilt.losses) == len(regularized.losses) > 0  # the L2 regularizer came back
    rebuilt.set_weights(regularized.get_weights())
    _same_outputs(regularized, rebuilt, make_images(1, 128, 160))
    # Keras's to_json writes the bare class name, so JSON loading names the class.
    again = tf_keras.models.model_from_json(regularized.to_json(),
                                            custom_objects={"SpecgraphModel": sgt.SpecgraphModel})
    assert isinstance(again, sgt.SpecgraphModel) and again.plan.hash == regularized.plan.hash


def test_spec_file_and_weighted_fusion_round_trip(mini, tmp_path, make_images):
    data = mini()
    data["fusion"] = {"method": "weighted", "activation": True}
    path = tmp_path / "mini.yaml"
    path.write_text(specgraph.load(data).dumps("yaml"))
    # specgraph.compile hands the backend only the plan; build() keeps the spec for the config.
    model = sgt.build(str(path), input_size=(64, 64))
    assert model.count_params() == specgraph.stats(model.plan).params
    names = sgt.weights_dict(model)
    assert names["o5/fuse/weights"].shape == (2,)  # one weight per parent: b3, o4
    config = model.get_config()
    assert config["spec"]["name"] == "mini"
    rebuilt = sgt.SpecgraphModel.from_config(config)
    rebuilt.set_weights(model.get_weights())
    _same_outputs(model, rebuilt, make_images(2, 64, 96))


def test_plan_without_known_spec_round_trips_through_the_plan(mini, make_images):
    plan = specgraph.plan(specgraph.load(mini()), input_size=(64, 64))
    model = sgt.compile(plan)  # "mini" is no built-in: the config carries the plan itself
    config = model.get_config()
    assert config["spec"] is None and config["plan"]["hash"] == plan.hash
    rebuilt = sgt.SpecgraphModel.from_config(json.loads(json.dumps(config)))
    assert rebuilt.plan == plan
    rebuilt.set_weights(model.get_weights())
    _same_outputs(model, rebuilt, make_images(1, 64, 64))


def test_savedmodel_export_and_reload(regularized, tmp_path, make_images):
    x = make_images(2, 128, 192, seed=4)
    path = str(tmp_path / "saved")
    sgt.export_saved_model(regularized, path)
    keras_loaded = tf_keras.models.load_model(path)
    assert isinstance(keras_loaded, sgt.SpecgraphModel)
    _same_outputs(regularized, keras_loaded, x)
    raw = tf.saved_model.load(path)  # no Python class needed
    out = raw.signatures["serving_default"](images=tf.constant(x))
    ref = regularized(x, training=False)
    for level in ref:
        # A graph-mode call may fuse ops differently from the eager one: equal up to float rounding.
        np.testing.assert_allclose(out[f"level_{level}"].numpy(), ref[level].numpy(), rtol=1e-5,
                                   atol=1e-6 * np.abs(ref[level].numpy()).max())
