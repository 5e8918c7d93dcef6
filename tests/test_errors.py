"""Bad specs: each raises its SpecgraphError subclass with a message naming the place.

Each case mutates the mini spec, writes it as YAML (one key per line), loads it, and
checks the exception type, the dotted path, a message fragment, and that the reported
line of the file holds the offending key.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

import specgraph
from specgraph import GraphError, PlanError, SpecgraphError, SpecSyntaxError, SpecValidationError


def _set(path: list, value: Any) -> Callable[[dict], None]:
    def mutate(data: dict) -> None:
        target = data
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value

    return mutate


def _delete(path: list) -> Callable[[dict], None]:
    def mutate(data: dict) -> None:
        target = data
        for key in path[:-1]:
            target = target[key]
        del target[path[-1]]

    return mutate


def _both(*mutations: Callable[[dict], None]) -> Callable[[dict], None]:
    def mutate(data: dict) -> None:
        for m in mutations:
            m(data)

    return mutate


# (id, mutation, exception, path in the message, message fragment, text expected on the reported line)
CASES = [
    ("unknown-top-field", _set(["blokcs"], []), SpecValidationError, "blokcs", "did you mean 'blocks'", "blokcs"),
    ("unknown-block-field", _set(["blocks", 1, "inptus"], ["s1"]), SpecValidationError, "blocks[1].inptus",
     "did you mean 'inputs'", "inptus"),
    ("missing-level", _delete(["blocks", 2, "level"]), SpecValidationError, "blocks[2].level",
     "required field is missing", "name: b3"),
    ("bad-block-type", _set(["blocks", 0, "type"], "bottlenek"), SpecValidationError, "blocks[0].type",
     "'bottlenek'", "bottlenek"),
    ("negative-level", _set(["blocks", 0, "level"], -1), SpecValidationError, "blocks[0].level",
     "greater than or equal to 0", "level: -1"),
    ("level-too-high", _set(["blocks", 0, "level"], 13), SpecValidationError, "blocks[0].level",
     "less than or equal to 12", "level: 13"),
    ("level-without-filters", _set(["blocks", 4, "level"], 8), GraphError, "blocks[4].level",
     "level 8 has no base filters", "level: 8"),
    ("unknown-input", _set(["blocks", 7, "inputs", 1], "b9"), GraphError, "blocks[7].inputs[1]",
     "no block named 'b9'; known: s1, b1, b2", "b9"),
    ("self-input", _set(["blocks", 3, "inputs", 0], "b4"), GraphError, "blocks[3].inputs[0]",
     "cannot be its own input", "b4"),
    ("duplicate-input", _set(["blocks", 2, "inputs"], ["b1", "b1"]), GraphError, "blocks[2].inputs[1]",
     "listed twice", "b1"),
    ("duplicate-name", _set(["blocks", 3, "name"], "b2"), GraphError, "blocks[3].name",
     "duplicate name 'b2', first used at blocks[1]", "name: b2"),
    ("cycle", _set(["blocks", 1, "inputs"], ["s1", "b3"]), GraphError, "blocks[1].inputs",
     "cycle", "inputs"),
    ("two-outputs-one-level", _set(["blocks", 0, "output"], True), GraphError, "blocks[5].output",
     "level 3 already has output block 'b1'", "output: true"),
    ("endpoint-not-produced", _set(["blocks", 9, "output"], False), GraphError, "endpoints",
     "endpoint level 7", "endpoints"),
    ("empty-inputs", _set(["blocks", 0, "inputs"], []), SpecValidationError, "blocks[0].inputs",
     "at least 1 item", "inputs"),
    ("too-many-inputs", _set(["blocks", 9, "inputs"], ["b1"] * 9), SpecValidationError, "blocks[9].inputs",
     "at most 8 items", "inputs"),
    ("zero-filters", _set(["filters", 3], 0), SpecValidationError, "filters[3]",
     "greater than or equal to 1", "3: 0"),
    ("zero-scale", _set(["variants", "A", "filter_size_scale"], 0), SpecValidationError,
     "variants.A.filter_size_scale", "greater than 0", "filter_size_scale"),
    ("scale-gives-no-filters", _set(["variants", "A", "filter_size_scale"], 0.01), GraphError,
     "variants.A.filter_size_scale", "= 0 filters", "filter_size_scale"),
    ("alpha-gives-no-channels", _set(["variants", "A", "resample_alpha"], 0.01), GraphError,
     "variants.A.resample_alpha", "= 0 channels", "resample_alpha"),
    ("zero-repeats", _set(["variants", "A", "block_repeats"], 0), SpecValidationError,
     "variants.A.block_repeats", "greater than or equal to 1", "block_repeats"),
    ("huge-repeats", _set(["variants", "A", "block_repeats"], 1000), SpecValidationError,
     "variants.A.block_repeats", "less than or equal to 64", "block_repeats"),
    ("unknown-activation", _set(["activation"], "reluu"), SpecValidationError, "activation",
     "unknown activation 'reluu'", "reluu"),
    ("missing-default-variant", _set(["default_variant"], "B"), GraphError, "default_variant",
     "no variant 'B'; known: A", "default_variant"),
    ("min-above-max", _set(["endpoints"], {"min_level": 7, "max_level": 5}), GraphError, "endpoints.min_level",
     "above max_level", "min_level"),
    ("reserved-name", _set(["blocks", 0, "name"], "stem"), GraphError, "blocks[0].name",
     "reserved", "name: stem"),
    ("endpoint-prefix-name", _set(["blocks", 0, "name"], "endpoint_3"), GraphError, "blocks[0].name",
     "reserved", "endpoint_3"),
    ("whitespace-name", _set(["blocks", 0, "name"], "my block"), SpecValidationError, "blocks[0].name",
     "no whitespace", "my block"),
    ("dotted-name", _set(["blocks", 0, "name"], "block.1"), SpecValidationError, "blocks[0].name",
     "no '.'", "block.1"),
    ("bad-fusion", _set(["fusion"], {"method": "mean"}), SpecValidationError, "fusion.method",
     "'sum', 'weighted', 'weighted_channel', 'softmax', 'attention' or 'concat'", "mean"),
    ("bad-downsample", _set(["resample"], {"down": "avgpool"}), SpecValidationError, "resample.down",
     "'conv_maxpool'", "avgpool"),
    ("stem-level-jump", _set(["stem", "blocks", 0, "level"], 4), GraphError, "stem.blocks[0].level",
     "one above", "level: 4"),
    ("bad-momentum", _set(["norm"], {"momentum": 1.5}), SpecValidationError, "norm.momentum",
     "less than 1", "momentum"),
    ("no-variants", _set(["variants"], {}), SpecValidationError, "variants", "at least 1 item", "variants"),
    ("no-blocks", _set(["blocks"], []), SpecValidationError, "blocks", "at least 1 item", "blocks"),
    ("inputs-not-list", _set(["blocks", 0, "inputs"], "s1"), SpecValidationError, "blocks[0].inputs",
     "valid list", "inputs"),
    ("level-not-int", _set(["blocks", 0, "level"], "three"), SpecValidationError, "blocks[0].level",
     "valid integer", "three"),
    ("stem-stride-3", _set(["stem", "conv", "stride"], 3), SpecValidationError, "stem.conv.stride",
     "1 or 2", "stride: 3"),
    ("missing-endpoint-filters", _delete(["variants", "A", "endpoints_num_filters"]), SpecValidationError,
     "variants.A.endpoints_num_filters", "required field is missing", "A:"),
    ("unknown-stem-field", _both(_set(["stem", "kernal"], 7)), SpecValidationError, "stem.kernal",
     "unknown field 'kernal'", "kernal"),
]


@pytest.mark.parametrize(("case", "mutate", "error", "path", "fragment", "line_text"), CASES,
                         ids=[c[0] for c in CASES])
def test_bad_spec(tmp_path: Path, mini, case, mutate, error, path, fragment, line_text) -> None:
    data = mini()
    mutate(data)
    file = tmp_path / f"{case}.yaml"
    text = yaml.safe_dump(data, sort_keys=False, default_flow_style=False)
    file.write_text(text)
    with pytest.raises(error) as info:
        specgraph.load(file)
    exc = info.value
    message = str(exc)
    assert isinstance(exc, SpecgraphError)
    assert f"{path}:" in message, message
    assert fragment in message, message
    problem = next(p for p in exc.problems if p.path == path)
    assert problem.file == str(file)
    assert problem.line is not None, message
    assert line_text in text.splitlines()[problem.line - 1], (message, text.splitlines()[problem.line - 1])
    assert f"{file}:{problem.line}: {path}: " in message


def test_all_problems_reported_at_once(mini) -> None:
    data = mini()
    data["blocks"][0]["type"] = "nope"
    data["blocks"][3]["level"] = 99
    with pytest.raises(SpecValidationError) as info:
        specgraph.load(data)
    assert {p.path for p in info.value.problems} == {"blocks[0].type", "blocks[3].level"}


def test_toml_errors_name_the_line(tmp_path: Path) -> None:
    text = Path(specgraph.__file__).parent.parent.joinpath("specs/spinenet.toml").read_text()
    bad = text.replace('{ name = "sp8",  level = 7, type = "residual",   inputs = ["sp5",    "sp7"]',
                       '{ name = "sp8",  level = 7, type = "residual",   inputs = ["sp5",    "sp77"]')
    assert bad != text
    file = tmp_path / "bad.toml"
    file.write_text(bad)
    with pytest.raises(GraphError) as info:
        specgraph.load(file)
    line = next(i for i, t in enumerate(bad.splitlines(), 1) if '"sp77"' in t)
    assert str(info.value).startswith(f"{file}:{line}: blocks[7].inputs[1]: no block named 'sp77'; "
                                      "did you mean 'sp7'?")


def test_toml_syntax_error_has_line(tmp_path: Path) -> None:
    file = tmp_path / "broken.toml"
    file.write_text('name = "x"\nactivation = relu\n')
    with pytest.raises(SpecSyntaxError) as info:
        specgraph.load(file)
    assert info.value.line == 2
    assert str(info.value).startswith(f"{file}:2: invalid TOML")


def test_yaml_syntax_error_has_line(tmp_path: Path) -> None:
    file = tmp_path / "broken.yaml"
    file.write_text("name: x\nblocks: [a, b\nfilters: {}\n")
    with pytest.raises(SpecSyntaxError) as info:
        specgraph.load(file)
    assert info.value.line is not None and info.value.line >= 2
    assert "invalid YAML" in str(info.value)


def test_not_a_mapping(tmp_path: Path) -> None:
    file = tmp_path / "list.yaml"
    file.write_text("- a\n- b\n")
    with pytest.raises(SpecSyntaxError, match="a spec is a mapping"):
        specgraph.load(file)


def test_missing_file_lists_builtins() -> None:
    with pytest.raises(SpecSyntaxError, match=r"built-in: .*spinenet"):
        specgraph.load("no_such_spec.toml")


def test_unknown_suffix(tmp_path: Path) -> None:
    file = tmp_path / "spec.txt"
    file.write_text("name: x\n")
    with pytest.raises(SpecSyntaxError, match="unknown spec file type"):
        specgraph.load(file)


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"variant": "B"}, "no variant 'B'; known: A"),
        ({"input_size": (0, 640)}, "between 1 and"),
        ({"input_size": "640by640"}, "write it as HxW"),
        ({"input_size": (640, 640, 3)}, "give (H, W)"),
        ({"max_level": 8}, "no output block at level 8"),
        ({"min_level": 2}, "no output block at level 2"),
        ({"min_level": 5, "max_level": 4}, "need 0 <= min_level <= max_level"),
    ],
)
def test_plan_errors(mini, kwargs, fragment) -> None:
    spec = specgraph.load(mini())
    with pytest.raises(PlanError) as info:
        specgraph.plan(spec, **kwargs)
    assert fragment in str(info.value)


def test_plan_takes_what_load_takes_and_names_a_bad_argument() -> None:
    assert specgraph.plan("spinenet", "49S", 256) == specgraph.plan(specgraph.load("spinenet"), "49S", 256)
    with pytest.raises(specgraph.ArgumentError, match=r"plan\(spec\): expected a Spec"):
        specgraph.plan(None)  # type: ignore[arg-type]


def test_several_variants_need_a_choice(mini) -> None:
    data = mini()
    data["variants"]["B"] = {"endpoints_num_filters": 8}
    spec = specgraph.load(data)
    with pytest.raises(PlanError, match="pick one of: A, B"):
        specgraph.plan(spec)
