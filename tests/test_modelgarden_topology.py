"""The planned SpineNet topologies against tables written by hand from Model Garden's code.

The tables below transcribe what ``spinenet.py`` / ``spinenet_mobile.py`` build
(``_build_scale_permuted_network`` and ``_resample_with_alpha`` /
``_resample_with_sepconv``): each block's parents with the spatial part of their
resampling, and the merge-unused extra parent. They are not produced by the planner.
"""

from __future__ import annotations

import pytest

import specgraph
from specgraph import Conv, MaxPool, Upsample

# block: (level, block_fn, [(parent, spatial)], extra parents)
# spatial: "same" | "conv" (3x3/s2 conv) | "conv+mp" | "conv+mp+mp" | "up2" | "up4"
SPINENET = {
    "sp1": (2, "bottleneck", [("stem1", "same"), ("stem2", "same")], []),
    "sp2": (4, "residual", [("stem1", "conv+mp"), ("stem2", "conv+mp")], []),
    "sp3": (3, "bottleneck", [("sp1", "conv"), ("sp2", "up2")], []),
    "sp4": (4, "bottleneck", [("sp1", "conv+mp"), ("sp3", "conv")], []),
    "sp5": (6, "residual", [("sp2", "conv+mp"), ("sp4", "conv+mp")], []),
    "sp6": (4, "bottleneck", [("sp2", "same"), ("sp4", "same")], []),
    "sp7": (5, "residual", [("sp5", "up2"), ("sp6", "conv")], []),
    "sp8": (7, "residual", [("sp5", "conv"), ("sp7", "conv+mp")], []),
    "sp9": (5, "bottleneck", [("sp7", "same"), ("sp8", "up4")], []),
    "sp10": (5, "bottleneck", [("sp7", "same"), ("sp9", "same")], []),
    "sp11": (4, "bottleneck", [("sp4", "same"), ("sp9", "up2")], []),
    "sp12": (3, "bottleneck", [("sp3", "same"), ("sp9", "up4")], []),
    "sp13": (5, "bottleneck", [("sp6", "conv"), ("sp11", "conv")], ["sp10"]),
    "sp14": (7, "bottleneck", [("sp4", "conv+mp+mp"), ("sp13", "conv+mp")], []),
    "sp15": (6, "bottleneck", [("sp11", "conv+mp"), ("sp13", "conv")], []),
}
STEM_LEVEL = {"stem1": 2, "stem2": 2}

# block: (level, [(parent, spatial)], extra); spatial "same" | "dwK" (K depthwise s2 convs) | "upK"
MOBILE = {
    "sp1": (2, [("stem1", "dw1"), ("stem2", "same")], []),
    "sp2": (2, [("stem2", "same"), ("sp1", "same")], []),
    "sp3": (4, [("stem2", "dw2"), ("sp1", "dw2")], []),
    "sp4": (3, [("sp2", "dw1"), ("sp3", "up2")], []),
    "sp5": (4, [("sp2", "dw2"), ("sp4", "dw1")], []),
    "sp6": (6, [("sp3", "dw2"), ("sp5", "dw2")], []),
    "sp7": (4, [("sp3", "same"), ("sp5", "same")], []),
    "sp8": (5, [("sp6", "up2"), ("sp7", "dw1")], []),
    "sp9": (7, [("sp6", "dw1"), ("sp8", "dw2")], []),
    "sp10": (5, [("sp8", "same"), ("sp9", "up4")], []),
    "sp11": (5, [("sp8", "same"), ("sp10", "same")], []),
    "sp12": (4, [("sp5", "same"), ("sp10", "up2")], []),
    "sp13": (3, [("sp4", "same"), ("sp10", "up4")], []),
    "sp14": (5, [("sp7", "dw1"), ("sp12", "dw1")], ["sp11"]),
    "sp15": (7, [("sp5", "dw3"), ("sp14", "dw2")], []),
    "sp16": (6, [("sp12", "dw2"), ("sp14", "dw1")], []),
}
MOBILE_STEM_LEVEL = {"stem1": 1, "stem2": 2}

# SpineNet-49 (scale 1.0, alpha 0.5): squeezed channels by parent kind, from the reference.
SQUEEZE_49 = {("bottleneck", 2): 32, ("bottleneck", 3): 64, ("bottleneck", 4): 128, ("residual", 4): 128}
FILTERS_49 = {2: 64, 3: 128, 4: 256, 5: 256, 6: 256, 7: 256}


def _spatial(ops) -> str:
    names = []
    for op in ops:
        if isinstance(op, Conv) and op.kernel == 3 and op.stride == 2:
            names.append("dw" if op.depthwise else "conv")
        elif isinstance(op, MaxPool):
            names.append("mp")
        elif isinstance(op, Upsample):
            names.append(f"up{op.factor}")
    if names and set(names) == {"dw"}:
        return f"dw{len(names)}"
    return "+".join(names) or "same"


@pytest.fixture(scope="module")
def plan49() -> specgraph.Plan:
    return specgraph.plan(specgraph.load("spinenet"), "49", (640, 640))


def test_spinenet49_parents_and_spatial_resampling(plan49) -> None:
    for block, (level, block_fn, parents, extra) in SPINENET.items():
        node = plan49.node(block)
        assert node.level == level and node.block_type == block_fn, block
        listed = [(e.source, _spatial(e.ops)) for e in node.inputs if e.kind == "input"]
        assert listed == parents, block
        assert [e.source for e in node.inputs if e.kind == "merge"] == extra, block
        assert all(not e.ops for e in node.inputs if e.kind == "merge")


