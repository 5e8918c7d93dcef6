"""Search spaces in a spec ([search]): sample and mutate give only specs that validate and plan, and stay in
the space (checked against the published SpineNet space, docs: shared reference spinenet-search-space.md)."""

from __future__ import annotations

import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

import specgraph

SPECS = Path(__file__).parents[1] / "specs"
SIZE = (128, 128)
INTERMEDIATE = [f"i{k}" for k in range(1, 12)]
OUTPUTS = ["o3", "o4", "o5", "o6", "o7"]
# The published space: the intermediate blocks' base levels {2: 1, 3: 3, 4: 5, 5: 2}, offsets -1..2,
# two parents among the previous four blocks (the two stem blocks first); outputs at levels 3..7, offset 0.
BASE_LEVELS = Counter({2: 1, 3: 3, 4: 5, 5: 2})


@pytest.fixture(scope="module")
def space() -> specgraph.Spec:
    return specgraph.load("spinenet_space")


@pytest.fixture(scope="module")
def samples(space: specgraph.Spec) -> list[specgraph.Spec]:
    return specgraph.sample(space, 1000, seed=0)


def _base_level(space: specgraph.Spec) -> dict[str, int]:
    return {b.name: b.level for b in space.blocks}


def test_a_thousand_samples_plan_and_stay_in_the_published_space(space, samples) -> None:
    base = _base_level(space)
    assert Counter(base[n] for n in INTERMEDIATE) == BASE_LEVELS
    shapes = set()
    for spec in samples:
        assert spec.search is None and list(spec.variants) == ["proxy"]
        plan = specgraph.plan(spec, input_size=SIZE)
        assert specgraph.stats(plan).params > 0
        order = ["stem1", "stem2"] + [b.name for b in spec.blocks]
        assert sorted(order[2:13]) == sorted(INTERMEDIATE) and sorted(order[13:]) == sorted(OUTPUTS)
        for position, block in enumerate(spec.blocks, start=2):
            assert len(block.inputs) == 2 and len(set(block.inputs)) == 2
            assert block.type in ("residual", "bottleneck")
            if block.name in INTERMEDIATE:
                assert -1 <= block.level - base[block.name] <= 2, block
                assert set(block.inputs) <= set(order[max(0, position - 4):position]), (spec.name, block)
            else:
                assert block.level == base[block.name] and block.output
                assert set(block.inputs) <= set(order[:position]), (spec.name, block)
        shapes.add(tuple((b.name, b.level, b.type, tuple(b.inputs)) for b in spec.blocks))
    assert len(shapes) == len(samples)  # all different networks


def test_a_seed_reproduces_byte_identical_specs(space, samples) -> None:
    again = specgraph.sample(space, 10, seed=0)  # the first ten of the thousand: each sample has its own stream
    assert [s.dumps("toml") for s in again] == [s.dumps("toml") for s in samples[:10]]
    other = specgraph.sample(space, 10, seed=1)
    assert not {s.dumps("toml") for s in other} & {s.dumps("toml") for s in again}
    assert [s.name for s in again[:2]] == ["spinenet_space-s0-0", "spinenet_space-s0-1"]


@pytest.mark.parametrize("fmt", ["toml", "yaml", "json"])
def test_samples_round_trip_through_every_format(tmp_path: Path, samples, fmt: str) -> None:
    for spec in samples[:25]:
        path = tmp_path / f"{spec.name}.{fmt}"
        path.write_text(spec.dumps(fmt), encoding="utf-8")
        assert specgraph.load(path) == spec


def _difference(a: specgraph.Spec, b: specgraph.Spec) -> list[tuple[str, str, object, object]]:
    """Every (block, field, before, after) that differs, block by block in order."""
    changed = []
    for x, y in zip(a.blocks, b.blocks, strict=True):
        if x.name != y.name:
            changed.append((x.name, "place", x.name, y.name))
            continue
        for field in ("level", "type", "inputs", "output"):
            if getattr(x, field) != getattr(y, field):
                changed.append((x.name, field, getattr(x, field), getattr(y, field)))
    return changed


def test_a_thousand_mutations_plan_and_change_exactly_one_thing(space, samples) -> None:
    kinds = Counter()
    for seed, spec in enumerate(samples):
        mutant, change = specgraph.mutate(spec, seed, space)
        specgraph.plan(mutant, input_size=SIZE)
        diff = _difference(spec, mutant)
        kinds[change.kind] += 1
        if change.kind == "swap":
            a, b = change.before
            assert sorted(d[0] for d in diff) == sorted([a, b]) and all(d[1] == "place" for d in diff), diff
        else:
            field = "inputs" if change.kind == "parent" else change.kind
            assert diff == [(change.block, field, change.before, change.after)], (diff, change)
            if change.kind == "parent":  # one parent replaced
                assert len(set(change.before) & set(change.after)) == 1
    assert set(kinds) == {"level", "type", "parent", "swap"}, kinds
    assert specgraph.mutate(samples[3], 9, space)[0].dumps() == specgraph.mutate(samples[3], 9, space)[0].dumps()


