"""ResNet-FPN as a spec (specs/resnet_fpn.toml): Model Garden's ResNet with its FPN decoder written as op blocks,
equal to Model Garden's ``ResNet`` + ``FPN`` (official/vision/modeling/decoders/fpn.py) in parameters and, given
their weights, outputs; with and without separable convs.

The expected counts are Model Garden's own ``count_params()``, measured on these machines
(../shared/reference/families-reference.md); the parity tests run Model Garden itself.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

import specgraph

RESNET = {"50": 23_561_152, "101": 42_605_504}
# The decoder alone; the same on ResNet-50 and -101 (it sees only the backbone's channels).
FPN = {False: 3_873_792, True: 1_267_456}  # by use_separable_conv
# Non-square and not a multiple of 128, batch 2. Model Garden's FPN upsamples by a plain x2 repeat and sums,
# so its levels 3..5 must halve exactly: a multiple of 32.
SIZE = (96, 160)


def _variant(depth: str, separable: bool) -> str:
    return f"{depth}-separable" if separable else depth


@pytest.mark.parametrize("depth", ["50", "101"])
@pytest.mark.parametrize("separable", [False, True])
def test_stats_equal_modelgarden(depth: str, separable: bool) -> None:
    stats = specgraph.stats(specgraph.plan("resnet_fpn", _variant(depth, separable), (640, 640)))
    assert stats.params == RESNET[depth] + FPN[separable]


def test_decoder_counts_by_hand() -> None:
    """The FPN's parameters node by node, hand-computed from Model Garden's layers (256 filters, biased convs):
    laterals 1x1 on 512/1024/2048 channels, three 3x3 post-hoc convs, two 3x3/s2 coarser convs, five norms."""
    rows = {r.name: r.params for r in specgraph.stats(specgraph.plan("resnet_fpn", "50", (256, 256))).nodes}
    assert [rows[f"lateral_{lv}"] for lv in (3, 4, 5)] == [c * 256 + 256 for c in (512, 1024, 2048)]
    assert rows["post_hoc_3"] == rows["coarser_7"] == 9 * 256 * 256 + 256
    assert rows["norm_6"] == 4 * 256 and rows["fpn_4"] == rows["fpn_3"] == 0
    sep = {r.name: r.params for r in specgraph.stats(specgraph.plan("resnet_fpn", "50-separable", (256, 256))).nodes}
    assert sep["lateral_5"] == 2048 + 2048 * 256 + 256  # depthwise 1x1, pointwise, bias
    assert sep["post_hoc_4"] == 9 * 256 + 256 * 256 + 256


def test_plan_is_the_decoder() -> None:
    """Hand-read from fpn.py: laterals on res3..res5, the top-down sums upsampled x2 nearest, post-hoc convs,
    coarser_6 from post_hoc_5 before its norm, coarser_7 from act(coarser_6), a norm on every output level."""
    plan = specgraph.plan("resnet_fpn", "50", (256, 384))
    plan.lint()
    node = plan.node
    assert [e.source for e in node("fpn_3").inputs] == ["fpn_4", "lateral_3"]
    assert [op.describe() for op in node("fpn_3").inputs[0].ops] == ["up x2 nearest"]
    assert [op.describe() for op in node("coarser_7").ops] == ["act", "conv 3x3/s2 256->256"]
    assert node("coarser_6").inputs[0].source == "post_hoc_5" and node("coarser_6").fused_level == 5
    assert [name for _, name in plan.endpoints] == [f"endpoint_{lv}" for lv in range(3, 8)]
    assert {node(f"endpoint_{lv}").inputs[0].source for lv in range(3, 8)} == {f"norm_{lv}" for lv in range(3, 8)}
    assert [node(f"norm_{lv}").size for lv in range(3, 8)] == [(32, 48), (16, 24), (8, 12), (4, 6), (2, 3)]
    assert "res2" in plan and not plan.pruned  # res2 feeds res3: Model Garden builds it too


def test_drawn_with_its_decoder() -> None:
    svg = specgraph.render_svg(specgraph.plan("resnet_fpn", "50", (256, 256)))
    for name in ("res5", "lateral_3", "post_hoc_4", "coarser_7", "norm_7"):
        assert name in svg
    dot = specgraph.render_dot(specgraph.plan("resnet_fpn", "50", (256, 256)))
    assert "sepconv" not in dot and "lateral_5" in dot


@pytest.mark.parametrize(("edit", "path", "words"), [
    (lambda t: t.replace('{ name = "lateral_4", level = 4, inputs', '{ name = "lateral_4", level = 4, type = '
                         '"bottleneck", inputs'), "blocks[1]", "exactly one of the two"),
    (lambda t: t.replace('inputs = ["post_hoc_3"], ops = [{ op = "norm" }]', 'inputs = ["post_hoc_3"], ops = '
                         '[{ op = "norm", kernel = 3 }]'), "blocks[10].ops[0]", "op 'norm' takes no kernel"),
    (lambda t: t.replace('{ op = "act" }', '{ op = "gelu" }'), "blocks[9].ops[0].op", "'separable_conv'"),
    (lambda t: t.replace('{ name = "lateral_4", level = 4, inputs', '{ name = "lateral_4", level = 4, repeats = 2, '
                         'inputs'), "blocks[1]", "an op block (`ops`) has none"),
    (lambda t: t.replace('name = "lateral_3", level = 3, inputs = ["c3"], filters = 256, ops = [{ op = "conv", '
                         'kernel = 1,', 'name = "lateral_3", level = 0, inputs = ["c3"], filters = 256, ops = [{ '
                         'op = "conv", kernel = 1, stride = 2,'), "blocks[0].ops", "fused at level -1"),
    (lambda t: t.replace('name = "fpn_4", level = 4, inputs = ["lateral_5", "lateral_4"], filters = 256,',
                         'name = "fpn_4", level = 6, inputs = ["lateral_5", "lateral_4"],'), "blocks[3].level",
     "give the block `filters`"),
    (lambda t: t.replace('separable = true\n', 'separable = 1\n', 1), 'variants.separable.separable',
     "valid boolean"),
])
def test_bad_edits_are_located(tmp_path: Any, edit: Any, path: str, words: str,
                               assert_bad_edit_is_located: Any) -> None:
    assert_bad_edit_is_located(tmp_path, "fpn", edit, path, words, "default", (64, 64), backbone="resnet")


@pytest.mark.parametrize("fmt", ["toml", "yaml", "json"])
def test_spec_round_trips_through_text(fmt: str) -> None:
    """Op blocks, block widths and the separable switch survive writing."""
    spec = specgraph.load("resnet_fpn")
    again = specgraph.load(spec.dumps(fmt) + "\n")
    assert again == spec
    for variant in ("50", "101-separable"):
        assert specgraph.plan(again, variant, (64, 64)).hash == specgraph.plan(spec, variant, (64, 64)).hash


# --- the backends against Model Garden itself ---

torch = pytest.importorskip("torch")  # torch before tensorflow: torchvision crashes when imported after it


def _randomise(models: list[Any], seed: int) -> None:
    rng = np.random.default_rng(seed)
    for model in models:
        for w in model.weights:
            base = 1.0 if ("variance" in w.name or "gamma" in w.name) else 0.0
            w.assign(base + 0.1 * rng.standard_normal(w.shape).astype(np.float32))


@pytest.fixture(scope="module")
def modelgarden_resnet_fpn() -> dict[bool, tuple[Any, Any]]:
    """Model Garden's ResNet-50 and an FPN on it (plain and separable) at SIZE, random non-trivial weights."""
    tf_keras = pytest.importorskip("tf_keras")
    resnet = pytest.importorskip("official.vision.modeling.backbones.resnet")
    fpn = pytest.importorskip("official.vision.modeling.decoders.fpn")
    backbone = resnet.ResNet(model_id=50, input_specs=tf_keras.layers.InputSpec(shape=[None, *SIZE, 3]))
    decoders = {sep: fpn.FPN(input_specs=backbone.output_specs, min_level=3, max_level=7, use_separable_conv=sep)
                for sep in (False, True)}
    _randomise([backbone, *decoders.values()], 0)
    return {sep: (backbone, decoder) for sep, decoder in decoders.items()}


