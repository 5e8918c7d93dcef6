"""Cells with shared weights (``shared = true``): every repetition runs the first repetition's weights."""

from __future__ import annotations

import copy
from dataclasses import replace
from pathlib import Path
from typing import Any
from xml.etree import ElementTree

import pytest
import tomllib
import yaml

import specgraph

DATA = Path(__file__).parent / "data"
SIZE = (64, 96)
SVG = "{http://www.w3.org/2000/svg}"


def _data() -> dict[str, Any]:
    return tomllib.loads((DATA / "shared_cells.toml").read_text(encoding="utf-8"))


def _plan(data: dict[str, Any], **kwargs: Any) -> specgraph.Plan:
    return specgraph.plan(specgraph.load(copy.deepcopy(data)), input_size=SIZE, **kwargs)


def _unshared(data: dict[str, Any]) -> dict[str, Any]:
    data = copy.deepcopy(data)
    for cell in data["cells"]:
        cell["shared"] = False
    return data


def test_later_repetitions_run_the_first_repetitions_weights() -> None:
    plan = specgraph.plan(specgraph.load(DATA / "shared_cells.toml"), input_size=SIZE)
    plan.lint()
    sharing = {n.name: n.shares for n in plan.nodes if n.shares}
    # recur repeats twice, pyramid (four blocks) three times: 2 + 8 nodes run an earlier one's weights
    assert sharing == {"recur_2/x3": "recur_1/x3", "recur_2/x4": "recur_1/x4",
                       **{f"pyramid_{r}/{b}": f"pyramid_1/{b}" for r in (2, 3) for b in ("t4", "t3", "u4", "u5")}}
    # stochastic depth: a shared block group drops at its first repetition's rate (it is that module)
    assert plan.node("recur_2/x3").drop_fraction == plan.node("recur_1/x3").drop_fraction
    unshared = _plan(_unshared(_data()))
    assert not any(n.shares for n in unshared.nodes)
    assert unshared.node("recur_2/x3").drop_fraction > unshared.node("recur_1/x3").drop_fraction


def test_shared_weights_are_counted_once_and_the_compute_is_unchanged() -> None:
    data = _data()
    shared, unshared = specgraph.stats(_plan(data)), specgraph.stats(_plan(_unshared(data)))
    once = copy.deepcopy(data)
    once["variants"]["tiny"]["repeats"] = {"recur": 1, "pyramid": 1}
    # N repetitions of one set of weights hold the weights of one repetition
    assert shared.params == specgraph.stats(_plan(once)).params
    assert shared.macs == unshared.macs and shared.activation_bytes == unshared.activation_bytes
    # by hand: one pyramid block's weights, 24 channels: its fusion weights (one per input), a depthwise 3x3,
    # a pointwise 24x24 with bias, a norm (gamma, beta, mean, variance); repeated twice more without sharing
    per_block = {"t4": 2, "t3": 2, "u4": 3, "u5": 2}
    block = {name: inputs + 24 * 9 + 24 * 24 + 24 + 4 * 24 for name, inputs in per_block.items()}
    recur = sum(n.params for n in shared.nodes if n.name.startswith("recur_1/"))
    assert unshared.params - shared.params == 2 * sum(block.values()) + recur
    assert all(n.params == 0 for n in shared.nodes if n.name.startswith(("recur_2/", "pyramid_2/", "pyramid_3/")))


def test_a_repetition_that_cannot_run_the_first_ones_weights_is_a_located_error(
        tmp_path: Path, assert_bad_edit_is_located) -> None:
    # BiFPN's first repetition projects ResNet-50's c3..c5 to 64 channels; the later ones take 64 as they are
    assert_bad_edit_is_located(
        tmp_path, "bifpn", lambda text: text.replace("repeats = 3\n", "repeats = 3\nshared = true\n", 1),
        "cells[0].shared", "bifpn_2/n6 cannot run the weights of bifpn_1/n6: its input 0 (bifpn_1/n10) is brought "
        "in by [=], the first's by [conv 1x1 2048->64]", "d0", (128, 128), backbone="resnet")


