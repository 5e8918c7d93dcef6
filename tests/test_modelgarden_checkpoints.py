"""Model Garden checkpoints as users have them, loaded into both backends.

Model Garden itself writes them here: a RetinaNet built by its own factory from its
``retinanet_mobile_coco`` experiment, trained one step, saved by ``tf.train.CheckpointManager``
beside its optimizer (the backbone is found inside by structure); a backbone-only checkpoint
written with ``save()`` (which adds ``save_counter``); SavedModel directories of the backbone and of
the RetinaNet (``tf.saved_model.save``); and the same checkpoint read as another variant, which must
fail naming specgraph's weights.
"""

from __future__ import annotations

import numpy as np
import pytest

import specgraph

torch = pytest.importorskip("torch")
specgraph_torch = pytest.importorskip("specgraph_torch")
tf = pytest.importorskip("tensorflow")
sgt = pytest.importorskip("specgraph_tensorflow")

pytestmark = [pytest.mark.slow, pytest.mark.modelgarden]

SIZE = 128
VARIANT = "49XS"


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """(RetinaNet, training checkpoint path, backbone-only checkpoint path), all written by Model Garden code."""
    import tf_keras
    from official.core import exp_factory
    from official.vision.modeling import factory as model_factory

    config = exp_factory.get_exp_config("retinanet_mobile_coco").task.model
    config.override({"input_size": [SIZE, SIZE, 3], "backbone": {"spinenet_mobile": {"model_id": VARIANT}},
                     "norm_activation": {"use_sync_bn": False}}, is_strict=True)
    retinanet = model_factory.build_retinanet(tf_keras.layers.InputSpec(shape=[None, SIZE, SIZE, 3]), config)
    optimizer = tf_keras.optimizers.SGD(0.01, momentum=0.9)
    images = np.random.default_rng(0).normal(size=(2, SIZE, SIZE, 3)).astype(np.float32)
    with tf.GradientTape() as tape:  # one training step: weights and BN statistics move off their init
        outputs = retinanet(images, training=True)
        loss = sum(tf.reduce_mean(tf.square(t)) for key in ("cls_outputs", "box_outputs")
                   for t in outputs[key].values())
    grads = tape.gradient(loss, retinanet.trainable_variables)
    optimizer.apply_gradients(zip(grads, retinanet.trainable_variables, strict=True))

    folder = tmp_path_factory.mktemp("checkpoints")
    step = tf.Variable(1, dtype=tf.int64)
    manager = tf.train.CheckpointManager(tf.train.Checkpoint(model=retinanet, optimizer=optimizer, global_step=step),
                                         str(folder / "train"), max_to_keep=1)
    training = manager.save()
    backbone_only = tf.train.Checkpoint(model=retinanet.backbone).save(str(folder / "backbone" / "ckpt"))
    return retinanet, training, backbone_only


@pytest.fixture(scope="module")
def saved_models(trained, tmp_path_factory):
    """SavedModel directories written by ``tf.saved_model.save``: the trained backbone, and the whole RetinaNet.

    The RetinaNet is saved without Keras's per-layer call traces (``save_traces=False``, what
    ``model.save`` offers): they are functions beside the variables, which the reader never reads,
    and tracing the detector's ~400 layers takes minutes here (traced, it loads the same)."""
    from tf_keras.src.saving.legacy.saved_model.utils import keras_option_scope

    retinanet = trained[0]
    folder = tmp_path_factory.mktemp("savedmodels")
    paths = {"backbone": str(folder / "backbone"), "retinanet": str(folder / "retinanet")}
    tf.saved_model.save(retinanet.backbone, paths["backbone"])
    with keras_option_scope(save_traces=False):
        tf.saved_model.save(retinanet, paths["retinanet"])
    return paths


def _plan(variant: str = VARIANT) -> specgraph.Plan:
    return specgraph.plan("spinenet_mobile", variant, SIZE)


def _images() -> np.ndarray:
    return np.random.default_rng(1).normal(size=(2, SIZE, SIZE, 3)).astype(np.float32)


def _assert_close(got: dict, want: dict, tolerance: float) -> None:
    errors = {}
    for level, expected in want.items():
        expected = np.asarray(expected)
        errors[level] = float(np.abs(np.asarray(got[level]) - expected).max()) / max(float(np.abs(expected).max()), 1.0)
    print(f"max |delta| / max(|ref|, 1) per level: {errors}")
    assert max(errors.values()) <= tolerance, errors


