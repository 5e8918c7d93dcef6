"""Any input size plans, with Model Garden's ceil(n / 2**level) sizes per axis."""

from __future__ import annotations

import math

import pytest

import specgraph
from specgraph import Conv, MaxPool, Upsample


def _ceil(n: int, level: int) -> int:
    return math.ceil(n / 2**level)


@pytest.mark.parametrize("spec", ["spinenet", "spinenet_mobile", "spinenet_lite"])
@pytest.mark.parametrize("size", [(250, 333), (224, 224), (641, 479), (1, 1), (17, 1000)])
def test_odd_sizes_plan_with_ceil_sizes(spec, size) -> None:
    plan = specgraph.plan(specgraph.load(spec), None, size)
    h, w = size
    for node in plan.nodes:
        assert node.size == (_ceil(h, node.level), _ceil(w, node.level)), node.name
        for edge in node.inputs:
            parent = plan.node(edge.source)
            if edge.kind == "chain":  # stem blocks stride inside their first unit
                assert node.units[0].in_size == parent.size if node.units else node.size == parent.size
                continue
            current = parent.size
            for op in edge.ops:
                if isinstance(op, Conv | MaxPool):
                    # TF SAME: output = ceil(input / stride)
                    assert op.size == (math.ceil(current[0] / op.stride), math.ceil(current[1] / op.stride))
                elif isinstance(op, Upsample):
                    # upsampling targets the destination's size, never more than factor * input
                    assert op.size == node.size
                    assert op.size[0] <= current[0] * op.factor and op.size[1] <= current[1] * op.factor
                current = op.size
            assert current == node.size, (node.name, edge.source)
    model = specgraph.compile(plan, backend="null")
    shapes = model((2, 3, h, w))
    assert shapes == {str(lvl): (2, plan.endpoints_num_filters, _ceil(h, lvl), _ceil(w, lvl))
                      for lvl in range(plan.min_level, plan.max_level + 1)}


def test_graph_does_not_depend_on_input_size() -> None:
    # Model Garden drops sp10 when the width is unknown; specgraph keeps it at every size.
    spec = specgraph.load("spinenet")
    for size in [(64, 64), (128, 96), (640, 640), (3, 5)]:
        plan = specgraph.plan(spec, "49S", size)
        assert "sp10" in plan
        assert [e.source for e in plan.node("sp13").inputs] == ["sp6", "sp11", "sp10"]


def test_plan_is_immutable_and_hash_is_stable() -> None:
    spec = specgraph.load("spinenet")
    a, b = specgraph.plan(spec, "49", 640), specgraph.plan(specgraph.load("spinenet"), "49", 640)
    assert a == b and a.hash == b.hash and len(a.hash) == 64
    assert specgraph.plan(spec, "49", 512).hash != a.hash
    assert specgraph.plan(spec, "49S", 640).hash != a.hash
    with pytest.raises(AttributeError):
        a.variant = "96"  # type: ignore[misc]
    with pytest.raises(AttributeError):
        a.nodes[0].level = 3  # type: ignore[misc]


def test_plan_round_trips_through_json() -> None:
    import json

    plan = specgraph.plan(specgraph.load("spinenet_lite"), "M", (250, 333), min_level=3)
    again = specgraph.Plan.from_dict(json.loads(json.dumps(plan.to_dict())))
    assert again == plan and again.hash == plan.hash
    edited = plan.to_dict()
    edited["nodes"][3]["channels"] += 1
    with pytest.raises(specgraph.PlanError, match="does not match its hash"):
        specgraph.Plan.from_dict(edited)
    with pytest.raises(specgraph.PlanError, match="not a plan dict"):
        specgraph.Plan.from_dict({"nodes": []})