@pytest.mark.slow
@pytest.mark.modelgarden
@pytest.mark.parametrize("separable", [False, True])
@pytest.mark.parametrize("backend", ["torch", "tensorflow"])
def test_outputs_equal_modelgarden(modelgarden_resnet_fpn: Any, backend: str, separable: bool) -> None:
    plugin = specgraph.get_backend(backend)
    backbone, decoder = modelgarden_resnet_fpn[separable]
    assert backbone.count_params() + decoder.count_params() == RESNET["50"] + FPN[separable]
    images = np.random.default_rng(1).standard_normal((2, *SIZE, 3)).astype(np.float32)
    reference = {k: v.numpy() for k, v in decoder(backbone(images, training=False), training=False).items()}
    model = plugin.compile(specgraph.plan("resnet_fpn", _variant("50", separable), SIZE))
    assert plugin.count_parameters(model) == RESNET["50"] + FPN[separable]
    before = plugin.predict(model, images.transpose(0, 3, 1, 2))
    plugin.load_modelgarden_weights(model, (backbone, decoder))
    after = plugin.predict(model, images.transpose(0, 3, 1, 2))
    assert sorted(after) == sorted(reference) == ["3", "4", "5", "6", "7"]
    for level, ref in reference.items():
        got = after[level].transpose(0, 2, 3, 1)
        scale = float(np.abs(ref).max())
        assert float(np.abs(before[level].transpose(0, 2, 3, 1) - ref).max()) / scale > 1e-2  # not equal by chance
        assert float(np.abs(got - ref).max()) / scale <= 1e-4, (backend, level)


