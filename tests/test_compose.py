"""Compositions: a backbone spec + decoder specs loaded as one spec (specgraph/_compose.py)."""

from __future__ import annotations

import copy
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import specgraph
from specgraph.testing import composed_specs, decoder_specs

SPECS = Path(__file__).parents[1] / "specs"
# Model Garden's NAS-FPN (num_repeats 5) on ResNet-50's levels 3..5 (docs: shared reference figures).
NASFPN_5_ON_RESNET50 = 21_609_984


def _write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.write_text(text, encoding="utf-8")
    return path


def test_the_shipped_compositions_are_their_parts_side_by_side() -> None:
    spec = specgraph.load("resnet_fpn")
    assert spec.parts == ["resnet", "fpn"] and spec.stem is not None
    assert {b.part for b in spec.blocks} == {"fpn"}
    lateral = next(b for b in spec.blocks if b.name == "lateral_3")
    assert lateral.inputs == ["res3"]  # fpn's input c3 is ResNet's level-3 endpoint
    plan = specgraph.plan(spec, "101", (64, 64))
    backbone = specgraph.plan("resnet", "101", (64, 64))
    # the backbone's output flags stay in its part: only the decoder's outputs are the network's
    assert all(n.output_level is None for n in plan.nodes if n.kind == "stem_block")
    assert [n for n in plan.nodes if n.kind in ("stem", "stem_block")] == \
        [replace(n, output_level=None, part="resnet") for n in backbone.nodes if n.kind in ("stem", "stem_block")]


def test_spinenet_nasfpn_is_spinenet_at_levels_3_to_5_under_nasfpn() -> None:
    composed = specgraph.plan("spinenet_nasfpn", "49-5", (128, 128))
    spinenet = specgraph.plan("spinenet", "49", (128, 128), levels=[3, 4, 5])
    nodes = {n.name: n for n in composed.nodes}
    for node in spinenet.nodes:
        if node.kind == "endpoint":  # SpineNet's endpoint conv + norm + act, as an op block of the backbone's part
            twin = nodes[f"spinenet_p{node.level}"]
            assert [op.describe() for op in twin.ops] == ["conv 1x1 " + node.ops[0].describe().split(" ", 2)[2]
                                                          .split(" +")[0], "norm", "act relu"]
        else:  # the same node, though no longer an output of the network
            assert nodes[node.name] == replace(node, output_level=None, part="spinenet")
    assert set(composed.pruned) >= {"spinenet_p6", "spinenet_p7"}  # NAS-FPN pools its own levels 6 and 7
    # NAS-FPN's input projections read 256 channels here, not ResNet-50's 512, 1024 and 2048
    projections = (512 + 1024 + 2048 - 3 * 256) * 256
    stats = specgraph.stats
    assert stats(composed).params == stats(spinenet).params + NASFPN_5_ON_RESNET50 - projections


def test_a_separable_decoder_leaves_the_backbones_endpoint_convs_plain() -> None:
    spec = specgraph.load({"name": "sep", "backbone": "spinenet", "decoders": ["nasfpn"],
                           "variants": {"v": {"use": {"spinenet": "49S", "nasfpn": "3-separable"}}}})
    assert spec.variants["v"].separable == ["nasfpn"]
    plan = specgraph.plan(spec, "v", (128, 128))
    assert type(plan.node("spinenet_p3").ops[0]).__name__ == "Conv"
    assert {type(op).__name__ for n in plan.nodes if n.name.startswith("nasfpn_") for op in n.ops} >= {
        "SeparableConv"}
    assert all(type(op).__name__ != "Conv" for n in plan.nodes if n.name.startswith("nasfpn_") for op in n.ops)


