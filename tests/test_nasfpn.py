"""ResNet-50 + NAS-FPN as a spec (specs/resnet_nasfpn.toml): a repeated cell of op blocks with global-attention
and sum fusion, equal to Model Garden's ``ResNet`` + ``NASFPN`` (official/vision/modeling/decoders/nasfpn.py,
``NASFPN_BLOCK_SPECS``) in parameters for num_repeats 3, 5, 7, separable or not, and, given their weights, in
outputs in both backends.

The expected counts are Model Garden's own ``count_params()``, measured on these machines
(../shared/reference/families-reference.md); the parity tests run Model Garden itself.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

import specgraph

RESNET50 = 23_561_152
# The decoder alone, by (num_repeats, use_separable_conv).
NASFPN = {(3, False): 13_334_528, (5, False): 21_609_984, (7, False): 29_885_440,
          (3, True): 2_376_448, (5, True): 3_344_128, (7, True): 4_311_808}
# Non-square, batch 2. Model Garden's NAS-FPN upsamples by plain repeats (no crop) from level 7 to level 3, so its
# input must be a multiple of 128 (at any other size Model Garden itself fails).
SIZE = (128, 256)


def _variant(repeats: int, separable: bool) -> str:
    return f"{repeats}-separable" if separable else str(repeats)


@pytest.mark.parametrize(("repeats", "separable"), sorted(NASFPN))
def test_stats_equal_modelgarden(repeats: int, separable: bool) -> None:
    stats = specgraph.stats(specgraph.plan("resnet_nasfpn", _variant(repeats, separable), (640, 640)))
    assert stats.params == RESNET50 + NASFPN[repeats, separable]


def test_plan_is_the_searched_cell() -> None:
    """Hand-read from NASFPN_BLOCK_SPECS (level, combine_fn, input offsets, is_output) with num_repeats 3: offsets
    0..4 are the cell's inputs (levels 3..7), 5.. its blocks; attention gates the finer input by the coarser one's
    global max, so the coarser input is listed first; an output block adds the unused input of its level."""
    plan = specgraph.plan("resnet_nasfpn", "3", (256, 384))
    plan.lint()
    cells = [n for n in plan.nodes if n.name.startswith("nasfpn_")]
    assert len(cells) == 3 * 7
    node = plan.node
    want = {  # block: (level, fusion, sources) in repetition 2, whose inputs are repetition 1's outputs
        "b5": (4, "attention", ["nasfpn_1/b11", "nasfpn_1/b8"]),  # (4, attention, (1, 3)): P6 gates P4
        "b6": (4, "sum", ["nasfpn_1/b8", "nasfpn_2/b5"]),
        "b7": (3, "sum", ["nasfpn_1/b7", "nasfpn_2/b6"]),
        "b8": (4, "sum", ["nasfpn_2/b6", "nasfpn_2/b7"]),
        "b9": (5, "attention", ["nasfpn_2/b8", "nasfpn_2/b7", "nasfpn_1/b9"]),  # + the unused level-5 input
        "b10": (7, "attention", ["nasfpn_2/b9", "nasfpn_2/b6", "nasfpn_1/b10"]),  # + the unused level-7 input
        "b11": (6, "attention", ["nasfpn_2/b10", "nasfpn_2/b9"]),
    }
    for block, (level, fusion, sources) in want.items():
        n = node(f"nasfpn_2/{block}")
        assert (n.level, n.fusion, [e.source for e in n.inputs]) == (level, fusion, sources), block
        assert [op.describe() for op in n.ops] == ["act", "conv 3x3 256->256", "norm"]
    assert [e.source for e in node("nasfpn_1/b5").inputs] == ["p6", "p4"]
    assert [op.describe() for op in node("nasfpn_1/b5").inputs[0].ops] == ["up x4 nearest"]
    assert [op.describe() for op in node("nasfpn_1/b10").inputs[1].ops] == ["maxpool 8x8/s8"]  # one pool, as MG
    assert [op.describe() for op in node("p6").inputs[0].ops] == ["maxpool 2x2/s2"]
    assert [op.describe() for op in node("p3").ops] == ["conv 1x1 512->256", "norm"]
    outputs = {level: node(name).inputs[0].source for level, name in plan.endpoints}
    assert outputs == {"3": "nasfpn_3/b7", "4": "nasfpn_3/b8", "5": "nasfpn_3/b9", "6": "nasfpn_3/b11",
                       "7": "nasfpn_3/b10"}
    assert not any(n.output_level for n in cells[:14])  # only the last repetition's blocks are outputs


def test_global_attention_by_hand() -> None:
    """attention(x0, x1, x2) = x0 + x1 * sigmoid(max over H, W of x0) + x2, per sample and channel."""
    torch = pytest.importorskip("torch")
    from specgraph_torch._layers import fuse_inputs

    rng = np.random.default_rng(0)
    xs = [rng.standard_normal((2, 3, 4, 5)).astype(np.float32) for _ in range(3)]
    gate = 1.0 / (1.0 + np.exp(-xs[0].max(axis=(2, 3), keepdims=True)))
    want = xs[0] + xs[1] * gate + xs[2]
    got = fuse_inputs([torch.from_numpy(x) for x in xs], None, "attention").numpy()
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)


def test_drawn_with_its_cells() -> None:
    svg = specgraph.render_svg(specgraph.plan("resnet_nasfpn", "3", (256, 256)))
    for name in ("res5", "p7", "nasfpn_1/b5", "nasfpn_3/b11"):
        assert name in svg


@pytest.mark.parametrize(("edit", "path", "words"), [
    (lambda t: t.replace('outputs = ["b7", "b8", "b9", "b11", "b10"]', 'outputs = ["b7", "b8", "b9", "b10", "b11"]'),
     "cells[0].outputs[3]", "level 7, the input it replaces"),
    (lambda t: t.replace('outputs = ["b7", "b8", "b9", "b11", "b10"]', 'outputs = ["b7", "b8", "b9", "b11"]'),
     "cells[0].outputs", "4 outputs for 5 inputs"),
    (lambda t: t.replace('inputs = ["p3", "p4", "p5", "p6", "p7"]', 'inputs = ["p3", "p4", "p5", "p6", "p8"]'),
     "cells[0].inputs[4]", "no block named 'p8'"),
    (lambda t: t.replace('outputs = ["b7", "b8", "b9", "b11", "b10"]', 'outputs = ["b7", "b8", "b9", "b11", "b12"]'),
     "cells[0].outputs[4]", "no block named 'b12'"),
    (lambda t: t.replace('inputs = ["b10", "b9"], fusion = "attention"', 'inputs = ["b10"], fusion = "attention"'),
     "cells[0].blocks[6].fusion", "at least 2 inputs"),
    (lambda t: t.replace('{ name = "b6", level = 4, inputs = ["p4", "b5"]', '{ name = "b6", level = 4, inputs = '
                         '["p4", "b12"]'), "cells[0].blocks[1].inputs[1]", "no block named 'b12'"),
    (lambda t: t.replace("repeats = { nasfpn = 7 }", "repeats = { nasfpn = 40 }", 1), 'variants."7".repeats.nasfpn',
     "1 to 32"),
    (lambda t: t.replace("repeats = { nasfpn = 7 }", "repeats = { nasfp = 7 }", 1), 'variants."7".repeats.nasfp',
     "did you mean 'nasfpn'"),
    (lambda t: t.replace('name = "nasfpn"', 'name = "p5"'), "cells[0].name", "also a block's name"),
    (lambda t: t.replace('fusion = "attention", filters = 256, output = true', 'fusion = "mean", filters = 256, '
                         'output = true', 1), "cells[0].blocks[4].fusion", "'softmax', 'attention' or 'concat'"),
])
def test_bad_edits_are_located(tmp_path: Any, edit: Any, path: str, words: str,
                               assert_bad_edit_is_located: Any) -> None:
    assert_bad_edit_is_located(tmp_path, "nasfpn", edit, path, words, "3", (128, 128), backbone="resnet")


def test_a_concat_fusion_widens_the_blocks_conv() -> None:
    """A block fusing by concatenation takes its inputs side by side: b6's conv then reads 256 + 256 channels
    (no projection), and the stats count the wider kernel."""
    data = specgraph.load("resnet_nasfpn").to_dict()
    data["cells"][0]["blocks"][1]["fusion"] = "concat"
    plan = specgraph.plan(specgraph.load(data), "3", (128, 128))
    plan.lint()
    b6 = plan.node("nasfpn_2/b6")
    assert [op.describe() for op in b6.ops] == ["act", "conv 3x3 512->256", "norm"] and b6.fused_channels == 512
    assert all(not edge.ops or edge.ops[0].op != "conv" for edge in b6.inputs)
    extra = specgraph.stats(plan).params - RESNET50 - NASFPN[3, False]
    assert extra == 3 * 9 * 256 * 256  # each repetition's b6 kernel doubles its input channels


@pytest.mark.parametrize("fmt", ["toml", "yaml", "json"])
def test_spec_round_trips_through_text(fmt: str) -> None:
    """Cells, per-block fusion and a variant's cell repeats survive writing."""
    spec = specgraph.load("resnet_nasfpn")
    again = specgraph.load(spec.dumps(fmt) + "\n")
    assert again == spec
    for variant in ("3", "7-separable"):
        assert specgraph.plan(again, variant, (128, 128)).hash == specgraph.plan(spec, variant, (128, 128)).hash


