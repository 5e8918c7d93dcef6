"""Against Model Garden itself (tf-models-official, installed by the test setup)."""

from __future__ import annotations

import pytest

import specgraph

pytestmark = [pytest.mark.slow, pytest.mark.modelgarden]


@pytest.fixture(scope="module")
def mg():
    spinenet = pytest.importorskip("official.vision.modeling.backbones.spinenet")
    spinenet_mobile = pytest.importorskip("official.vision.modeling.backbones.spinenet_mobile")
    return spinenet, spinenet_mobile


def test_ported_block_lists_plan_to_the_builtin_specs(mg) -> None:
    spinenet, mobile = mg
    ported = specgraph.from_modelgarden_tuples(spinenet.SPINENET_BLOCK_SPECS, spinenet.SCALING_MAP)
    builtin = specgraph.load("spinenet")
    assert list(ported.variants) == list(spinenet.SCALING_MAP)
    for variant in spinenet.SCALING_MAP:
        assert specgraph.plan(ported, variant, 640).hash == specgraph.plan(builtin, variant, 640).hash
    ported_mobile = specgraph.from_modelgarden_tuples(mobile.SPINENET_BLOCK_SPECS, mobile.SCALING_MAP,
                                                      family="mobile", se_ratio=0.2, expand_ratio=6)
    builtin_mobile = specgraph.load("spinenet_mobile")
    for variant in mobile.SCALING_MAP:
        assert specgraph.plan(ported_mobile, variant, 384).hash == specgraph.plan(builtin_mobile, variant, 384).hash
    # BlockSpec objects work as well as tuples
    objects = specgraph.from_modelgarden_tuples(spinenet.build_block_specs(), spinenet.SCALING_MAP)
    assert objects == ported


def test_ported_custom_list_errors_name_the_tuple(mg) -> None:
    bad = [*mg[0].SPINENET_BLOCK_SPECS[:3], (4, "bottleneck", (2, 9), False)]
    with pytest.raises(specgraph.SpecValidationError, match=r"block_specs\[3\]\.input_offsets\[1\]: offset 9"):
        specgraph.from_modelgarden_tuples(bad, mg[0].SCALING_MAP)


@pytest.mark.parametrize(
    ("family", "variant", "size", "min_level"),
    [
        ("spinenet", "49S", (256, 384), 3),
        ("spinenet", "49S", (256, 256), 2),
        ("spinenet_mobile", "49XS", (256, 256), 3),
    ],
)
def test_count_params_of_built_model_garden_models(mg, family, variant, size, min_level) -> None:
    import tf_keras

    spinenet, mobile = mg
    tf_keras.backend.clear_session()
    input_specs = tf_keras.layers.InputSpec(shape=[None, *size, 3])
    if family == "spinenet":
        cfg = spinenet.SCALING_MAP[variant]
        model = spinenet.SpineNet(input_specs=input_specs, min_level=min_level, max_level=7,
                                  endpoints_num_filters=cfg["endpoints_num_filters"],
                                  resample_alpha=cfg["resample_alpha"], block_repeats=cfg["block_repeats"],
                                  filter_size_scale=cfg["filter_size_scale"])
    else:
        cfg = mobile.SCALING_MAP[variant]
        model = mobile.SpineNetMobile(input_specs=input_specs, min_level=min_level, max_level=7,
                                      endpoints_num_filters=cfg["endpoints_num_filters"],
                                      block_repeats=cfg["block_repeats"], filter_size_scale=cfg["filter_size_scale"])
    plan = specgraph.plan(specgraph.load(family), variant, size, min_level, 7)
    s = specgraph.stats(plan)
    trainable = sum(int(v.shape.num_elements()) for v in model.trainable_weights)
    assert (model.count_params(), trainable) == (s.params, s.trainable_params)
    shapes = {k: tuple(v[1:]) for k, v in model.output_specs.items()}
    assert shapes == {lvl: (*plan.node(name).size, plan.node(name).channels) for lvl, name in plan.endpoints}
