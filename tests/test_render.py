"""The renderer: SVG structure, layout geometry, escaping, dot/mermaid text, golden file, CLI."""

from __future__ import annotations

import difflib
import itertools
import json
import os
import re
import xml.etree.ElementTree as ET
from collections import Counter
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import specgraph
from specgraph import cli
from specgraph._render import CHAR_EM, edge_label

DATA = Path(__file__).parent / "data"
GOLDEN = DATA / "golden" / "small.svg"
SVG = "{http://www.w3.org/2000/svg}"
UPDATE_ENV = "SPECGRAPH_UPDATE_GOLDEN"

BUILTIN_CASES = [(name, variant) for name in specgraph.builtin_specs()
                 for variant in specgraph.load(name).variants]


def _classes(el: ET.Element) -> set[str]:
    return set(el.get("class", "").split())


def _by_class(root: ET.Element, tag: str, cls: str) -> list[ET.Element]:
    return [el for el in root.iter(SVG + tag) if cls in _classes(el)]


def _parse(svg: str) -> ET.Element:
    root = ET.fromstring(svg.encode("utf-8"))
    assert root.tag == SVG + "svg"
    return root


@pytest.mark.parametrize(("name", "variant"), BUILTIN_CASES)
def test_every_builtin_variant_draws_one_element_per_node_and_edge(name: str, variant: str) -> None:
    plan = specgraph.plan(specgraph.load(name), variant)
    root = _parse(specgraph.render_svg(plan))
    nodes = _by_class(root, "g", "node")
    edges = _by_class(root, "g", "edge")
    assert len(nodes) == len(plan.nodes)
    assert len(edges) == len(plan.edges)
    assert [n.get("data-node") for n in nodes] == [n.name for n in plan.nodes]
    drawn = Counter((e.get("data-source"), e.get("data-target"), e.get("data-kind")) for e in edges)
    assert drawn == Counter((e.source, e.target, e.kind) for e in plan.edges)
    # every output block carries its endpoint level
    outputs = {n.get("data-node"): n.get("data-output") for n in nodes if n.get("data-output")}
    assert outputs == {n.name: str(n.output_level) for n in plan.nodes if n.output_level is not None}


# ---------------------------------------------------------------- geometry

Box = tuple[float, float, float, float]


def _text_boxes(root: ET.Element) -> list[tuple[Box, str]]:
    boxes = []
    for el in root.iter(SVG + "text"):
        text = "".join(el.itertext())
        size = float(el.get("font-size"))
        x, y = float(el.get("x")), float(el.get("y"))
        w = len(text) * CHAR_EM * size
        x0 = {"start": x, "middle": x - w / 2, "end": x - w}[el.get("text-anchor", "start")]
        boxes.append(((x0, y - 0.8 * size, x0 + w, y + 0.25 * size), text))
    return boxes


def _node_boxes(root: ET.Element) -> list[tuple[Box, str]]:
    out = []
    for g in _by_class(root, "g", "node"):
        (rect,) = _by_class(g, "rect", "box")
        x, y, w, h = (float(rect.get(k)) for k in ("x", "y", "width", "height"))
        out.append(((x, y, x + w, y + h), g.get("data-node")))
    return out


def _overlap(a: Box, b: Box, slack: float = 0.0) -> bool:
    return a[0] < b[2] - slack and b[0] < a[2] - slack and a[1] < b[3] - slack and b[1] < a[3] - slack


def _path_points(d: str) -> list[tuple[float, float]]:
    numbers = [float(v) for v in re.findall(r"-?\d+(?:\.\d+)?", d)]
    assert re.fullmatch(r"M[\d.,-]+(?:L[\d.,-]+Q[\d., -]+)*L[\d.,-]+", d), d
    return list(zip(numbers[::2], numbers[1::2], strict=True))


def _segment_hits(p: tuple[float, float], q: tuple[float, float], box: Box) -> bool:
    x0, y0, x1, y1 = box[0] + 1, box[1] + 1, box[2] - 1, box[3] - 1
    lo_x, hi_x = sorted((p[0], q[0]))
    lo_y, hi_y = sorted((p[1], q[1]))
    return lo_x < x1 and hi_x > x0 and lo_y < y1 and hi_y > y0


