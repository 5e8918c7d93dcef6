"""The op-level units: each block type expands into the ops the papers and Model Garden describe
(written out by hand here), roles are unique slots, stats are the sum over the ops, lint names a
broken unit."""

from __future__ import annotations

import dataclasses

import pytest

import specgraph
from specgraph import Activation, Conv, Unit
from specgraph.backend_api import MODELGARDEN_BLOCKS, UNIT_TYPES, unit_op_slot


def _steps(unit: Unit) -> list[tuple[str, str, str]]:
    return [(s.role, s.path, s.op.describe()) for s in unit.ops]


def test_bottleneck_with_projection_is_the_resnet_recipe():
    u = Unit("bottleneck", 64, 32, 128, 2, (16, 16), (8, 8), projection=True)
    assert _steps(u) == [
        ("shortcut", "shortcut", "conv 1x1/s2 64->128"),
        ("conv1", "branch", "conv 1x1 64->32"),
        ("conv2", "branch", "conv 3x3/s2 32->32"),
        ("conv3", "branch", "conv 1x1 32->128"),
        ("add", "join", "add"), ("act", "join", "act")]
    convs = {s.role: s.op for s in u.ops if isinstance(s.op, Conv)}
    assert not convs["conv3"].activation and not convs["shortcut"].activation and convs["conv2"].activation
    assert convs["conv1"].size == (16, 16) and convs["conv2"].size == (8, 8)  # the stride is in the 3x3
    assert all(c.norm and not c.bias for c in convs.values())


def test_residual_without_projection_adds_the_input():
    u = Unit("residual", 64, 64, 64, 1, (8, 8), (8, 8))
    assert _steps(u) == [("conv1", "branch", "conv 3x3 64->64"), ("conv2", "branch", "conv 3x3 64->64"),
                         ("add", "join", "add"), ("act", "join", "act")]


@pytest.mark.parametrize(("expand", "se", "residual"), [(True, 4, True), (False, 0, False), (True, 0, False)])
def test_mbconv_is_a_linear_bottleneck(expand, se, residual):
    u = Unit("mbconv", 24, 24, 24 if residual else 48, 1 if residual else 2, (8, 8), (8, 8) if residual else (4, 4),
             expand=expand, expand_channels=144 if expand else 24, se_channels=se, residual=residual)
    width = 144 if expand else 24
    steps = _steps(u)
    want = ([("expand", "branch", f"conv 1x1 24->{width}")] if expand else []) + [
        ("depthwise", "branch", f"dwconv 3x3{'' if residual else '/s2'} {width}->{width}")]
    want += [("se", "branch", f"se {width}->{se}->{width} (hard_sigmoid)")] if se else []
    want += [("project", "branch", f"conv 1x1 {width}->{u.out_channels}")]
    want += [("add", "join", "add")] if residual else []  # no activation after the add
    assert steps == want
    assert not any(isinstance(s.op, Activation) for s in u.ops)


def test_every_builtin_unit_has_unique_roles_and_model_garden_names_every_weighted_role():
    for name in ("spinenet", "spinenet_mobile", "spinenet_lite"):
        spec = specgraph.load(name)
        for variant in spec.variants:
            plan = specgraph.plan(spec, variant, 256)
            for node in plan.nodes:
                for k, unit in enumerate(node.units):
                    roles = [s.role for s in unit.ops]
                    assert len(set(roles)) == len(roles)
                    mg = MODELGARDEN_BLOCKS[unit.type]
                    for step in unit.weighted_ops:
                        known = mg.conv_attributes(step.role) is not None or (
                            mg.squeeze_excite is not None and mg.squeeze_excite[0] == step.role)
                        assert known, (unit.type, step.role)
                        assert unit_op_slot(node.name, k, step.role) == f"{node.name}/unit{k}/{step.role}"
    assert set(UNIT_TYPES) == set(MODELGARDEN_BLOCKS)


def test_hand_counted_mbconv_unit_parameters():
    # expand 1x1 24->144 (+BN 4x144), depthwise 3x3 144 (+BN), SE 144->4->144 with biases, project 144->24 (+BN 4x24)
    u = Unit("mbconv", 24, 24, 24, 1, (8, 8), (8, 8), expand=True, expand_channels=144, se_channels=4)
    want = (24 * 144 + 4 * 144) + (9 * 144 + 4 * 144) + (144 * 4 + 4 + 4 * 144 + 144) + (144 * 24 + 4 * 24)
    from specgraph._stats import _unit
    count = _unit(u)
    assert count.trainable + count.non_trainable == want
    # MACs per pixel of the 8x8 map: 24*144 + 9*144 + 144*24, plus the SE's 1x1 convs once
    assert count.macs == 64 * (24 * 144 + 9 * 144 + 144 * 24) + (144 * 4 + 4 * 144)


def test_lint_names_a_broken_unit():
    plan = specgraph.plan("spinenet_mobile", "49S", 128)
    node = next(n for n in plan.nodes if n.kind == "block")
    bad_unit = dataclasses.replace(node.units[0], expand_channels=node.units[0].expand_channels + 1, filters=7)
    broken = dataclasses.replace(plan, nodes=tuple(
        dataclasses.replace(n, units=(bad_unit, *n.units[1:])) if n is node else n for n in plan.nodes))
    broken.lint()  # still consistent: the recipe derives every op from the unit's own fields
    odd = dataclasses.replace(node.units[0], type="octave")
    broken = dataclasses.replace(plan, nodes=tuple(
        dataclasses.replace(n, units=(odd, *n.units[1:])) if n is node else n for n in plan.nodes))
    with pytest.raises(specgraph.PlanError) as info:
        broken.lint()
    index = plan.nodes.index(node)
    assert [str(p) for p in info.value.problems] == [
        f"nodes[{index}] {node.name}.units[0]: unknown unit type 'octave'; known: bottleneck, residual, mbconv"]


def test_lint_names_an_identity_shortcut_that_cannot_be_added():
    plan = specgraph.plan("spinenet", "49S", 128)
    node = next(n for n in plan.nodes if n.units and n.units[0].projection and n.units[0].stride == 1)
    unit = dataclasses.replace(node.units[0], projection=False)
    broken = dataclasses.replace(plan, nodes=tuple(
        dataclasses.replace(n, units=(unit, *n.units[1:])) if n is node else n for n in plan.nodes))
    with pytest.raises(specgraph.PlanError) as info:
        broken.lint()
    index = plan.nodes.index(node)
    assert [str(p) for p in info.value.problems] == [
        f"nodes[{index}] {node.name}.units[0].add: adds the unit's input ({unit.in_channels} channels, stride 1) to "
        f"{unit.out_channels} channels at stride 1; the unit needs a projection shortcut"]
