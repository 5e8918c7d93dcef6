"""Model Garden integration: a `type: specgraph` backbone in an experiment config builds and trains a RetinaNet."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf
import tf_keras

pytestmark = [pytest.mark.slow, pytest.mark.modelgarden]

SIZE = 128
EXPERIMENT = {
    "task": {
        "model": {
            "input_size": [SIZE, SIZE, 3],
            "norm_activation": {"use_sync_bn": False, "activation": "swish"},
            "backbone": {
                "type": "specgraph",
                "specgraph": {"spec": "spinenet", "model_id": "49", "min_level": 3, "max_level": 7,
                              "stochastic_depth_drop_rate": 0.2, "activation": "swish"},
            },
        }
    }
}


@pytest.fixture(scope="module")
def registered():
    from specgraph_tensorflow import modelgarden

    modelgarden.register()
    modelgarden.register()  # idempotent
    return modelgarden


def test_experiment_config_builds_and_trains_retinanet(registered):
    import specgraph_tensorflow as sgt
    from official.core import exp_factory
    from official.vision.configs import backbones
    from official.vision.modeling import factory as model_factory
    from official.vision.modeling.backbones import factory as backbone_factory

    # (retinanet_spinenet_coco's restrictions name backbone.spinenet, so start from the ResNet-FPN one;
    # its FPN decoder reads the backbone's output_specs.)
    config = exp_factory.get_exp_config("retinanet_resnetfpn_coco")
    config.override(EXPERIMENT, is_strict=True)
    config.validate()
    model_config = config.task.model
    assert model_config.backbone.get().spec == "spinenet"
    assert model_config.backbone.as_dict()["specgraph"]["model_id"] == "49"

    input_specs = tf_keras.layers.InputSpec(shape=[None, SIZE, SIZE, 3])
    l2 = tf_keras.regularizers.l2(2e-5)
    retinanet = model_factory.build_retinanet(input_specs, model_config, l2_regularizer=l2)
    backbone = retinanet.backbone
    assert isinstance(backbone, sgt.SpecgraphModel)
    assert backbone.plan.variant == "49" and backbone.stochastic_depth_drop_rate == 0.2
    assert backbone.get_config()["activation"] == "swish"  # the override, which norm_activation agrees with

    reference = backbone_factory.build_backbone(
        input_specs, backbones.Backbone(type="spinenet", spinenet=backbones.SpineNet(
            model_id="49", stochastic_depth_drop_rate=0.2, min_level=3, max_level=7)),
        model_config.norm_activation, l2)
    assert type(reference).__name__ == "SpineNet"
    assert backbone.count_params() == reference.count_params() == 21_920_192
    assert len(backbone.losses) == len(reference.losses)  # the L2 regularizer reached every conv

    images = np.random.default_rng(0).normal(size=(2, SIZE, SIZE, 3)).astype(np.float32)
    before = [v.numpy().copy() for v in backbone.trainable_variables[:3]]
    optimizer = tf_keras.optimizers.SGD(0.01)
    with tf.GradientTape() as tape:
        outputs = retinanet(images, training=True)
        loss = sum(tf.reduce_mean(tf.square(t)) for key in ("cls_outputs", "box_outputs")
                   for t in outputs[key].values()) + tf.add_n(retinanet.losses)
    assert sorted(outputs["cls_outputs"]) == ["3", "4", "5", "6", "7"]
    assert outputs["box_outputs"]["7"].shape[:3] == (2, 1, 1)
    grads = tape.gradient(loss, retinanet.trainable_variables)
    assert all(g is not None for g in grads)
    optimizer.apply_gradients(zip(grads, retinanet.trainable_variables, strict=True))
    assert any(not np.array_equal(b, v.numpy()) for b, v in zip(before, backbone.trainable_variables, strict=True))


def test_spec_file_path_works_as_spec(registered, tmp_path):
    from official.vision.configs import backbones, common
    from official.vision.modeling.backbones import factory as backbone_factory

    import specgraph

    path = tmp_path / "mobile.toml"
    path.write_text(specgraph.load("spinenet_mobile").dumps("toml"))
    config = backbones.Backbone()
    config.override({"type": "specgraph", "specgraph": {"spec": str(path), "model_id": "49XS"}})
    model = backbone_factory.build_backbone(tf_keras.layers.InputSpec(shape=[None, None, None, 3]), config,
                                            common.NormActivation(activation="relu"))
    assert model.count_params() == 869_400  # Model Garden's Mobile-49XS at a fixed size (sp11 included)
    assert model(np.zeros((1, 96, 64, 3), np.float32))["3"].shape == (1, 12, 8, 24)


def test_factory_builds_the_spec_network_or_refuses(registered, tmp_path):
    """A swish spec through the factory is the network a direct compile gives (same weights, <= 1e-5); a
    norm_activation that contradicts the spec is an error naming both, never a silently different network."""
    import specgraph_tensorflow as sgt
    from official.vision.configs import backbones, common
    from official.vision.modeling.backbones import factory as backbone_factory

    import specgraph

    data = specgraph.load("spinenet_mobile").to_dict()
    data.update(name="mobile_swish", activation="swish")
    path = tmp_path / "mobile_swish.yaml"
    path.write_text(specgraph.load(data).dumps("yaml"))
    config = backbones.Backbone()
    config.override({"type": "specgraph", "specgraph": {"spec": str(path), "model_id": "49XS"}})
    specs = tf_keras.layers.InputSpec(shape=[None, 96, 96, 3])
    built = backbone_factory.build_backbone(specs, config, common.NormActivation(activation="swish"))
    direct = sgt.compile(specgraph.plan(str(path), "49XS", 96))
    assert built.get_config()["activation"] == direct.plan.activation == "swish"
    sgt.load_weights(built, {k: v.numpy() for k, v in sgt.weights_dict(direct).items()})
    images = np.random.default_rng(1).normal(size=(2, 96, 96, 3)).astype(np.float32)
    got, want = built(images, training=False), direct(images, training=False)
    for level in want:
        scale = float(np.abs(want[level]).max())
        assert float(np.abs(got[level] - want[level]).max()) <= 1e-5 * max(scale, 1.0)

    with pytest.raises(specgraph.BackendError) as info:
        backbone_factory.build_backbone(specs, config, common.NormActivation(activation="relu",
                                                                             norm_epsilon=1e-5))
    paths = {p.path for p in info.value.problems}
    assert paths == {"norm_activation.activation", "norm_activation.norm_epsilon"}
    assert "'relu' but the spec 'mobile_swish' says 'swish'" in str(info.value)


def _retinanet(size: tuple[int, int], backbone: dict, decoder: dict | None = None) -> tf_keras.Model:
    """Model Garden's ResNet-FPN RetinaNet config with this backbone (and decoder), built by its factory."""
    from official.core import exp_factory
    from official.vision.modeling import factory as model_factory

    config = exp_factory.get_exp_config("retinanet_resnetfpn_coco")
    model = {"input_size": [*size, 3], "backbone": backbone, **({"decoder": decoder} if decoder else {})}
    config.override({"task": {"model": model}}, is_strict=True)
    config.validate()
    return model_factory.build_retinanet(tf_keras.layers.InputSpec(shape=[None, *size, 3]), config.task.model)