def _large_plans() -> list[specgraph.Plan]:
    return [
        specgraph.plan(specgraph.load("spinenet"), "49"),
        specgraph.plan(specgraph.load("spinenet"), "190", min_level=2, max_level=7),
        specgraph.plan(specgraph.load("spinenet_mobile"), "49"),
        specgraph.plan(specgraph.load(DATA / "custom60.toml")),
    ]


@pytest.fixture(scope="module", params=range(4), ids=["spinenet-49", "spinenet-190-L2", "mobile-49", "custom60"])
def drawn(request: pytest.FixtureRequest) -> tuple[specgraph.Plan, ET.Element]:
    plan = _large_plans()[request.param]
    return plan, _parse(specgraph.render_svg(plan))


def test_custom60_is_a_sixty_block_spec() -> None:
    spec = specgraph.load(DATA / "custom60.toml")
    assert len(spec.blocks) == 60


def test_node_boxes_never_overlap(drawn: tuple[specgraph.Plan, ET.Element]) -> None:
    _, root = drawn
    boxes = _node_boxes(root)
    for i, (a, name_a) in enumerate(boxes):
        for b, name_b in boxes[i + 1:]:
            assert not _overlap(a, b), f"nodes {name_a} and {name_b} overlap: {a} {b}"


def test_text_labels_never_overlap(drawn: tuple[specgraph.Plan, ET.Element]) -> None:
    plan, root = drawn
    boxes = _text_boxes(root)
    # names, type line, size line per node, one label per non-chain edge, rows, title, legend
    labelled = sum(1 for e in plan.edges if e.kind != "chain")
    assert len(boxes) >= 3 * len(plan.nodes) + labelled
    for i, (a, text_a) in enumerate(boxes):
        for b, text_b in boxes[i + 1:]:
            assert not _overlap(a, b), f"labels {text_a!r} and {text_b!r} overlap: {a} {b}"


def test_edge_labels_stay_outside_node_boxes(drawn: tuple[specgraph.Plan, ET.Element]) -> None:
    _, root = drawn
    nodes = _node_boxes(root)
    for g in _by_class(root, "g", "edge"):
        for box, text in _text_boxes(g):
            for node_box, name in nodes:
                assert not _overlap(box, node_box), f"edge label {text!r} covers node {name}"


def test_edges_never_run_through_a_node(drawn: tuple[specgraph.Plan, ET.Element]) -> None:
    _, root = drawn
    nodes = _node_boxes(root)
    for g in _by_class(root, "g", "edge"):
        (path,) = g.iter(SVG + "path")
        points = _path_points(path.get("d"))
        # the path starts on the source's right side and ends on the target's left side
        src = dict((n, b) for b, n in nodes)[g.get("data-source")]
        dst = dict((n, b) for b, n in nodes)[g.get("data-target")]
        assert points[0][0] == pytest.approx(src[2]) and src[1] < points[0][1] < src[3]
        assert points[-1][0] == pytest.approx(dst[0]) and dst[1] < points[-1][1] < dst[3]
        for p, q in itertools.pairwise(points):
            for box, name in nodes:
                assert not _segment_hits(p, q, box), (
                    f"edge {g.get('data-source')} -> {g.get('data-target')} crosses node {name}")


def test_rows_are_levels_with_strides(drawn: tuple[specgraph.Plan, ET.Element]) -> None:
    plan, root = drawn
    labels = ["".join(t.itertext()) for t in _by_class(root, "text", "row-label")]
    levels = sorted({n.level for n in plan.nodes}, reverse=True)
    assert labels == [f"L{lv} /{2**lv}" for lv in range(levels[0], levels[-1] - 1, -1)]
    # every node sits in its level's row, in plan order left to right (endpoints last)
    rows = {int(g.get("data-level")): g for g in _by_class(root, "g", "row")}
    xs = []
    for box, name in _node_boxes(root):
        row = next(r for r in rows[plan.node(name).level].iter(SVG + "rect"))
        top, height = float(row.get("y")), float(row.get("height"))
        assert top <= box[1] and box[3] <= top + height, name
        xs.append(box[0])
    body = [x for (x, n) in zip(xs, plan.nodes, strict=True) if n.kind != "endpoint"]
    assert body == sorted(body) and len(set(body)) == len(body)
    assert {x for (x, n) in zip(xs, plan.nodes, strict=True) if n.kind == "endpoint"} == {max(xs)}


