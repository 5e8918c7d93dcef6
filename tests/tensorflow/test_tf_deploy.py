"""Deployment paths: TFLite, SavedModel signatures, mixed_bfloat16, XLA."""

from __future__ import annotations

import numpy as np
import pytest
import specgraph_tensorflow as sgt
import tensorflow as tf
import tf_keras

import specgraph
from specgraph import ArgumentError
from specgraph._codegen import emit

LEVELS = ["3", "4", "5", "6", "7"]
NAMES = [f"level_{k}" for k in LEVELS]  # written out here, not taken from the code under test
LITE_WARNING = "ignore:.*tf.lite.Interpreter is deprecated:UserWarning"


@pytest.mark.filterwarnings(LITE_WARNING)
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


def _assert_equal_to_keras(got: dict, ref: dict, tolerance: float = 1e-4) -> float:
    assert sorted(got) == sorted(ref) == LEVELS
    worst = 0.0
    for level, r in ref.items():
        r = np.asarray(r)
        assert got[level].shape == r.shape, level
        assert np.abs(r).max() > 0.1, level  # randomised norms: far from zero, a wrong mapping shows
        worst = max(worst, float(np.abs(got[level] - r).max()))
    assert worst <= tolerance, worst
    return worst


@pytest.mark.filterwarnings(LITE_WARNING)
def test_tflite_any_batch_from_one_flatbuffer_with_named_outputs(make_images, randomize_norms):
    model = specgraph.compile("spinenet_mobile", backend="tensorflow", variant="49XS", input_size=(128, 128))
    randomize_norms(model, seed=5)
    lite = sgt.to_tflite(model, (128, 128))  # batch=None is the default

    # The artefact read by TFLite itself, not through TFLiteModel.
    interpreter = tf.lite.Interpreter(model_content=lite.content)
    assert interpreter.get_signature_list() == {"serving_default": {"inputs": ["images"], "outputs": NAMES}}
    runner = interpreter.get_signature_runner("serving_default")
    assert list(runner.get_input_details()["images"]["shape_signature"]) == [-1, 128, 128, 3]
    assert sorted(runner.get_output_details()) == NAMES
    index = runner.get_input_details()["images"]["index"]
    outputs = {name: d["index"] for name, d in runner.get_output_details().items()}
    del runner  # it holds the interpreter, which then refuses resize_tensor_input
    x2 = make_images(2, 128, 128, seed=11)
    interpreter.resize_tensor_input(index, [2, 128, 128, 3])
    interpreter.allocate_tensors()
    interpreter.set_tensor(index, x2)
    interpreter.invoke()
    raw = {name.removeprefix("level_"): interpreter.get_tensor(i) for name, i in outputs.items()}
    ref2 = {k: v.numpy() for k, v in model(x2, training=False).items()}
    deltas = {"raw batch 2": _assert_equal_to_keras(raw, ref2)}

    deltas["run batch 2"] = _assert_equal_to_keras(lite.run(x2), ref2)
    x1 = make_images(1, 128, 128, seed=12)
    deltas["run batch 1"] = _assert_equal_to_keras(lite.run(x1), model(x1, training=False))
    deltas["run batch 2 again"] = _assert_equal_to_keras(lite.run(x2), ref2)  # after batch 1, same flatbuffer
    print(f"TFLite 49XS 128x128, max |delta|: {deltas}")
    with pytest.raises(ArgumentError, match="Nx128x128x3"):
        lite.run(make_images(1, 64, 64))  # H, W are fixed at conversion