def test_a_shared_owner_that_is_pruned_hands_its_weights_to_the_first_built_repetition() -> None:
    data = _data()
    pyramid = data["cells"][1]
    # z: an output at level 5 that nothing reads: in repetitions 1 and 2 it feeds nothing and is pruned
    next(b for b in pyramid["blocks"] if b["name"] == "u5")["output"] = False
    pyramid["blocks"].append({"name": "z", "level": 5, "inputs": ["u4", "u5"], "fusion": "weighted",
                              "filters": "lat", "output": True,
                              "ops": [{"op": "act"}, {"op": "separable_conv", "kernel": 3}, {"op": "norm"}]})
    plan = _plan(data)
    plan.lint()
    assert {"pyramid_1/z", "pyramid_2/z"} <= set(plan.pruned)
    assert plan.node("pyramid_3/z").shares is None  # the first z built owns its weights
    assert plan.node("pyramid_3/u5").shares == "pyramid_1/u5"


def test_lint_refuses_a_node_that_shares_weights_it_cannot_run() -> None:
    plan = _plan(_data())
    nodes = list(plan.nodes)
    i = next(i for i, n in enumerate(nodes) if n.name == "pyramid_2/t4")
    nodes[i] = replace(nodes[i], shares="pyramid_1/u4")  # three inputs, not two
    with pytest.raises(specgraph.PlanError, match=r"pyramid_2/t4\.shares: .*cannot run that node's weights"):
        replace(plan, nodes=tuple(nodes)).lint()
    nodes[i] = replace(nodes[i], shares="endpoint_9")
    with pytest.raises(specgraph.PlanError, match="'endpoint_9' is not an earlier node with weights of its own"):
        replace(plan, nodes=tuple(nodes)).lint()


def test_sharing_survives_the_plan_dict() -> None:
    plan = _plan(_data())
    again = specgraph.Plan.from_dict(plan.to_dict())
    assert again == plan and again.hash == plan.hash
    assert again.node("pyramid_3/u4").shares == "pyramid_1/u4"


def test_the_plan_table_and_the_drawing_say_whose_weights_a_node_runs() -> None:
    plan = _plan(_data())
    row = next(line for line in plan.table().splitlines() if line.startswith("pyramid_2/t4 "))
    assert row.endswith("(weights of pyramid_1/t4)")
    root = ElementTree.fromstring(specgraph.render_svg(plan))
    titles = {g.get("data-node"): "".join(g.find(f"{SVG}title").itertext())
              for g in root.iter(f"{SVG}g") if g.get("class") == "node"}
    assert "runs the weights of pyramid_1/t4" in titles["pyramid_2/t4"]
    assert "runs the weights" not in titles["pyramid_1/t4"]


def test_a_part_written_inline_is_located_in_the_composition(tmp_path: Path) -> None:
    bifpn = tomllib.loads((Path(__file__).parents[1] / "specs" / "bifpn.toml").read_text(encoding="utf-8"))
    bifpn["cells"][0]["shared"] = True
    file = tmp_path / "inline.yaml"
    file.write_text(yaml.safe_dump({"name": "inline", "backbone": "resnet", "decoders": [bifpn],
                                    "variants": {"v": {"use": {"bifpn": "d0"}}}}, sort_keys=False), encoding="utf-8")
    line = file.read_text(encoding="utf-8").splitlines().index("    shared: true") + 1
    with pytest.raises(specgraph.SpecgraphError) as info:
        specgraph.plan(specgraph.load(file), "v", (128, 128))
    (problem,) = info.value.problems
    assert (problem.file, problem.line, problem.path) == (str(file), line, "decoders[0].cells[0].shared")
    assert problem.message.startswith("bifpn_2/n6 cannot run the weights of bifpn_1/n6")