@st.composite
def _random_plans(draw: st.DrawFn) -> specgraph.Plan:
    """Random topologies with long, markup-laden names: the layout invariants must hold for all."""
    prefix = st.text(alphabet="ab<>&\"'xyz{}$#", min_size=0, max_size=40)
    blocks: list[dict] = []
    names = ["s1"]
    count = draw(st.integers(1, 30))
    for i in range(count):
        name = f"{draw(prefix)}_{i}"
        inputs = draw(st.lists(st.sampled_from(names[-6:]), min_size=1, max_size=4, unique=True))
        blocks.append({"name": name, "level": draw(st.integers(2, 7)), "inputs": inputs,
                       "type": draw(st.sampled_from(["residual", "bottleneck", "mbconv"]))})
        names.append(name)
    for level in (3, 4):
        inputs = draw(st.lists(st.sampled_from(names), min_size=1, max_size=3, unique=True))
        blocks.append({"name": f"out{level}", "level": level, "type": "residual", "inputs": inputs, "output": True})
        names.append(f"out{level}")
    spec = specgraph.load({
        "name": "random", "filters": dict.fromkeys(range(2, 8), 8),
        "stem": {"conv": {"filters": 8}, "pool": {}, "blocks": [{"name": "s1", "level": 2, "type": "residual"}]},
        "fusion": {"merge_unused_into_outputs": draw(st.booleans())},
        "endpoints": {"min_level": 3, "max_level": 4},
        "variants": {"v": {"endpoints_num_filters": 8, "block_repeats": draw(st.integers(1, 3))}},
        "blocks": blocks,
    })
    return specgraph.plan(spec, input_size=256)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_random_plans())
def test_layout_invariants_hold_for_random_specs(plan: specgraph.Plan) -> None:
    drawn = (plan, _parse(specgraph.render_svg(plan)))
    assert len(_by_class(drawn[1], "g", "edge")) == len(plan.edges)
    test_node_boxes_never_overlap(drawn)
    test_text_labels_never_overlap(drawn)
    test_edge_labels_stay_outside_node_boxes(drawn)
    test_edges_never_run_through_a_node(drawn)
    test_rows_are_levels_with_strides(drawn)


# ---------------------------------------------------------------- content


def test_edge_labels_describe_the_resampling() -> None:
    plan = specgraph.plan(specgraph.load("spinenet"), "49")
    labels = {(e.source, e.target): edge_label(e) for e in plan.edges}
    assert labels["stem1", "sp2"] == "\u2193\u00d74 conv+pool"
    assert labels["sp1", "sp3"] == "\u2193\u00d72 conv"
    assert labels["sp2", "sp3"] == "\u2191\u00d72 nearest"
    assert labels["sp8", "sp9"] == "\u2191\u00d74 nearest"
    assert labels["sp2", "sp6"] == "= same"
    assert labels["sp10", "sp13"] == "merge"
    assert labels["stem", "stem1"] == ""
    mobile = specgraph.plan(specgraph.load("spinenet_mobile"), "49")
    assert {edge_label(e) for e in mobile.edges if e.source == "sp5" and e.target == "sp15"} == {"\u2193\u00d78 dw"}


