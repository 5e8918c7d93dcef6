"""The command line, run as a user runs it (a subprocess of the installed console script)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

SPECS = Path(__file__).resolve().parent.parent / "specs"


def run(*args: str) -> subprocess.CompletedProcess:
    exe = shutil.which("specgraph") or ""
    cmd = [exe, *args] if exe else [sys.executable, "-m", "specgraph.cli", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120)


def test_validate_all_builtin_specs() -> None:
    files = sorted(str(p) for p in SPECS.iterdir() if p.suffix in (".toml", ".yaml"))
    result = run("validate", *files)
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("ok ") == len(files)


def test_stats_json_matches_model_garden_counts() -> None:
    result = run("stats", "spinenet", "--variant", "49", "--input", "640x640", "--json")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["params"] == 21_920_192
    assert data["trainable_params"] == 21_831_488
    assert abs(data["macs"] / 1e9 - 28.262) < 0.03
    rows = {row["name"]: row for row in data["nodes"]}
    assert {"stem", "sp13", "endpoint_3"} <= set(rows) and "sp16" not in rows
    assert sum(r["params"] for r in data["nodes"]) == data["params"]


def test_stats_table() -> None:
    result = run("stats", str(SPECS / "spinenet_mobile.toml"), "--variant", "49", "--input", "384x384")
    assert result.returncode == 0, result.stderr
    assert "params 2,313,892 (trainable 2,268,708" in result.stdout


def test_plan_table_lists_resample_ops() -> None:
    result = run("plan", "spinenet", "--variant", "49", "--input", "640x640")
    assert result.returncode == 0, result.stderr
    sp14 = next(line for line in result.stdout.splitlines() if line.startswith("sp14 "))
    assert ("sp4 [conv 1x1 1024->128, conv 3x3/s2 128->128, maxpool 3x3/s2, maxpool 3x3/s2, "
            "conv 1x1 128->1024]") in sp14
    sp13 = next(line for line in result.stdout.splitlines() if line.startswith("sp13 "))
    assert "sp10 [direct (merge)]" in sp13
    assert "pruned (feed no endpoint): sp16" in result.stdout


def test_plan_odd_size_and_levels() -> None:
    result = run("plan", "spinenet", "-v", "49S", "--input", "641x479", "--min-level", "2", "--json")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    sizes = {n["name"]: n["size"] for n in data["nodes"]}
    assert sizes["sp16"] == [161, 120] and sizes["sp14"] == [6, 4]
    assert data["endpoints"][0] == ["2", "endpoint_2"]


def test_plan_level_selection() -> None:
    result = run("plan", "spinenet", "-v", "49", "--input", "640x640", "--levels", "3,5", "--json")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["endpoints"] == [["3", "endpoint_3"], ["5", "endpoint_5"]]
    names = {n["name"] for n in data["nodes"]}
    assert {"endpoint_3", "endpoint_5"} <= names and not {"endpoint_4", "endpoint_6", "endpoint_7"} & names
    table = run("plan", "spinenet", "-v", "49", "--levels", "3,5")
    assert "levels 3, 5," in table.stdout.splitlines()[0]
    stats = run("stats", "spinenet", "-v", "49", "--levels", "3,5", "--json")
    assert json.loads(stats.stdout)["params"] < 21_920_192  # the full network's, Model Garden's count


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (("stats", "spinenet", "--variant", "50"), "no variant '50'; known: 49S, 49, 96, 143, 143L, 190"),
        (("plan", "spinenet", "--input", "64by64"), "write it as HxW"),
        (("validate", "missing.toml"), "no spec file 'missing.toml'"),
        (("stats", "spinenet", "--max-level", "8"), "no output block at level 8"),
        (("plan", "spinenet", "--levels", "3,x"), "'x' is not a level"),
    ],
)
def test_errors_exit_2_without_traceback(args, fragment) -> None:
    result = run(*args)
    assert result.returncode == 2
    assert fragment in result.stderr
    assert "Traceback" not in result.stderr and result.stdout == ""


def test_bad_spec_file_exit_2_with_location(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    text = (SPECS / "spinenet_lite.yaml").read_text().replace("inputs: [lite1, lite2]}", "inputs: [lite1, lite22]}")
    bad.write_text(text)
    result = run("validate", str(SPECS / "spinenet.toml"), str(bad))
    assert result.returncode == 2
    line = next(i for i, t in enumerate(text.splitlines(), 1) if "lite22" in t)
    assert f"{bad}:{line}: blocks[2].inputs[1]: no block named 'lite22'" in result.stderr
    assert "Traceback" not in result.stderr


def test_validate_names_a_compositions_parts_and_a_decoders_inputs_plan_stats_and_emit_take_a_decoder_alone() -> None:
    result = run("validate", "resnet_fpn", "bifpn")
    assert result.returncode == 0, result.stderr
    assert "resnet_fpn, parts resnet + fpn, 15 blocks" in result.stdout
    assert "bifpn, a decoder of inputs c3 (level 3), c4 (level 4), c5 (level 5), 2 blocks, cell bifpn" in result.stdout
    plan = run("plan", "fpn", "--input", "640x640")
    assert plan.returncode == 0, plan.stderr
    # an input at level 3 of a 640x640 image is 640 / 2**3 = 80 wide
    assert re.search(r"^c3 +input +3 +80x80 +512 ", plan.stdout, re.M), plan.stdout
    decoder = json.loads(run("stats", "fpn", "--json").stdout)
    assert decoder["params"] == 3_873_792  # Model Garden's FPN on ResNet-50's C3..C5
    emitted = run("emit", "fpn")  # a decoder's source takes {level: features}
    assert emitted.returncode == 0, emitted.stderr
    assert "def forward(self, features: dict[str, torch.Tensor])" in emitted.stdout
    stats = run("stats", "resnet_fpn", "--variant", "50", "--input", "640x640", "--json")
    assert json.loads(stats.stdout)["params"] == 23_561_152 + 3_873_792  # Model Garden's ResNet-50 + its FPN