def test_a_decoders_activation_and_fusion_stay_its_own(tmp_path: Path) -> None:
    """BiFPN's activation is swish and its fusion default weighted; composed on a relu backbone whose fusion is
    sum, its act ops are still swish and its blocks still weighted (written on each block)."""
    spec = specgraph.load("resnet_bifpn")
    assert spec.activation == "relu" and spec.fusion.method == "sum"
    plan = specgraph.plan(spec, "d0", (128, 128))
    node = plan.node("bifpn_1/n5")
    assert node.fusion == "weighted" and node.ops[0].describe() == "act swish"
    assert plan.node("res3").block_type == "bottleneck"


def test_a_backbone_ending_in_a_cell_feeds_its_last_repetition(tmp_path: Path) -> None:
    data = {"name": "two", "backbone": "resnet_nasfpn", "decoders": ["bifpn"], "prefix": {"bifpn": "bi_"},
            "variants": {"r3": {"use": {"resnet_nasfpn": "3"}}, "r7": {"use": {"resnet_nasfpn": "7",
                                                                                  "bifpn": "d1"}}}}
    spec = specgraph.load(data)
    assert spec.parts == ["resnet", "nasfpn", "bifpn"]
    for variant, last in (("r3", "nasfpn_3"), ("r7", "nasfpn_7")):
        plan = specgraph.plan(spec, variant, (128, 128))
        assert plan.node("bi_bifpn_1/n8").inputs[0].source == f"{last}/b7"  # c3: NAS-FPN's level-3 output
        assert plan.node("bi_p6").inputs[0].source == f"{last}/b9"  # c5
    assert len([n for n in specgraph.plan(spec, "r7", (128, 128)).nodes if n.name.startswith("bi_bifpn_")]) == 4 * 8


def test_a_decoder_file_beside_the_composition_and_a_round_trip(tmp_path: Path) -> None:
    _write(tmp_path, "mine.toml", (SPECS / "fpn.toml").read_text(encoding="utf-8").replace('name = "fpn"',
                                                                                         'name = "mine"'))
    path = _write(tmp_path, "net.toml", 'name = "net"\nbackbone = "resnet"\ndecoders = ["mine.toml"]\n')
    spec = specgraph.load(path)
    assert spec.parts == ["resnet", "mine"] and list(spec.variants) == ["default"]
    for fmt in ("toml", "yaml", "json"):
        again = specgraph.load(spec.dumps(fmt) + "\n")
        assert again == spec
        assert specgraph.plan(again, input_size=64).hash == specgraph.plan(spec, input_size=64).hash


def test_a_decoder_alone_plans_on_its_declared_inputs() -> None:
    """Input nodes of the declared levels and channels, sized as that level of the image; the counts of Model
    Garden's FPN and NAS-FPN (ResNet-50's channels in) and of effdet's BiFPN (reference figures)."""
    spec = specgraph.load("nasfpn")
    assert spec.stem is None and [i.level for i in spec.inputs] == [3, 4, 5]
    plan = specgraph.plan(spec, "3", (100, 150))
    assert plan.inputs == (("3", "c3"), ("4", "c4"), ("5", "c5"))
    c4 = plan.node("c4")
    assert (c4.kind, c4.size, c4.channels, c4.inputs, c4.ops) == ("input", (7, 10), 1024, (), ())
    assert specgraph.stats(plan).params == 13_334_528
    assert specgraph.stats(specgraph.plan("nasfpn", "7-separable", 128)).params == 4_311_808
    assert specgraph.stats(specgraph.plan("fpn", "default", 128)).params == 3_873_792
    assert specgraph.stats(specgraph.plan("bifpn", "d2", 128)).params == 1_542_783
    with pytest.raises(specgraph.BackendError, match=r"fpn is a decoder .* compose it with a backbone"):
        specgraph.plan("fpn", input_size=64).require_image("TorchvisionBackbone")


