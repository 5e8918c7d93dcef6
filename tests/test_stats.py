"""Stats against Model Garden's measured figures (../shared/reference/modelgarden-figures.md)
and against hand-computed counts."""

from __future__ import annotations

import pytest

import specgraph

# (spec, variant, size): (count_params(), trainable, frozen-graph conv GMACs), min_level 3, max_level 7.
MODEL_GARDEN = {
    ("spinenet", "49S", 640): (9_146_351, 9_089_215, 12.325),
    ("spinenet", "49", 640): (21_920_192, 21_831_488, 28.262),
    ("spinenet", "96", 640): (36_385_728, 36_262_976, 46.506),
    ("spinenet", "143", 640): (60_413_888, 60_247_616, 73.815),
    ("spinenet", "143L", 640): (101_011_093, 100_796_257, 122.752),
    ("spinenet", "190", 640): (126_849_216, 126_587_664, 155.246),
    ("spinenet_mobile", "49", 384): (2_313_892, 2_268_708, 0.785),
    ("spinenet_mobile", "49S", 384): (1_004_872, 975_678, 0.341),
    ("spinenet_mobile", "49XS", 384): (869_400, 842_456, 0.289),
    ("spinenet_mobile", "49", 512): (2_313_892, 2_268_708, 1.395),
    ("spinenet_mobile", "49S", 512): (1_004_872, 975_678, 0.605),
    ("spinenet_mobile", "49XS", 512): (869_400, 842_456, 0.514),
}


@pytest.mark.parametrize(("spec", "variant", "size"), list(MODEL_GARDEN), ids=lambda v: str(v))
def test_counts_equal_model_garden(spec, variant, size) -> None:
    params, trainable, gmacs = MODEL_GARDEN[(spec, variant, size)]
    s = specgraph.stats(specgraph.plan(specgraph.load(spec), variant, (size, size), 3, 7))
    assert s.params == params
    assert s.trainable_params == trainable
    assert s.non_trainable_params == params - trainable
    # the figures are rounded to 3 decimals: allow that rounding plus 0.1%
    assert abs(s.macs / 1e9 - gmacs) <= 0.0005 + 1e-3 * gmacs


def test_min_level_2_adds_sp16_as_model_garden() -> None:
    # Model Garden (checked on a built model): 49S with min_level=2 has 9,225,868 parameters.
    s = specgraph.stats(specgraph.plan(specgraph.load("spinenet"), "49S", 640, min_level=2))
    assert s.params == 9_225_868


def test_per_node_rows_sum_to_totals() -> None:
    s = specgraph.stats(specgraph.plan(specgraph.load("spinenet"), "96", 512))
    assert sum(r.params for r in s.nodes) == s.params
    assert sum(r.macs for r in s.nodes) == s.macs
    assert all(r.params == r.trainable_params + r.non_trainable_params for r in s.nodes)


def test_hand_counted_stem() -> None:
    # 7x7x3x64 conv + BN(64) -> 9408 + 4*64 params; MACs 320*320*64*7*7*3
    plan = specgraph.plan(specgraph.load("spinenet"), "49", 640)
    row = next(r for r in specgraph.stats(plan).nodes if r.name == "stem")
    assert row.params == 7 * 7 * 3 * 64 + 4 * 64
    assert row.trainable_params == 7 * 7 * 3 * 64 + 2 * 64
    assert row.macs == 320 * 320 * 64 * 7 * 7 * 3


def test_hand_counted_mbconv_block() -> None:
    # Mobile-49 sp7: level 4, 80 channels, two same-level parents (1x1 80->80 + BN each),
    # one MBConv: expand 80->480, dw 3x3, SE 480->16->480 with biases, project 480->80.
    plan = specgraph.plan(specgraph.load("spinenet_mobile"), "49", 384)
    row = next(r for r in specgraph.stats(plan).nodes if r.name == "sp7")
    resample = 2 * (80 * 80 + 4 * 80)
    block = (80 * 480 + 4 * 480) + (9 * 480 + 4 * 480) + (480 * 16 + 16) + (16 * 480 + 480) + (480 * 80 + 4 * 80)
    assert row.params == resample + block
    hw = 24 * 24
    assert row.macs == 2 * hw * 80 * 80 + hw * (80 * 480 + 9 * 480 + 480 * 80) + 480 * 16 * 2


def test_weighted_fusion_adds_one_weight_per_parent(mini) -> None:
    data = mini()
    base = specgraph.stats(specgraph.plan(specgraph.load(data), input_size=256))
    data["fusion"] = {"method": "weighted"}
    weighted = specgraph.stats(specgraph.plan(specgraph.load(data), input_size=256))
    parents = sum(len(b["inputs"]) for b in data["blocks"])
    assert weighted.trainable_params - base.trainable_params == parents
    assert weighted.macs == base.macs


def test_params_do_not_depend_on_input_size() -> None:
    spec = specgraph.load("spinenet")
    counts = {specgraph.stats(specgraph.plan(spec, "49S", size)).params for size in (64, 250, (333, 250), 640, 1025)}
    assert counts == {9_146_351}