@pytest.mark.parametrize("which", ["training", "backbone_only"])
def test_torch_loads_modelgarden_checkpoints(trained, which):
    retinanet, training, backbone_only = trained
    model = specgraph_torch.compile(_plan(), activation="swish").eval()  # the recipe's norm_activation
    specgraph_torch.load_modelgarden_weights(model, training if which == "training" else backbone_only)
    want = {k: v.numpy() for k, v in retinanet.backbone(_images(), training=False).items()}
    with torch.no_grad():
        got = model(torch.from_numpy(_images().transpose(0, 3, 1, 2)))
    _assert_close({k: v.numpy().transpose(0, 2, 3, 1) for k, v in got.items()}, want, 1e-4)


@pytest.mark.parametrize("loader", ["load_weights", "load_modelgarden_weights"])
def test_tensorflow_loads_a_modelgarden_training_checkpoint(trained, loader):
    """``load_modelgarden_weights`` is the torch backend's name for the same thing."""
    retinanet, training, _ = trained
    model = sgt.compile(_plan(), activation="swish")
    getattr(sgt, loader)(model, training)
    want = {k: v.numpy() for k, v in retinanet.backbone(_images(), training=False).items()}
    _assert_close({k: v.numpy() for k, v in model(_images(), training=False).items()}, want, 1e-5)


def test_tensorflow_load_modelgarden_weights_refuses_specgraph_named_arrays(tmp_path):
    model = sgt.compile(_plan())
    arrays = {k: v.numpy() for k, v in sgt.weights_dict(model).items()}
    for source in (arrays, str(tmp_path / "w.npz")):
        with pytest.raises(specgraph.ArgumentError, match="loads with load_weights"):
            sgt.load_modelgarden_weights(model, source)


def test_another_variant_is_refused_naming_specgraph_weights(trained):
    _, training, _ = trained
    torch_model = specgraph_torch.compile(_plan("49S"))
    keras_model = sgt.compile(_plan("49S"))
    before = [v.numpy().copy() for v in keras_model.weights]
    torch_before = {k: v.clone() for k, v in torch_model.state_dict().items()}
    for load, model in ((specgraph_torch.load_modelgarden_weights, torch_model),
                        (sgt.load_modelgarden_weights, keras_model)):
        with pytest.raises(specgraph.WeightsError) as info:
            load(model, training)
        problems = info.value.problems
        assert "another network than spinenet_mobile 49S" in problems[0].message
        paths = {p.path for p in problems[1:]}
        assert "stem/op0/kernel" in paths and all(p.file == training for p in problems)
        assert any(p.path.startswith("sp1/") for p in problems[1:])
    assert all(np.array_equal(a, b.numpy()) for a, b in zip(before, keras_model.weights, strict=True))
    assert all(torch.equal(torch_before[k], v) for k, v in torch_model.state_dict().items())


@pytest.mark.parametrize("which", ["backbone", "retinanet"])
def test_both_backends_load_a_savedmodel_directory(trained, saved_models, which):
    retinanet = trained[0]
    want = {k: v.numpy() for k, v in retinanet.backbone(_images(), training=False).items()}
    torch_model = specgraph_torch.compile(_plan(), activation="swish").eval()
    specgraph_torch.load_modelgarden_weights(torch_model, saved_models[which])
    with torch.no_grad():
        got = torch_model(torch.from_numpy(_images().transpose(0, 3, 1, 2)))
    _assert_close({k: v.numpy().transpose(0, 2, 3, 1) for k, v in got.items()}, want, 1e-4)
    keras_model = sgt.compile(_plan(), activation="swish")
    sgt.load_weights(keras_model, saved_models[which])
    _assert_close({k: v.numpy() for k, v in keras_model(_images(), training=False).items()}, want, 1e-5)


def test_a_savedmodel_of_another_variant_is_refused_naming_specgraph_weights(saved_models, tmp_path):
    keras_model = sgt.compile(_plan("49S"))
    before = [v.numpy().copy() for v in keras_model.weights]
    with pytest.raises(specgraph.WeightsError) as info:
        sgt.load_weights(keras_model, saved_models["backbone"])
    problems = info.value.problems
    assert "another network than spinenet_mobile 49S" in problems[0].message
    # SavedModels key most variables "variables/N": the differences are still found, by specgraph's names.
    assert "stem/op0/kernel" in {p.path for p in problems[1:]}
    assert all(p.file == saved_models["backbone"] for p in problems)
    assert all(np.array_equal(a, b.numpy()) for a, b in zip(before, keras_model.weights, strict=True))
    (tmp_path / "saved_model.pb").write_bytes(b"")  # a SavedModel directory without variables
    with pytest.raises(specgraph.WeightsError, match="cannot read the SavedModel's variables"):
        sgt.load_weights(keras_model, str(tmp_path))