# --- the backends against Model Garden itself ---

torch = pytest.importorskip("torch")  # torch before tensorflow: torchvision crashes when imported after it


@pytest.fixture(scope="module")
def modelgarden_resnet_nasfpn() -> dict[bool, tuple[Any, Any]]:
    """Model Garden's ResNet-50 and a 3-repeat NAS-FPN on it (plain and separable) at SIZE, random weights."""
    tf_keras = pytest.importorskip("tf_keras")
    resnet = pytest.importorskip("official.vision.modeling.backbones.resnet")
    nasfpn = pytest.importorskip("official.vision.modeling.decoders.nasfpn")
    out = {}
    rng = np.random.default_rng(0)
    for separable in (False, True):  # each decoder right after its backbone, as Model Garden's factory builds them
        backbone = resnet.ResNet(model_id=50, input_specs=tf_keras.layers.InputSpec(shape=[None, *SIZE, 3]))
        decoder = nasfpn.NASFPN(input_specs=backbone.output_specs, min_level=3, max_level=7, num_repeats=3,
                                use_separable_conv=separable)
        for w in backbone.weights + decoder.weights:
            base = 1.0 if ("variance" in w.name or "gamma" in w.name) else 0.0
            w.assign(base + 0.1 * rng.standard_normal(w.shape).astype(np.float32))
        out[separable] = (backbone, decoder)
    return out


