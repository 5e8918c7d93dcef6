"""Property tests: random valid specs plan and count consistently; random corruptions of
them only ever raise SpecgraphError."""

from __future__ import annotations

import contextlib
import copy
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import specgraph
from specgraph import SpecgraphError
from specgraph.testing import composed_specs, imported_modules, valid_specs

sizes = st.tuples(st.integers(1, 300), st.integers(1, 300))
SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@SETTINGS
@given(valid_specs(), sizes)
def test_random_valid_specs_plan_and_count_consistently(data, size) -> None:
    spec = specgraph.load(data)
    plan = specgraph.plan(spec, input_size=size)
    seen: set[str] = set()
    for node in plan.nodes:  # topological: parents before children
        assert all(e.source in seen for e in node.inputs), node.name
        seen.add(node.name)
    s = specgraph.stats(plan)
    assert s.params == sum(r.params for r in s.nodes) == s.trainable_params + s.non_trainable_params
    assert s.macs == sum(r.macs for r in s.nodes) > 0
    # parameters are a property of the network, not of the input size
    other = specgraph.stats(specgraph.plan(spec, input_size=(size[1] + 7, size[0] + 3)))
    assert other.params == s.params
    for level, name in plan.endpoints:
        node = plan.node(name)
        if data.get("endpoints", {}).get("conv", True):
            assert node.channels == data["variants"]["v"]["endpoints_num_filters"]
        else:  # bare endpoints (stage-style specs): the output block's features as they are
            assert not node.ops and node.channels == plan.node(node.inputs[0].source).channels
        assert node.level == int(level)
    # edges end at the channels their target fuses at: a block group's own, an op block's first op's (a
    # concatenation's: all edges' together)
    for node in plan.nodes:
        ends = []
        for edge in node.inputs:
            if edge.kind == "input" and node.kind == "block":
                channels = plan.node(edge.source).channels
                for op in edge.ops:
                    channels = getattr(op, "out_channels", channels)
                ends.append(channels)
                if node.units:
                    assert edge.ops[-1].out_channels == node.channels
            if edge.kind == "merge":
                assert plan.node(edge.source).channels == node.channels and not edge.ops
        if ends:
            concat = node.fusion == "concat"
            assert (sum(ends) if concat else set(ends)) == (node.fused_channels if concat else {node.fused_channels})


@SETTINGS
@given(valid_specs(), st.sampled_from(["yaml", "toml", "json"]))
def test_dump_and_reload_gives_the_same_plan(data, fmt) -> None:
    spec = specgraph.load(data)
    again = specgraph.load(spec.dumps(fmt) + "\n")
    assert again == spec
    assert specgraph.plan(again, input_size=96).hash == specgraph.plan(spec, input_size=96).hash


JUNK = st.one_of(st.none(), st.integers(-5, 10**6), st.floats(allow_nan=True), st.text(max_size=8),
                 st.lists(st.integers(), max_size=2), st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
                 st.booleans())


def _paths(value: Any, prefix: tuple = ()) -> list[tuple]:
    out = [prefix] if prefix else []
    if isinstance(value, dict):
        for k, v in value.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            out += _paths(v, (*prefix, i))
    return out


@st.composite
def corrupted_specs(draw: st.DrawFn) -> dict[str, Any]:
    return _corrupt(draw, copy.deepcopy(draw(valid_specs())))


def _corrupt(draw: st.DrawFn, data: dict[str, Any]) -> dict[str, Any]:
    for _ in range(draw(st.integers(1, 3))):
        paths = _paths(data)
        path = draw(st.sampled_from(paths))
        parent = data
        for key in path[:-1]:
            parent = parent[key]
        action = draw(st.sampled_from(["replace", "delete", "rename", "extra"]))
        if action == "replace":
            parent[path[-1]] = draw(JUNK)
        elif action == "delete" and isinstance(parent, dict):
            del parent[path[-1]]
        elif action == "delete" and isinstance(parent, list) and len(parent) > 0:
            parent.pop(path[-1])
        elif action == "rename" and isinstance(parent, dict):
            parent[draw(st.text(min_size=1, max_size=6))] = parent.pop(path[-1])
        elif action == "extra" and isinstance(parent, dict):
            parent[draw(st.text(min_size=1, max_size=6))] = draw(JUNK)
    return data


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(corrupted_specs(), sizes)
def test_corrupted_specs_raise_only_specgraph_errors(data, size) -> None:
    try:
        spec = specgraph.load(data)
        plan = specgraph.plan(spec, input_size=size)
        specgraph.stats(plan)
    except SpecgraphError as exc:
        assert str(exc)
        assert all(p.message for p in exc.problems)


@st.composite
def corrupted_compositions(draw: st.DrawFn) -> dict[str, Any]:
    return _corrupt(draw, copy.deepcopy(draw(composed_specs())))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(corrupted_compositions(), sizes)
def test_corrupted_compositions_raise_only_located_specgraph_errors(data, size) -> None:
    """A corruption anywhere (the composition, its inline backbone or decoder) is a SpecgraphError; one found
    while loading names its place."""
    try:
        spec = specgraph.load(data)
    except SpecgraphError as exc:
        assert all(p.message and p.path for p in exc.problems), [str(p) for p in exc.problems]
        return
    try:
        specgraph.stats(specgraph.plan(spec, input_size=size))
    except SpecgraphError as exc:
        assert all(p.message for p in exc.problems)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_corrupted_text_raises_only_specgraph_errors(data) -> None:
    text = specgraph.load("spinenet").dumps(data.draw(st.sampled_from(["toml", "yaml"])))
    cut = data.draw(st.integers(0, len(text) - 1))
    junk = data.draw(st.text(max_size=5))
    broken = text[:cut] + junk + text[cut + data.draw(st.integers(0, 5)):]
    with contextlib.suppress(SpecgraphError):
        specgraph.plan(specgraph.load(broken + "\n"), "49", 128)


@pytest.mark.parametrize("fmt", ["toml", "yaml", "json"])
def test_builtin_specs_round_trip(fmt) -> None:
    for name in specgraph.builtin_specs():
        spec = specgraph.load(name)
        assert specgraph.load(spec.dumps(fmt) + "\n") == spec


def test_imported_modules_lists_what_a_source_imports():
    source = "import os.path, json as j\nfrom torch import nn\nfrom .sibling import x\n\ndef f():\n    import math\n"
    assert imported_modules(source) == {"os.path", "json", "torch", ".sibling", "math"}
