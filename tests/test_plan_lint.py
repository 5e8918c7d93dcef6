"""``Plan.lint()``: the planner's plans keep the plan's invariants, and a broken plan is named."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import specgraph
from specgraph.testing import valid_specs

DATA = Path(__file__).parent / "data"


@pytest.mark.parametrize("name", ["spinenet", "spinenet_mobile", "spinenet_lite"])
@pytest.mark.parametrize("size", [640, (333, 511), 1])
def test_every_builtin_plan_lints(name, size):
    spec = specgraph.load(name)
    for variant in spec.variants:
        specgraph.plan(spec, variant, size).lint()
    selection = specgraph.plan(spec, None, size, levels=[3, 5])
    selection.lint()
    selection.contiguous().lint()


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=valid_specs(), height=st.integers(1, 300), width=st.integers(1, 300))
def test_random_plans_lint(data, height, width):
    specgraph.plan(specgraph.load(data), input_size=(height, width)).lint()


def _small() -> specgraph.Plan:
    return specgraph.plan(specgraph.load(DATA / "small.toml"), input_size=(64, 96))


def _replace_node(plan: specgraph.Plan, name: str, **changes) -> specgraph.Plan:
    nodes = tuple(dataclasses.replace(n, **changes) if n.name == name else n for n in plan.nodes)
    return dataclasses.replace(plan, nodes=nodes)


def _lint_problems(plan: specgraph.Plan) -> list[str]:
    with pytest.raises(specgraph.PlanError) as info:
        plan.lint()
    return [str(p) for p in info.value.problems]


def test_broken_plans_are_named():
    plan = _small()
    plan.lint()
    b = plan.node("b")
    # Hand-computed: 64x96 at level 4 is 4x6; say 5x6.
    assert _lint_problems(_replace_node(plan, "b", size=(5, 6))) == [
        "nodes[3] b: size (5, 6), but level 4 of (64, 96) is (4, 6)"]
    # An input from a node built later.
    edge = dataclasses.replace(b.inputs[0], source="e")
    problems = _lint_problems(_replace_node(plan, "b", inputs=(edge, *b.inputs[1:])))
    assert problems == ["nodes[3] b.inputs[0]: source 'e' is not an earlier node"]
    # A resampling conv that expects other channels than its source has.
    first = next(e for e in b.inputs if e.ops)
    op = dataclasses.replace(first.ops[0], in_channels=first.ops[0].in_channels + 1)
    broken = dataclasses.replace(first, ops=(op, *first.ops[1:]))
    problems = _lint_problems(_replace_node(plan, "b", inputs=tuple(broken if e is first else e for e in b.inputs)))
    assert len(problems) == 1 and "b.inputs[" in problems[0] and ".ops[0]: takes" in problems[0]
    # Units that do not chain to the node's channels.
    assert any("its units end at" in p for p in _lint_problems(_replace_node(plan, "b", channels=b.channels + 1)))
    # Two nodes of one name, and an endpoint key at the wrong level.
    assert any("a second node of this name" in p
               for p in _lint_problems(dataclasses.replace(plan, nodes=(*plan.nodes, plan.nodes[-1]))))
    endpoints = tuple(("4" if k == "3" else k, n) for k, n in plan.endpoints)
    assert any("endpoints['4']" in p and "is at level 3" in p
               for p in _lint_problems(dataclasses.replace(plan, endpoints=endpoints)))


def test_compile_lints_a_plan_it_is_given():
    broken = _replace_node(_small(), "b", size=(5, 6))
    with pytest.raises(specgraph.PlanError, match="size"):
        specgraph.compile(broken, backend="null")


def test_level_steps_by_hand() -> None:
    """How many levels each op and unit moves its input: the one definition backends and lint read."""
    from specgraph import Conv, MaxPool, Unit, Upsample

    assert Conv(8, 8, 3, 2, (4, 4)).level_step == 1 and Conv(8, 8, 1, 1, (4, 4)).level_step == 0
    assert MaxPool(3, 2, 8, (4, 4)).level_step == 1
    assert Upsample(4, 8, (16, 16)).level_step == -2 and Upsample(2, 8, (8, 8)).level_step == -1
    assert Unit("residual", 8, 8, 8, 2, (8, 8), (4, 4)).level_step == 1
    assert Unit("residual", 8, 8, 8, 1, (8, 8), (8, 8)).level_step == 0