def test_spinenet49_resample_channels(plan49) -> None:
    types = {b: t for b, (_, t, _, _) in SPINENET.items()} | {"stem1": "bottleneck", "stem2": "bottleneck"}
    levels = {b: lvl for b, (lvl, _, _, _) in SPINENET.items()} | STEM_LEVEL
    for block, (level, block_fn, parents, _) in SPINENET.items():
        out = FILTERS_49[level] * (4 if block_fn == "bottleneck" else 1)
        for edge, (parent, _) in zip(plan49.node(block).inputs, parents, strict=False):
            plevel, ptype = levels[parent], types[parent]
            squeeze = SQUEEZE_49[(ptype, min(plevel, 4))]
            first, last = edge.ops[0], edge.ops[-1]
            assert (first.kernel, first.in_channels, first.out_channels) == (1, plan49.node(parent).channels, squeeze)
            assert first.norm and first.activation
            assert (last.kernel, last.in_channels, last.out_channels) == (1, squeeze, out)
            assert last.norm and not last.activation
            for op in edge.ops[1:-1]:
                if isinstance(op, Conv):
                    assert (op.kernel, op.stride, op.in_channels, op.out_channels) == (3, 2, squeeze, squeeze)
                    assert op.norm and op.activation and not op.depthwise


def test_sp14_parent_at_level_4_as_model_garden_builds_it(plan49) -> None:
    edge = plan49.node("sp14").inputs[0]
    assert edge.source == "sp4"
    assert edge.ops == (
        Conv(1024, 128, 1, 1, (40, 40)),
        Conv(128, 128, 3, 2, (20, 20)),
        MaxPool(3, 2, 128, (10, 10)),
        MaxPool(3, 2, 128, (5, 5)),
        Conv(128, 1024, 1, 1, (5, 5), activation=False),
    )


def test_spinenet_endpoints_and_pruning(plan49) -> None:
    sources = {lvl: plan49.node(name).inputs[0].source for lvl, name in plan49.endpoints}
    assert sources == {"3": "sp12", "4": "sp11", "5": "sp13", "6": "sp15", "7": "sp14"}
    assert plan49.pruned == ("sp16",)
    with_level2 = specgraph.plan(specgraph.load("spinenet"), "49", (640, 640), min_level=2)
    assert with_level2.pruned == ()
    assert with_level2.node("endpoint_2").inputs[0].source == "sp16"
    sp16 = with_level2.node("sp16")
    assert [(e.source, _spatial(e.ops)) for e in sp16.inputs] == [("sp1", "same"), ("sp12", "up2")]


def test_spinenet_stem_as_model_garden_builds_it(plan49) -> None:
    stem = plan49.node("stem")
    assert stem.ops == (Conv(3, 64, 7, 2, (320, 320)), MaxPool(3, 2, 64, (160, 160)))
    stem1, stem2 = plan49.node("stem1").units[0], plan49.node("stem2").units[0]
    assert (stem1.in_channels, stem1.filters, stem1.out_channels, stem1.projection) == (64, 64, 256, True)
    assert (stem2.in_channels, stem2.projection) == (256, False)
    for block in SPINENET:
        assert not any(u.projection for u in plan49.node(block).units), block


def test_mobile49_topology() -> None:
    plan = specgraph.plan(specgraph.load("spinenet_mobile"), "49", (384, 384))
    filters = {1: 16, 2: 24, 3: 40, 4: 80, 5: 112, 6: 112, 7: 112}
    for block, (level, parents, extra) in MOBILE.items():
        node = plan.node(block)
        assert node.level == level and node.block_type == "mbconv"
        assert [(e.source, _spatial(e.ops)) for e in node.inputs if e.kind == "input"] == parents, block
        assert [e.source for e in node.inputs if e.kind == "merge"] == extra, block
        for edge in node.inputs:
            if edge.kind != "input":
                continue
            parent = plan.node(edge.source)
            # no squeeze: depthwise convs keep the parent's channels, then 1x1 to the target's filters
            for op in edge.ops[:-1]:
                if isinstance(op, Conv):
                    assert op.depthwise and op.in_channels == parent.channels and op.norm and op.activation
            last = edge.ops[-1]
            assert (last.kernel, last.in_channels, last.out_channels, last.activation) == (
                1, parent.channels, filters[level], False)
        unit = node.units[0]
        assert (unit.in_channels, unit.expand_channels, unit.se_channels, unit.residual) == (
            filters[level], 6 * filters[level], max(1, int(filters[level] * 0.2)), True)
    assert plan.pruned == ()
    stem1, stem2 = plan.node("stem1").units[0], plan.node("stem2").units[0]
    # Model Garden: stem1 8->16 (SE in=8 -> 1), stem2 16->24 stride 2 (SE 3); neither has the residual add.
    assert (stem1.in_channels, stem1.out_channels, stem1.stride, stem1.se_channels, stem1.residual) == (
        8, 16, 1, 1, False)
    assert (stem2.in_channels, stem2.out_channels, stem2.stride, stem2.se_channels, stem2.residual) == (
        16, 24, 2, 3, False)


def test_drop_fractions_follow_model_garden_schedule(plan49) -> None:
    # get_stochastic_depth_rate(init, i + 1, 16) = init * (i + 1) / 16, over all 16 spec blocks
    for k in range(1, 16):
        assert plan49.node(f"sp{k}").drop_fraction == pytest.approx(k / 16)
    assert plan49.node("stem1").drop_fraction is None