def test_svg_shows_repeats_as_a_count_and_marks_merges_and_outputs() -> None:
    plan = specgraph.plan(specgraph.load("spinenet"), "190")
    root = _parse(specgraph.render_svg(plan))
    types = {g.get("data-node"): "".join(t.itertext()) for g in _by_class(root, "g", "node")
             for t in _by_class(g, "text", "type")}
    assert types["sp1"] == "bottleneck \u00d74"
    assert types["sp2"] == "residual \u00d74"
    (merge,) = [g for g in _by_class(root, "g", "edge") if g.get("data-kind") == "merge"]
    (path,) = merge.iter(SVG + "path")
    inputs = [next(g.iter(SVG + "path")) for g in _by_class(root, "g", "edge") if g.get("data-kind") == "input"]
    assert path.get("stroke-dasharray") and path.get("stroke") != inputs[0].get("stroke")
    assert not any(p.get("stroke-dasharray") for p in inputs)
    badges = {g.get("data-node"): "".join(t.itertext()) for g in _by_class(root, "g", "node")
              for t in _by_class(g, "text", "badge")}
    assert badges == {"sp11": "out L4", "sp12": "out L3", "sp13": "out L5", "sp14": "out L7", "sp15": "out L6"}
    legend = " ".join("".join(t.itertext()) for t in _by_class(root, "text", "legend"))
    for word in ("bottleneck", "residual", "stem", "endpoint", "resample", "merge"):
        assert word in legend


def test_golden_small_svg() -> None:
    plan = specgraph.plan(specgraph.load(DATA / "small.toml"), input_size=128)
    svg = specgraph.render_svg(plan)
    if os.environ.get(UPDATE_ENV) == "1":
        GOLDEN.write_text(svg, encoding="utf-8")
        pytest.skip(f"rewrote {GOLDEN}")
    expected = GOLDEN.read_text(encoding="utf-8")
    if svg != expected:
        diff = "\n".join(list(difflib.unified_diff(expected.splitlines(), svg.splitlines(), str(GOLDEN),
                                                   "render_svg(small)", lineterm=""))[:80])
        pytest.fail(f"the SVG of tests/data/small.toml changed; if that is intended, regenerate the golden file "
                    f"with {UPDATE_ENV}=1 pytest tests/test_render.py -k golden\n{diff}")


def test_repr_svg_for_plan_and_spec() -> None:
    spec = specgraph.load(DATA / "small.toml")
    plan = specgraph.plan(spec)
    for obj in (plan, spec):
        root = _parse(obj._repr_svg_())
        assert len(_by_class(root, "g", "node")) == len(plan.nodes)


def test_render_functions_refuse_non_plans() -> None:
    spec = specgraph.load(DATA / "small.toml")
    for fn in (specgraph.render_svg, specgraph.render_dot, specgraph.render_mermaid):
        with pytest.raises(specgraph.ArgumentError, match=r"\(plan\): expected a Plan"):
            fn(spec)


# ---------------------------------------------------------------- escaping

HOSTILE = ["</text><script>", "a<b&c\"d'e", "</svg>", "${x}", "{{x}}<script>alert('long')</script>", "tail\\", "#quot;",
           "`md`", "x]-->y", "\x01ctl"]


def _hostile_plan() -> specgraph.Plan:
    a, b, c, d, e, f, g, h, i, _ = HOSTILE
    j = "ctl"  # the schema refuses control characters: "\x01ctl" goes into the plan below
    blocks = [
        {"name": a, "level": 3, "type": "residual", "inputs": ["s1"]},
        {"name": b, "level": 4, "type": "residual", "inputs": ["s1", a]},
        {"name": c, "level": 3, "type": "residual", "inputs": [a, b]},
        {"name": d, "level": 5, "type": "residual", "inputs": [b, c]},
        {"name": e, "level": 4, "type": "residual", "inputs": [c, d]},
        {"name": f, "level": 3, "type": "residual", "inputs": [e, c]},
        {"name": g, "level": 3, "type": "residual", "inputs": [f]},
        {"name": h, "level": 3, "type": "residual", "inputs": [f, e], "output": True},
        {"name": i, "level": 4, "type": "residual", "inputs": [h, e], "output": True},
        {"name": j, "level": 5, "type": "residual", "inputs": [i, d], "output": True},
    ]
    spec = specgraph.load({
        "name": "evil</title>&", "filters": {2: 8, 3: 8, 4: 8, 5: 8},
        "stem": {"conv": {"filters": 8}, "pool": {}, "blocks": [{"name": "s1", "level": 2, "type": "residual"}]},
        "fusion": {"merge_unused_into_outputs": True},
        "endpoints": {"min_level": 3, "max_level": 5},
        "variants": {"v<1>": {"endpoints_num_filters": 8}},
        "blocks": blocks,
    })
    # A Plan can be built without the schema (Plan.from_dict): the renderers must not rely on it.
    data = specgraph.plan(spec, input_size=64).to_dict()
    del data["hash"]
    return specgraph.Plan.from_dict(json.loads(json.dumps(data).replace(json.dumps(j), json.dumps(HOSTILE[-1]))))