@pytest.mark.modelgarden
@pytest.mark.parametrize("backend", ["torch", "tensorflow"])
def test_decoder_is_needed_and_checked(modelgarden_resnet_fpn: Any, backend: str) -> None:
    """The backbone alone is refused (the op blocks' weights are the decoder's), and a decoder missing a layer
    is named; nothing is loaded either way."""
    plugin = specgraph.get_backend(backend)
    backbone, _ = modelgarden_resnet_fpn[False]
    model = plugin.compile(specgraph.plan("resnet_fpn", "50", SIZE))
    images = np.random.default_rng(2).standard_normal((1, *SIZE, 3)).astype(np.float32)
    before = plugin.predict(model, images.transpose(0, 3, 1, 2))
    with pytest.raises(specgraph.WeightsError, match="give the Model Garden backbone and decoder"):
        plugin.load_modelgarden_weights(model, backbone)
    with pytest.raises(specgraph.WeightsError) as info:  # the separable FPN: same layer names, other variables
        plugin.load_modelgarden_weights(model, (backbone, modelgarden_resnet_fpn[True][1]))
    assert any("lateral_3" in str(p) for p in info.value.problems)
    after = plugin.predict(model, images.transpose(0, 3, 1, 2))
    assert all(np.array_equal(before[k], after[k]) for k in before)


def test_torchvision_adapter_takes_it() -> None:
    """One width at every level (256), so the FPN's outputs enter torchvision detectors as they are."""
    pytest.importorskip("specgraph_torch")
    from specgraph_torch.detection import TorchvisionBackbone

    model = specgraph.compile(specgraph.plan("resnet_fpn", "50", (64, 64)), backend="torch")
    assert TorchvisionBackbone(model).out_channels == 256
    assert model.feature_info.channels() == [256] * 5 and model.feature_info.reduction() == [8, 16, 32, 64, 128]


@pytest.mark.slow
@pytest.mark.modelgarden
@pytest.mark.parametrize("separable", [False, True])
@pytest.mark.parametrize("backend", ["torch", "tensorflow"])
def test_the_decoder_alone_equals_modelgardens_fpn_on_the_same_features(modelgarden_resnet_fpn: Any, backend: str,
                                                                        separable: bool) -> None:
    """specs/fpn.toml planned alone takes {level: features}: loaded from Model Garden's FPN alone, it gives that
    FPN's outputs on ResNet-50's features, with the count of Model Garden's FPN."""
    plugin = specgraph.get_backend(backend)
    backbone, decoder = modelgarden_resnet_fpn[separable]
    images = np.random.default_rng(4).standard_normal((2, *SIZE, 3)).astype(np.float32)
    features = {k: v.numpy() for k, v in backbone(images, training=False).items()}
    reference = {k: v.numpy() for k, v in decoder(features, training=False).items()}
    model = plugin.compile(specgraph.plan("fpn", "separable" if separable else "default", SIZE))
    assert plugin.count_parameters(model) == FPN[separable]
    nchw = {level: features[level].transpose(0, 3, 1, 2) for level in ("3", "4", "5")}
    before = plugin.predict(model, nchw)
    plugin.load_modelgarden_weights(model, decoder)
    after = plugin.predict(model, nchw)
    assert sorted(after) == sorted(reference) == ["3", "4", "5", "6", "7"]
    for level, ref in reference.items():
        scale = float(np.abs(ref).max())
        assert float(np.abs(before[level].transpose(0, 2, 3, 1) - ref).max()) / scale > 1e-2  # not equal by chance
        assert float(np.abs(after[level].transpose(0, 2, 3, 1) - ref).max()) / scale <= 1e-4, (backend, level)