@pytest.mark.filterwarnings(LITE_WARNING)
def test_tflite_fixed_batch_and_arguments(mini, make_images, randomize_norms):
    model = sgt.compile(specgraph.plan(specgraph.load(mini()), input_size=64))
    randomize_norms(model, seed=6)
    for bad in (0, -1, True, 1.0, "2"):
        with pytest.raises(ArgumentError, match="batch"):
            sgt.to_tflite(model, (64, 64), batch=bad)
    lite = sgt.to_tflite(model, (64, 64), batch=1)
    runner = tf.lite.Interpreter(model_content=lite.content).get_signature_runner("serving_default")
    assert list(runner.get_input_details()["images"]["shape_signature"]) == [1, 64, 64, 3]
    assert sorted(runner.get_output_details()) == NAMES
    x = make_images(1, 64, 64, seed=3)
    ref = model(x, training=False)
    got = lite.run(x)
    assert sorted(got) == LEVELS
    assert all(np.abs(got[k] - ref[k].numpy()).max() <= 1e-4 for k in LEVELS)
    with pytest.raises(ArgumentError, match="1x64x64x3"):
        lite.run(make_images(2, 64, 64))


def test_savedmodel_signature_names_outputs_level_k(mini, make_images, randomize_norms, tmp_path):
    model = sgt.compile(specgraph.plan(specgraph.load(mini()), input_size=64))
    randomize_norms(model, seed=7)
    assert sorted(sgt.serving_function(model).structured_outputs) == NAMES
    path = str(tmp_path / "saved")
    sgt.export_saved_model(model, path)
    x = make_images(2, 64, 96, seed=8)
    ref = {k: v.numpy() for k, v in model(x, training=False).items()}

    serving = tf.saved_model.load(path).signatures["serving_default"]
    assert sorted(serving.structured_outputs) == NAMES
    assert [s.shape.as_list() for s in serving.structured_input_signature[1].values()] == [[None, None, None, 3]]
    out = serving(images=tf.constant(x))
    assert sorted(out) == NAMES
    for k in LEVELS:
        np.testing.assert_allclose(out[f"level_{k}"].numpy(), ref[k], rtol=1e-5, atol=1e-6 * np.abs(ref[k]).max())

    keras_loaded = tf_keras.models.load_model(path)  # the model keeps its own level keys
    again = keras_loaded(x, training=False)
    assert sorted(again) == LEVELS
    assert all(np.array_equal(again[k].numpy(), ref[k]) for k in LEVELS)


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


def test_a_decoder_alone_serves_emits_and_converts_on_its_feature_maps(randomize_norms, tmp_path):
    """FPN alone: the SavedModel signature and the TFLite flatbuffer take features_3 .. features_5 (a TFLite one
    sized for a 100x150 image: ceil(100 / 2**level)), the emitted source builds the same model, and every one gives
    the model's outputs."""
    plan = specgraph.plan("fpn", "default", (100, 150))
    model = sgt.compile(plan)
    randomize_norms(model, seed=4)
    rng = np.random.default_rng(5)
    # features of a 100x150 image: 13x19, 7x10, 4x5
    x = {level: rng.normal(0.0, 1.0, (2, -(-100 // 2 ** int(level)), -(-150 // 2 ** int(level)),
                                      plan.node(name).channels)).astype(np.float32) for level, name in plan.inputs}
    ref = {k: v.numpy() for k, v in model(x, training=False).items()}
    path = str(tmp_path / "saved")
    sgt.export_saved_model(model, path)
    serving = tf.saved_model.load(path).signatures["serving_default"]
    assert sorted(serving.structured_input_signature[1]) == ["features_3", "features_4", "features_5"]
    out = serving(**{f"features_{k}": tf.constant(v) for k, v in x.items()})
    lite = sgt.to_tflite(model, (100, 150))
    assert lite.input_shapes == {"3": (None, 13, 19, 512), "4": (None, 7, 10, 1024), "5": (None, 4, 5, 2048)}
    converted = lite.run(x)
    emitted = sgt.emitted_model(emit(plan, "tensorflow"), model)(x, training=False)
    for k in ref:
        scale = np.abs(ref[k]).max()
        np.testing.assert_allclose(out[f"level_{k}"].numpy(), ref[k], rtol=0, atol=1e-6 * scale)
        np.testing.assert_allclose(converted[k], ref[k], rtol=0, atol=1e-4 * scale)
        np.testing.assert_array_equal(emitted[k].numpy(), ref[k])
    with pytest.raises(ArgumentError, match=r"a decoder's flatbuffer takes \{level: features\} at levels 3, 4, 5"):
        lite.run(x["3"])