def _shown(name: str) -> str:
    return name.replace("\x01", "\\x01")


def test_hostile_names_are_literal_text_in_svg() -> None:
    plan = _hostile_plan()
    assert any(e.kind == "merge" for e in plan.edges)  # g merges into h
    svg = specgraph.render_svg(plan)
    root = _parse(svg)
    assert not [el for el in root.iter() if el.tag.endswith("script")]
    nodes = {g.get("data-node"): g for g in _by_class(root, "g", "node")}
    for name in HOSTILE:
        shown = _shown(name)
        g = nodes[shown]
        (visible,) = ["".join(t.itertext()) for t in _by_class(g, "text", "name")]
        # long names are cut on the box; the tooltip holds the whole name
        assert visible == shown if len(shown) <= 24 else visible == shown[:23] + "\u2026"
        assert "".join(g.find(SVG + "title").itertext()).startswith(shown + " (block, residual)")
    sources = {g.get("data-source") for g in _by_class(root, "g", "edge")}
    assert _shown(HOSTILE[0]) in sources
    title = "".join(root.find(SVG + "title").itertext())
    assert "evil</title>&" in title and "v<1>" in title


def _dot_labels(dot: str) -> dict[str, str]:
    labels = {}
    for node_id, label in re.findall(r"^\s+(n\d+) \[label=<(.*)>, fillcolor=", dot, re.M):
        root = ET.fromstring(f"<l>{label}</l>")
        labels[node_id] = "".join(root.find("b").itertext())
    return labels


def test_hostile_names_are_quoted_in_dot() -> None:
    plan = _hostile_plan()
    dot = specgraph.render_dot(plan)
    labels = _dot_labels(dot)
    assert sorted(labels.values()) == sorted(_shown(n.name) for n in plan.nodes)
    # identifiers are generated; spec text never appears outside an escaped HTML label
    for line in dot.splitlines():
        if "->" in line:
            assert re.fullmatch(r'\s+n\d+ -> n\d+ \[color="#[0-9a-f]{6}"(, label=<[^<>]*>)?(, style=dashed)?\];',
                                line), line
    assert "\\" not in dot.replace("&#92;", "")
    assert '"' not in "".join(re.findall(r"label=<(.*?)>[,;\]]", dot))


def test_hostile_names_are_quoted_in_mermaid() -> None:
    plan = _hostile_plan()
    text = specgraph.render_mermaid(plan)
    labels = re.findall(r'^\s+(n\d+)\["([^"]*)"\]$', text, re.M)
    assert len(labels) == len(plan.nodes)
    lines = [label.split("<br>") for _, label in labels]
    decoded = [re.sub(r"#(\d+);", lambda m: chr(int(m.group(1))), parts[0]) for parts in lines]
    assert sorted(decoded) == sorted(_shown(n.name) for n in plan.nodes)
    for part in (p for parts in lines for p in parts):
        assert not set(part) & set("<>&`|[]{}()\\")
        assert not re.search(r"#(?!\d+;)", part)
    assert "</svg>" not in text and "<script" not in text


def test_dot_and_mermaid_structure() -> None:
    plan = specgraph.plan(specgraph.load("spinenet"), "49")
    dot = specgraph.render_dot(plan)
    assert dot.count(" -> ") == len(plan.edges)
    assert dot.count("style=dashed") == sum(e.kind == "merge" for e in plan.edges)
    assert sorted(_dot_labels(dot).values()) == sorted(n.name for n in plan.nodes)
    assert "subgraph cluster_L3" in dot and "label=<L3 /8>" in dot
    mmd = specgraph.render_mermaid(plan)
    assert mmd.splitlines()[0] == "flowchart LR"
    assert len(re.findall(r"^\s+n\d+ (-->|-\.->)", mmd, re.M)) == len(plan.edges)
    assert len(re.findall(r"^\s+n\d+ -\.->", mmd, re.M)) == sum(e.kind == "merge" for e in plan.edges)
    assert '|"\u2193\u00d74 conv+pool"|' in mmd


