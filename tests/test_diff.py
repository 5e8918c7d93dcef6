"""specgraph.diff / `specgraph diff`: exactly the changes, checked against hand-written expectations, and the
costs per level against Model Garden's figures (docs: shared reference modelgarden-figures.md)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from xml.etree import ElementTree

import specgraph
from specgraph._diff import Change

SVG = "{http://www.w3.org/2000/svg}"


def _edited(spec: specgraph.Spec, **fields_by_block: dict) -> specgraph.Spec:
    data = spec.to_dict()
    for block in data["blocks"]:
        block.update(fields_by_block.get(block["name"], {}))
    return specgraph.load(data)


def test_spinenet_49_to_49s_is_two_variant_scalars_and_model_gardens_costs() -> None:
    spinenet = specgraph.load("spinenet")
    d = specgraph.diff(spinenet, spinenet, "49", "49S")
    assert d.settings == (Change("", "variant.endpoints_num_filters", 256, 128),
                          Change("", "variant.filter_size_scale", 1.0, 0.65))
    assert (d.added, d.removed, d.changed) == ((), (), ())
    # Model Garden's SpineNet-49 and -49S at 640x640: parameters and conv GMACs
    assert d.params == (21_920_192, 9_146_351)
    assert round(d.macs[0] / 1e9, 3) == 28.262 and round(d.macs[1] / 1e9, 3) == 12.325
    assert [c.level for c in d.levels] == [2, 3, 4, 5, 6, 7]
    assert "setting variant.filter_size_scale 1.0 -> 0.65" in d.text()


def test_a_one_block_change_is_listed_alone_and_moves_its_cost_between_levels() -> None:
    spinenet = specgraph.load("spinenet")
    moved = _edited(spinenet, sp3={"level": 4})
    d = specgraph.diff(spinenet, moved, "49")
    assert d.settings == () and d.added == () and d.removed == ()
    assert d.changed == (Change("sp3", "level", 3, 4),)
    before, after = ({c.level: c.params[k] for c in d.levels} for k in (0, 1))
    assert {lvl for lvl in before if before[lvl] != after[lvl]} == {3, 4}  # sp3 left level 3 for level 4
    assert "~ sp3: level 3 -> 4" in d.text()
    # a mutation's own record of its change is what the diff finds
    for seed in range(8):
        mutant, change = specgraph.mutate(spinenet, seed)
        found = specgraph.diff(spinenet, mutant, "49").changed
        if change.kind == "swap":
            assert {c.block for c in found} == set(change.before) and {c.field for c in found} == {"place"}
        else:
            field = "inputs" if change.kind == "parent" else change.kind
            assert found == (Change(change.block, field, change.before, change.after),)


def test_blocks_added_removed_and_swapped() -> None:
    spinenet = specgraph.load("spinenet")
    data = spinenet.to_dict()
    data["blocks"] = [b for b in data["blocks"] if b["name"] != "sp16"]  # the level-2 output (min_level 3)
    data["blocks"].insert(3, {"name": "extra", "level": 5, "type": "residual", "inputs": ["sp1", "sp2"]})
    d = specgraph.diff(spinenet, specgraph.load(data), "49")
    assert (d.added, d.removed) == (("extra",), ("sp16",))
    assert d.changed == ()  # the others keep their order among the blocks both have
    swapped = spinenet.to_dict()
    swapped["blocks"][4], swapped["blocks"][5] = swapped["blocks"][5], swapped["blocks"][4]  # sp5, sp6
    d = specgraph.diff(spinenet, specgraph.load(swapped), "49")
    assert d.changed == (Change("sp6", "place", 5, 4), Change("sp5", "place", 4, 5))


def test_the_drawing_outlines_what_changed_and_names_what_was_removed() -> None:
    spinenet = specgraph.load("spinenet")
    data = spinenet.to_dict()
    for block in data["blocks"]:
        block.update({"sp9": {"type": "residual"}, "sp5": {"inputs": ["extra", "sp4"]}}.get(block["name"], {}))
    data["blocks"] = [b for b in data["blocks"] if b["name"] != "sp16"]
    data["blocks"].insert(3, {"name": "extra", "level": 5, "type": "residual", "inputs": ["sp1", "sp2"]})
    root = ElementTree.fromstring(specgraph.diff(spinenet, specgraph.load(data), "49S", input_size=256).svg())
    marked = {g.get("data-node"): g.get("data-diff") for g in root.iter(f"{SVG}g") if g.get("data-diff")}
    assert marked == {"sp9": "changed", "sp5": "changed", "extra": "added"}
    legend = " ".join("".join(t.itertext()) for g in root.iter(f"{SVG}g") if g.get("class") == "legend"
                      for t in g.iter(f"{SVG}text"))
    assert "removed: sp16" in legend and "added" in legend and "changed" in legend


def test_the_command_line_prints_the_diff_as_text_json_and_svg(tmp_path: Path) -> None:
    cmd = [sys.executable, "-m", "specgraph.cli", "diff", "spinenet", "spinenet", "-v", "49", "--variant-b", "49S"]
    text = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert text.returncode == 0, text.stderr
    assert text.stdout.splitlines()[:3] == ["spinenet 49 -> spinenet 49S @ 640x640",
                                            "  setting variant.endpoints_num_filters 256 -> 128",
                                            "  setting variant.filter_size_scale 1.0 -> 0.65"]
    data = json.loads(subprocess.run([*cmd, "--json", "--svg", str(tmp_path / "d.svg")], capture_output=True,
                                     text=True, timeout=120).stdout)
    assert data["params"] == [21_920_192, 9_146_351] and data["changed"] == []
    assert (tmp_path / "d.svg").read_text(encoding="utf-8").startswith("<?xml")