def _randomise(weights: list) -> None:
    """Random values in every weight, BN statistics too, so a mis-mapped one would show."""
    rng = np.random.default_rng(3)
    for w in weights:
        w.assign(0.1 * rng.standard_normal(w.shape).astype(np.float32) + ("variance" in w.name or "gamma" in w.name))


def _assert_same_detections(got: dict, before: dict, want: dict) -> None:
    """Class and box outputs at levels 3..7 equal the reference's (<= 1e-4 relative), and differed before."""
    for key in ("cls_outputs", "box_outputs"):
        assert sorted(got[key]) == sorted(want[key]) == ["3", "4", "5", "6", "7"]
        for level, ref in want[key].items():
            scale = float(np.abs(ref).max())
            assert float(np.abs(before[key][level] - ref).max()) > 1e-2 * scale  # not equal by chance
            assert float(np.abs(got[key][level] - ref).max()) <= 1e-4 * scale, (key, level)


def test_resnet_spec_in_modelgardens_resnet_fpn_retinanet(registered):
    """`spec: resnet` in Model Garden's own ResNet-50-FPN RetinaNet config: the same detector as with Model
    Garden's ResNet (every parameter; Model Garden's FPN on the spec's level 3..5 endpoints), and with the
    same weights (the backbone's through load_modelgarden_weights) the same class and box outputs."""
    import specgraph_tensorflow as sgt

    size = (96, 160)  # non-square; Model Garden's FPN adds 2x-upsampled maps, so a multiple of 2**5
    mine = _retinanet(size, {"type": "specgraph", "specgraph": {"spec": "resnet", "model_id": "50", "min_level": 3,
                                                                "max_level": 5}})
    reference = _retinanet(size, {"type": "resnet", "resnet": {"model_id": 50}})
    assert isinstance(mine.backbone, sgt.SpecgraphModel) and type(reference.backbone).__name__ == "ResNet"
    images = np.random.default_rng(2).normal(size=(2, *size, 3)).astype(np.float32)
    reference(images, training=False)  # builds both detectors' heads
    before = mine(images, training=False)
    assert mine.count_params() == reference.count_params()
    assert mine.backbone.count_params() == 23_561_152 and mine.decoder.count_params() == 3_873_792

    _randomise(reference.backbone.weights)
    want = reference(images, training=False)
    sgt.load_modelgarden_weights(mine.backbone, reference.backbone)
    mine.decoder.set_weights(reference.decoder.get_weights())
    mine.head.set_weights(reference.head.get_weights())
    _assert_same_detections(mine(images, training=False), before, want)