def test_a_name_cannot_end_the_comment_line_of_dot_or_mermaid() -> None:
    # Issue 14: names put straight into a Plan (no schema) wrote a second graph into the dot file and a
    # click line into the Mermaid file, through the title in their comment lines.
    data = specgraph.plan(specgraph.load(DATA / "small.toml")).to_dict()
    plain = specgraph.Plan.from_dict(data)
    del data["hash"]
    data.update(spec_name="\n}\ndigraph injected { a -> b }\n//",
                variant="\nclick n0 href javascript:alert(1)\n%%\u2028\r")
    plan = specgraph.Plan.from_dict(data)
    dot, mmd = specgraph.render_dot(plan), specgraph.render_mermaid(plan)
    assert dot.count("\n") == specgraph.render_dot(plain).count("\n")
    # the line breaks are shown as \x0a, and the backslash as an entity (&#92;, #92;) like any other
    assert dot.splitlines()[0].startswith("// &#92;x0a}&#92;x0adigraph injected { a -&gt; b }&#92;x0a// variant ")
    assert [line for line in dot.splitlines() if line.lstrip().startswith("digraph")] == ["digraph plan {"]
    assert mmd.count("\n") == specgraph.render_mermaid(plain).count("\n")
    assert mmd.splitlines()[1].startswith("  %% #92;x0a#125;#92;x0adigraph injected #123; a -#62; b #125;")
    assert "#92;x0aclick n0 href javascript:alert#40;1#41;#92;x0a#37;#37;#92;u2028#92;x0d input" in mmd
    assert not [line for line in mmd.splitlines() if line.lstrip().startswith("click")]


# ---------------------------------------------------------------- command line


def test_cli_render_to_stdout(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["render", str(DATA / "small.toml"), "--input", "128x128"]) == 0
    out = capsys.readouterr().out
    assert len(_by_class(_parse(out), "g", "node")) == 11
    assert cli.main(["render", "spinenet", "--variant", "49", "--format", "dot"]) == 0
    assert capsys.readouterr().out.startswith("// spinenet variant 49")
    assert cli.main(["render", "spinenet", "-v", "49", "--format", "mermaid", "--min-level", "2"]) == 0
    assert "endpoint_2" in capsys.readouterr().out


def test_cli_render_writes_a_file_and_refuses_to_overwrite(tmp_path: Path,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "plan.svg"
    assert cli.main(["render", "spinenet", "--variant", "49S", "-o", str(out)]) == 0
    first = out.read_text(encoding="utf-8")
    plan = specgraph.plan(specgraph.load("spinenet"), "49S")
    assert len(_by_class(_parse(first), "g", "node")) == len(plan.nodes)
    assert capsys.readouterr().out == ""
    assert cli.main(["render", "spinenet", "--variant", "49", "-o", str(out)]) == 2
    assert "exists" in capsys.readouterr().err
    assert out.read_text(encoding="utf-8") == first
    assert cli.main(["render", "spinenet", "--variant", "49", "-o", str(out), "--force"]) == 0
    assert out.read_text(encoding="utf-8") != first
    assert sorted(p.name for p in tmp_path.iterdir()) == ["plan.svg"]
    assert cli.main(["render", "spinenet", "-o", str(tmp_path / "missing" / "plan.svg")]) == 2
    assert "cannot write" in capsys.readouterr().err


def test_cli_render_spec_error_exits_2_and_writes_nothing(tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "plan.svg"
    assert cli.main(["render", "spinenet", "--variant", "nope", "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert "no variant 'nope'" in err and "Traceback" not in err
    bad = tmp_path / "bad.toml"
    bad.write_text((DATA / "small.toml").read_text().replace('inputs = ["a"]', 'inputs = ["zz"]'))
    assert cli.main(["render", str(bad), "-o", str(out)]) == 2
    assert "no block named 'zz'" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.toml"]