def _check(plugin: Any, model: Any, images: np.ndarray, reference: dict[str, np.ndarray]) -> None:
    after = plugin.predict(model, images.transpose(0, 3, 1, 2))
    assert sorted(after) == sorted(reference) == ["3", "4", "5", "6", "7"]
    for level, ref in reference.items():
        got = after[level].transpose(0, 2, 3, 1)
        assert float(np.abs(got - ref).max()) / float(np.abs(ref).max()) <= 1e-4, level


@pytest.mark.slow
@pytest.mark.modelgarden
@pytest.mark.parametrize("separable", [False, True])
@pytest.mark.parametrize("backend", ["torch", "tensorflow"])
def test_outputs_equal_modelgarden(modelgarden_resnet_nasfpn: Any, backend: str, separable: bool) -> None:
    plugin = specgraph.get_backend(backend)
    backbone, decoder = modelgarden_resnet_nasfpn[separable]
    assert backbone.count_params() + decoder.count_params() == RESNET50 + NASFPN[3, separable]
    images = np.random.default_rng(1).standard_normal((2, *SIZE, 3)).astype(np.float32)
    reference = {k: v.numpy() for k, v in decoder(backbone(images, training=False), training=False).items()}
    model = plugin.compile(specgraph.plan("resnet_nasfpn", _variant(3, separable), SIZE))
    assert plugin.count_parameters(model) == RESNET50 + NASFPN[3, separable]
    before = plugin.predict(model, images.transpose(0, 3, 1, 2))
    assert all(float(np.abs(before[k].transpose(0, 2, 3, 1) - r).max()) / float(np.abs(r).max()) > 1e-2
               for k, r in reference.items())  # not equal by chance
    plugin.load_modelgarden_weights(model, (backbone, decoder))
    _check(plugin, model, images, reference)
    if backend == "torch":  # the variables as one mapping (a checkpoint's): the decoder's follow the backbone's
        fresh = plugin.compile(specgraph.plan("resnet_nasfpn", _variant(3, separable), SIZE))
        plugin.load_modelgarden_weights(fresh, {w.name: w.numpy() for w in backbone.weights + decoder.weights})
        _check(plugin, fresh, images, reference)


@pytest.mark.slow
@pytest.mark.parametrize("separable", [False, True])
@pytest.mark.parametrize("backend", ["torch", "tensorflow"])
def test_seven_repeats_count_in_both_backends(backend: str, separable: bool) -> None:
    plugin = specgraph.get_backend(backend)
    model = plugin.compile(specgraph.plan("resnet_nasfpn", _variant(7, separable), (128, 128)))
    assert plugin.count_parameters(model) == RESNET50 + NASFPN[7, separable]


@pytest.mark.modelgarden
@pytest.mark.parametrize("backend", ["torch", "tensorflow"])
def test_other_repeats_are_refused(modelgarden_resnet_nasfpn: Any, backend: str) -> None:
    """A 3-repeat Model Garden decoder does not load into a 5-repeat model (nor a plain one into a separable one):
    the problems are listed and nothing is loaded."""
    plugin = specgraph.get_backend(backend)
    model = plugin.compile(specgraph.plan("resnet_nasfpn", "5", SIZE))
    images = np.random.default_rng(2).standard_normal((1, *SIZE, 3)).astype(np.float32)
    before = plugin.predict(model, images.transpose(0, 3, 1, 2))
    for source in (modelgarden_resnet_nasfpn[False], modelgarden_resnet_nasfpn[True]):
        with pytest.raises(specgraph.WeightsError) as info:
            plugin.load_modelgarden_weights(model, source)
        assert info.value.problems
    after = plugin.predict(model, images.transpose(0, 3, 1, 2))
    assert all(np.array_equal(before[k], after[k]) for k in before)