def test_resnet_nasfpn_spec_in_modelgardens_retinanet(registered):
    """`spec: resnet_nasfpn` as the backbone with Model Garden's `identity` decoder: the same RetinaNet as Model
    Garden's ResNet-50 + NAS-FPN (num_repeats 3) in every parameter, and with the same weights (backbone and
    decoder loaded from Model Garden's detector itself) the same class and box outputs."""
    import specgraph_tensorflow as sgt

    size = (128, 256)  # Model Garden's NAS-FPN upsamples level 7 to 3 by plain repeats: a multiple of 2**7
    mine = _retinanet(size, {"type": "specgraph", "specgraph": {"spec": "resnet_nasfpn", "model_id": "3"}},
                      {"type": "identity"})
    reference = _retinanet(size, {"type": "resnet", "resnet": {"model_id": 50}},
                           {"type": "nasfpn", "nasfpn": {"num_repeats": 3}})
    images = np.random.default_rng(2).normal(size=(2, *size, 3)).astype(np.float32)
    reference(images, training=False)  # builds both detectors' heads
    before = mine(images, training=False)
    assert isinstance(mine.backbone, sgt.SpecgraphModel) and mine.decoder is None
    assert mine.count_params() == reference.count_params()
    assert mine.backbone.count_params() == 23_561_152 + 13_334_528
    _randomise(reference.backbone.weights + reference.decoder.weights)
    want = reference(images, training=False)
    sgt.load_modelgarden_weights(mine.backbone, reference)  # a detection model: its backbone and decoder
    mine.head.set_weights(reference.head.get_weights())
    _assert_same_detections(mine(images, training=False), before, want)


# NAS-FPN goes through the same builder: its outputs equal Model Garden's in test_nasfpn.py and in the RetinaNet
# above, and the decoder alone equals its composition in tests/torch/test_decoders_alone.py (two more RetinaNets
# here would cost minutes of CI).
@pytest.mark.parametrize(("decoder", "reference_decoder", "size", "params"), [
    ({"spec": "fpn"}, {"type": "fpn", "fpn": {}}, (96, 160), 3_873_792),
])
def test_decoder_specs_in_modelgardens_retinanet_on_its_resnet(registered, decoder: dict, reference_decoder: dict,
                                                               size: tuple[int, int], params: int):
    """`decoder: {type: specgraph, specgraph: {spec: fpn}}` (and NAS-FPN) on Model Garden's own ResNet-50 in its
    RetinaNet: the same detector as with Model Garden's decoder in every parameter, and with the same weights (the
    decoder's through load_modelgarden_weights from Model Garden's decoder alone) the same class and box outputs."""
    import specgraph_tensorflow as sgt

    resnet = {"type": "resnet", "resnet": {"model_id": 50}}
    mine = _retinanet(size, resnet, {"type": "specgraph", "specgraph": decoder})
    reference = _retinanet(size, resnet, reference_decoder)
    assert isinstance(mine.decoder, sgt.SpecgraphModel) and mine.decoder.plan.inputs
    images = np.random.default_rng(2).normal(size=(2, *size, 3)).astype(np.float32)
    reference(images, training=False)  # builds both detectors' heads
    before = mine(images, training=False)
    assert mine.count_params() == reference.count_params()
    assert mine.decoder.count_params() == reference.decoder.count_params() == params
    _randomise(reference.backbone.weights + reference.decoder.weights)
    want = reference(images, training=False)
    mine.backbone.set_weights(reference.backbone.get_weights())
    sgt.load_modelgarden_weights(mine.decoder, reference.decoder)
    mine.head.set_weights(reference.head.get_weights())
    _assert_same_detections(mine(images, training=False), before, want)