def test_two_inputs_at_one_level_are_refused(tmp_path: Path) -> None:
    text = (SPECS / "fpn.toml").read_text(encoding="utf-8").replace('{ name = "c4", level = 4',
                                                                    '{ name = "c4", level = 3')
    file = _write(tmp_path, "fpn.toml", text)
    with pytest.raises(specgraph.SpecgraphError) as info:
        specgraph.load(file)
    assert any(p.path == "inputs[1].level" and "'c3' is at level 3 too" in p.message and p.line == 19
               for p in info.value.problems), [str(p) for p in info.value.problems]


COMPOSITION = 'name = "net"\nbackbone = "resnet"\ndecoders = ["fpn"]\n\n[variants.a]\nuse = { resnet = "50" }\n'


@pytest.mark.parametrize(("edit", "path", "line", "words"), [
    (lambda t: t.replace('resnet = "50"', 'resnt = "50"'), "variants.a.use.resnt", 6, "no part 'resnt'"),
    (lambda t: t.replace('resnet = "50"', 'resnet = "51"'), "variants.a.use.resnet", 6, "known: 50, 101"),
    (lambda t: t.replace('decoders = ["fpn"]', 'decoders = ["spinenet"]'), "decoders[0]", 3, "has a stem"),
    (lambda t: t.replace('backbone = "resnet"', 'backbone = "fpn"'), "backbone", 2, "a backbone starts with a stem"),
    (lambda t: t.replace('decoders = ["fpn"]', 'decoders = ["fpn", "fpn"]'), "decoders[1]", 3, "each part once"),
    (lambda t: t.replace('backbone = "resnet"', 'backbone = "resnet_fpn"').replace('resnet = "50"',
                                                                                   'resnet_fpn = "50"'),
     "decoders[0]", 3, "each part once"),
    (lambda t: t.replace('backbone = "resnet"', 'backbone = "resnet_nasfpn"').replace(
        'decoders = ["fpn"]', 'decoders = ["bifpn"]').replace('resnet = "50"', 'resnet_nasfpn = "3"'),
     "decoders[0]", 3, "`prefix = { bifpn = \"bifpn_\" }`"),
    (lambda t: t.replace('backbone = "resnet"', 'backbone = 7'), "backbone", 2, "a built-in spec's name"),
    (lambda t: t.replace('decoders = ["fpn"]', 'decoders = ["fpn"]\nprefixes = { fpn = "x" }'), "prefixes", 4,
     "did you mean 'prefix'"),
    (lambda t: t.replace('decoders = ["fpn"]', 'decoders = ["net.toml"]'), "backbone", 2, "includes itself"),
])
def test_composition_errors_are_located(tmp_path: Path, edit: Any, path: str, line: int, words: str) -> None:
    bad = edit(COMPOSITION)
    assert bad != COMPOSITION
    file = _write(tmp_path, "net.toml", bad)
    with pytest.raises(specgraph.SpecgraphError) as info:
        specgraph.plan(specgraph.load(file), "a", (64, 64))
    problems = info.value.problems
    assert any(p.path == path and words in p.message and p.line == line and p.file == str(file)
               for p in problems), [str(p) for p in problems]


def test_a_decoder_taking_a_level_the_backbone_lacks_is_located(tmp_path: Path) -> None:
    text = (SPECS / "fpn.toml").read_text(encoding="utf-8").replace('{ name = "c3", level = 3',
                                                                    '{ name = "c3", level = 1')
    text = text.replace('inputs = ["c3"], filters = 256', 'inputs = ["c3"], filters = 256', 1)
    _write(tmp_path, "low.toml", text.replace('name = "fpn"', 'name = "low"'))
    file = _write(tmp_path, "net.toml", 'name = "net"\nbackbone = "resnet"\ndecoders = ["low.toml"]\n')
    with pytest.raises(specgraph.SpecgraphError) as info:
        specgraph.load(file)
    assert [(p.path, p.line) for p in info.value.problems] == [("decoders[0]", 3)]
    assert "takes level 1 (its inputs[0], 'c3')" in info.value.problems[0].message
    assert "levels 2, 3, 4, 5" in info.value.problems[0].message