def test_a_spec_without_a_search_table_mutates_in_the_default_space() -> None:
    spinenet = specgraph.load("spinenet")
    for seed in range(20):
        mutant, change = specgraph.mutate(spinenet, seed)
        specgraph.plan(mutant, "49S", SIZE)
        assert len(_difference(spinenet, mutant)) == (2 if change.kind == "swap" else 1)
        if change.kind == "level":
            assert abs(change.after - change.before) == 1
    with pytest.raises(specgraph.ArgumentError, match="declares no search space"):
        specgraph.sample(spinenet)
    with pytest.raises(specgraph.SearchError, match="varies nothing"):
        specgraph.mutate(specgraph.load("resnet_fpn"))


BAD = [
    ('blocks = ["i1", "i2", "i3", "i4", "i5", "i6", "i7", "i8", "i9", "i10", "i11"]\nlevel',
     'blocks = ["i1", "nope", "i3", "i4", "i5", "i6", "i7", "i8", "i9", "i10", "i11"]\nlevel',
     "search.blocks[0].blocks[1]", "no body block 'nope'"),
    ("level = { offset = [-1, 2] }", "level = { offset = [2, -1] }", "search.blocks[0].level", "low to high"),
    ('blocks = ["o3", "o4", "o5", "o6", "o7"]\ntype', 'blocks = ["o3", "o4", "o5", "o6", "i7"]\ntype',
     "search.blocks[1].type", "i7's type is searched by search.blocks[0] already"),
    ('[[search.permute]]\nblocks = ["o3"', '[[search.permute]]\nblocks = ["i3", "o3"',
     "search.permute[1].blocks[0]", "i3 is in search.permute[0] already"),
    ('variant = "proxy"\n\n#', 'variant = "big"\n\n#', "search.variant", "no variant 'big'"),
    ("inputs = { k = 2, window = 4 }", "inputs = { k = 9, window = 4 }", "search.blocks[0].inputs.k", "8"),
]


@pytest.mark.parametrize(("old", "new", "path", "words"), BAD, ids=[b[2] for b in BAD])
def test_a_bad_search_table_is_a_located_error(tmp_path: Path, old: str, new: str, path: str, words: str) -> None:
    text = (SPECS / "spinenet_space.toml").read_text(encoding="utf-8")
    assert old in text
    file = tmp_path / "space.toml"
    file.write_text(text.replace(old, new, 1), encoding="utf-8")
    with pytest.raises(specgraph.SpecgraphError) as info:
        specgraph.load(file)
    problems = info.value.problems
    assert any(p.path == path and words in p.message and p.file == str(file) and p.line for p in problems), \
        [str(p) for p in problems]


def test_a_space_with_no_valid_draw_says_so(tmp_path: Path) -> None:
    text = (SPECS / "spinenet_space.toml").read_text(encoding="utf-8")
    # every output at level 3 (a set of one level): five outputs at one level never plan
    text = text.replace('blocks = ["o3", "o4", "o5", "o6", "o7"]\ntype', 'blocks = ["o3", "o4", "o5", "o6", "o7"]\n'
                        'level = [3]\ntype').replace('[search]\n', '[search]\ntries = 5\n')
    file = tmp_path / "space.toml"
    file.write_text(text, encoding="utf-8")
    with pytest.raises(specgraph.SearchError, match=r"sample 0 \(seed 0\): no valid spec in 5 draws"):
        specgraph.sample(specgraph.load(file))


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "specgraph.cli", *args], capture_output=True, text=True,
                          timeout=120, cwd=cwd)


def test_the_command_line_samples_to_files_and_mutates(tmp_path: Path, samples) -> None:
    result = _cli("sample", "spinenet_space", "-n", "3", "--seed", "0", "-d", "out", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    files = sorted((tmp_path / "out").glob("*.toml"))
    assert [f.name for f in files] == [f"spinenet_space-s0-{i}.toml" for i in range(3)]
    assert [specgraph.load(f) for f in files] == samples[:3]
    again = _cli("sample", "spinenet_space", "-n", "3", "-d", "out", cwd=tmp_path)
    assert again.returncode == 2 and "exists" in again.stderr and "--force" in again.stderr
    mutated = _cli("mutate", str(files[0]), "--space", "spinenet_space", "--seed", "4", "-f", "yaml", cwd=tmp_path)
    assert mutated.returncode == 0, mutated.stderr
    mutant, change = specgraph.mutate(samples[0], 4, specgraph.load("spinenet_space"))
    assert mutated.stdout == mutant.dumps("yaml")
    assert mutated.stderr.strip() == f"specgraph mutate: {change}"