def test_an_inline_decoders_errors_are_located_in_the_composition(tmp_path: Path) -> None:
    decoder = specgraph.load("fpn").to_dict()
    data = {"name": "net", "backbone": "resnet", "decoders": [decoder]}
    text = specgraph.load(data).dumps("yaml")  # a flat spec; write the composition itself as YAML
    import yaml

    bad = copy.deepcopy(data)
    bad["decoders"][0]["blocks"][3]["inputs"] = ["lateral_5", "lateral_9"]
    file = _write(tmp_path, "net.yaml", yaml.safe_dump(bad, sort_keys=False))
    with pytest.raises(specgraph.SpecgraphError) as info:
        specgraph.load(file)
    [problem] = info.value.problems
    assert problem.path == "decoders[0].blocks[3].inputs[1]" and "no block named 'lateral_9'" in problem.message
    lines = file.read_text(encoding="utf-8").splitlines()
    assert problem.line is not None and "lateral_9" in lines[problem.line - 1]
    assert text  # the good composition wrote


def test_norms_must_agree(tmp_path: Path) -> None:
    text = (SPECS / "fpn.toml").read_text(encoding="utf-8").replace("momentum = 0.99", "momentum = 0.9")
    _write(tmp_path, "fpn9.toml", text.replace('name = "fpn"', 'name = "fpn9"'))
    file = _write(tmp_path, "net.toml", 'name = "net"\nbackbone = "resnet"\ndecoders = ["fpn9.toml"]\n')
    with pytest.raises(specgraph.SpecgraphError, match=r"decoders\[0\]: 'fpn9''s \[norm\] \(0.9, 0.001\) differs"):
        specgraph.load(file)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(decoder_specs(), st.tuples(st.integers(1, 200), st.integers(1, 200)))
def test_random_decoders_alone_plan_lint_and_round_trip(data: dict[str, Any], size: tuple[int, int]) -> None:
    plan = specgraph.plan(specgraph.load(data), input_size=size)
    plan.lint()
    assert [name for _, name in plan.inputs] == [i["name"] for i in data["inputs"]]
    assert all(plan.node(name).kind == "input" for _, name in plan.inputs)
    again = specgraph.Plan.from_dict(plan.to_dict())
    assert again == plan and again.hash == plan.hash


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(composed_specs())
def test_random_compositions_plan_count_and_round_trip(data: dict[str, Any]) -> None:
    spec = specgraph.load(data)
    assert spec.parts == ["random", "decoder"]
    plan = specgraph.plan(spec, input_size=(40, 56))
    stats = specgraph.stats(plan)
    assert stats.params == sum(r.params for r in stats.nodes)
    # the endpoints are the decoder's outputs (its cell's last repetition where it has one)
    for _, name in plan.endpoints:
        source = plan.node(plan.node(name).inputs[0].source)
        assert source.name.startswith(("d", "dcell_"))
    again = specgraph.load(spec.dumps("yaml") + "\n")
    assert again == spec and specgraph.plan(again, input_size=(40, 56)).hash == plan.hash


def test_model_gardens_decoder_naming_follows_the_decoder_part_whatever_the_composition_is_called() -> None:
    from specgraph.backend_api import modelgarden_decoder_variables

    mine = specgraph.plan({"name": "my_detector_neck", "backbone": "resnet", "decoders": ["nasfpn"],
                           "variants": {"v": {"use": {"nasfpn": "3"}}}}, "v", (128, 128))
    first = modelgarden_decoder_variables(mine)[0]
    assert (first.node, first.layer, first.index) == ("p3", "conv2d", 0)  # Keras's per-class names (NAS-FPN)
    fpn = modelgarden_decoder_variables(specgraph.plan({"name": "other", "backbone": "resnet", "decoders": ["fpn"]},
                                                       input_size=(64, 64)))[0]
    assert (fpn.node, fpn.layer, fpn.index) == ("lateral_3", "lateral_3", None)  # FPN's layers named after blocks
