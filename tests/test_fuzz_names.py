"""Fuzz: hostile names through every renderer and emitter, and each output parsed as its format.

Names come from a seeded generator (the same cases every run; a failing case is named in the test id)
that mixes the syntax of every output format with control, bidi and zero-width characters and long
runs. They are used as the spec name, the variant name and the block names, by two routes:

- ``a``: names the schema accepts go through ``specgraph.load`` and ``specgraph.plan``;
- ``b``: any name at all is written straight into a ``Plan`` (``Plan.from_dict``), because a plan can be
  built or deserialised without the schema, and renderers and emitters must be safe on their own.

Every output is parsed (pydot, ElementTree, ast and tokenize, Mermaid line by line) and compared with
the output for the same plan under plain names: hostile names may change text inside labels, literals
and comments, never the structure (lines, graphs, elements, tokens). The torch emitter's model is also
run (slow); the escaping filters are checked one string at a time with hypothesis.
"""

from __future__ import annotations

import ast
import dataclasses
import functools
import io
import keyword
import random
import re
import tokenize
import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import specgraph
from specgraph import Plan
from specgraph._codegen import _docstring_text
from specgraph._render import _dot_html, _mermaid_text
from specgraph._schema import BLOCK_TYPES
from specgraph._text import first_unsafe, visible

SEED = 14  # issue 14: hostile names broke out of the dot and Mermaid files
CASES_PER_ROUTE = 8  # 16 plans, 216 names: pydot takes ~0.5 s a plan
SVG = "{http://www.w3.org/2000/svg}"
SMALL = Path(__file__).parent / "data" / "small.toml"

# Pieces of syntax of every output format, and characters that hide, reorder or break lines.
FRAGMENTS = (
    "'", '"', "`", "\\", "<", ">", "&", ";", "{", "}", "[", "]", "(", ")", "|", "#", "%", ",", ":", "=", "\\\\",
    "\n", "\r", "\t", "\r\n", "\x00", "\x07", "\x0b", "\x0c", "\x1b", "\x1c", "\x1f", "\x7f", "\x85",
    "digraph", "subgraph", "node", "edge", "graph", "strict", "->", "--", "/*", "*/", "//", "cluster_L3",
    "n0", "label=<", "<b>", "\n}\ndigraph injected { a -> b }\n//",
    "%%", "%%{init: {}}%%", "click", "href", "javascript:", "-->", "-.->", "end", "style", "linkStyle",
    "flowchart LR", "#35;", "<br>", "\nclick n0 href javascript:alert(1)\n%%",
    '"""', "'''", "#", "\\N{BULLET}", "\\N{", "\\x41", "\\u202e", "\\\n", "{{", "}}", "{%", "%}",
    "\u202a", "\u202b", "\u202c", "\u202d", "\u202e", "\u2066", "\u2067", "\u2068", "\u2069",
    "\u200b", "\u200c", "\u200d", "\ufeff", "\u2028", "\u2029", "\u00ad", "\u061c", "\ue000", "\U000e0041",
    "\U0001f600", "\U00010348", "\U0001d54f", "\u00e9", "\u0394", "\u4e2d", "\u00d7", "\u2192", "\u00a0",
    "&amp;", "&#0;", "&lt;", "]]>", "<!--", "<![CDATA[", "<script>", "</script>", "</svg>", "</title>",
    'onload="x"', "xlink:href", "url(#x)",
    '"); import os; os.system("x', "'); import os; os.system('x", "__import__('os')", "\\'; x = 1 #",
    "class", "self", "def", "nn", "torch", "tf", "None", "1st", "_", "-", "a.b",
)
CHARS = [chr(c) for c in range(0x80)] + list("\x85\u2028\u2029\ufeff")
RESERVED = ("input", "stem")


def _fresh(rng: random.Random) -> str:
    """A few fragments and characters; sometimes one repeated into a long run."""
    parts = []
    for _ in range(rng.randint(1, 5)):
        roll = rng.random()
        if roll < 0.55:
            parts.append(rng.choice(FRAGMENTS))
        elif roll < 0.9:
            parts.append(rng.choice(CHARS))
        else:
            parts.append(rng.choice(FRAGMENTS) * rng.randint(8, 40))
    return "".join(parts)


def _schema_safe(ch: str) -> bool:
    return not ch.isspace() and ch != "." and first_unsafe(ch) is None


def _names(rng: random.Random, count: int, accept: Callable[[str], str | None]) -> list[str]:
    """``count`` distinct names, each ``accept``-ed (mapped, or refused with None)."""
    names: list[str] = []
    while len(names) < count:
        name = accept(_fresh(rng))
        if name is not None and name not in names:
            names.append(name)
    return names


def _for_schema(text: str) -> str | None:
    """``text`` cut down to what the schema accepts as a name: 1..64 characters, no whitespace, no '.',
    no unsafe character."""
    name = "".join(ch for ch in text if _schema_safe(ch))[:64]
    return name or None


def _for_block(text: str) -> str | None:
    name = _for_schema(text)
    return None if name is None or name in RESERVED or name.startswith("endpoint_") else name


def _for_plan(text: str) -> str | None:
    # Anything at all, except what torch refuses as a module name (the emitted model must run).
    name = text.replace(".", "")
    return name or None


# ---------------------------------------------------------------- the cases


BLOCKS = {"mini": 11, "small": 7}  # stem and body blocks of each base spec
NODES = {"mini": 17, "small": 11}  # nodes of each base plan (blocks, the stem, the endpoints)


@dataclasses.dataclass(frozen=True)
class Case:
    route: str  # "a": through the schema; "b": straight into a Plan
    base: str  # "mini" (conftest's mini spec) or "small" (tests/data/small.toml: merges, mbconv)
    spec: str
    variant: str
    blocks: tuple[str, ...]  # route a: the spec's blocks, stem first; route b: every plan node, in order
    texts: tuple[str, ...] = ()  # route b: spec paths and block types

    @property
    def names(self) -> list[str]:
        return [self.spec, self.variant, *self.blocks]


def _cases() -> list[Case]:
    rng = random.Random(SEED)
    cases = []
    for i in range(CASES_PER_ROUTE):
        base = "mini" if i % 2 == 0 else "small"
        spec, variant = _names(rng, 2, _for_schema)
        cases.append(Case("a", base, spec, variant, tuple(_names(rng, BLOCKS[base], _for_block))))
    for i in range(CASES_PER_ROUTE):
        base = "mini" if i % 2 == 0 else "small"
        spec, variant = (_fresh(rng), _fresh(rng))
        if i == 0:  # the two names of issue 14
            spec, variant = "\n}\ndigraph injected { a -> b }\n//", "\nclick n0 href javascript:alert(1)\n%%"
        nodes = tuple(_names(rng, NODES[base], _for_plan))
        cases.append(Case("b", base, spec, variant, nodes, tuple(_fresh(rng) for _ in range(2 * NODES[base]))))
    return cases


CASES = _cases()
IDS = [f"{case.route}{i % CASES_PER_ROUTE}-{case.base}" for i, case in enumerate(CASES)]


def _renamed_spec(data: dict[str, Any], spec: str, variant: str, blocks: tuple[str, ...]) -> dict[str, Any]:
    stem, body = data["stem"]["blocks"], data["blocks"]
    rename = dict(zip([b["name"] for b in stem + body], blocks, strict=True))
    for block in stem + body:
        block["name"] = rename[block["name"]]
        if "inputs" in block:
            block["inputs"] = [rename[ref] for ref in block["inputs"]]
    (settings,) = data["variants"].values()
    data.update(name=spec, variants={variant: settings})
    data.pop("default_variant", None)
    return data


def _rewrite(plan: Plan, spec: str, variant: str, names: list[str], text: Callable[[str], str]) -> Plan:
    """``plan`` with new spec, variant and node names (in node order), and ``text`` applied to every
    node's non-empty spec path and block type; made without the schema, as ``Plan.from_dict`` allows."""
    data = plan.to_dict()
    del data["hash"]  # from_dict checks a stored hash: this plan is edited on purpose
    rename = dict(zip([n.name for n in plan.nodes], names, strict=True))
    data.update(spec_name=spec, variant=variant, endpoints=[(k, rename[v]) for k, v in data["endpoints"]],
                pruned=[rename[n] for n in data["pruned"]])
    for node in data["nodes"]:
        node["name"] = rename[node["name"]]
        for edge in node["inputs"]:
            edge["source"], edge["target"] = rename[edge["source"]], rename[edge["target"]]
        for field in ("spec_path", "block_type"):
            if node[field]:
                node[field] = text(node[field])
    return Plan.from_dict(data)


def _plan(case: Case, mini: Callable[[], dict[str, Any]]) -> Plan:
    data = mini() if case.base == "mini" else specgraph.load(SMALL).to_dict()
    if case.route == "a":
        return specgraph.plan(specgraph.load(_renamed_spec(data, case.spec, case.variant, case.blocks)),
                              input_size=64)
    texts = iter(case.texts)
    return _rewrite(specgraph.plan(specgraph.load(data), input_size=64), case.spec, case.variant,
                    list(case.blocks), lambda _: next(texts))


def _plain(plan: Plan) -> Plan:
    """The same plan under plain names: what the structure of every output must be."""
    # block types the renderers know keep their colours; any other is drawn as "other" either way
    return _rewrite(plan, "plain", "v", [f"node{i}" for i in range(len(plan.nodes))],
                    lambda text: text if text in BLOCK_TYPES else "text")


@pytest.fixture(params=CASES, ids=IDS)
def plans(request: pytest.FixtureRequest, mini: Callable[[], dict[str, Any]]) -> tuple[Plan, Plan]:
    plan = _plan(request.param, mini)
    names = {plan.spec_name, plan.variant} | {n.name for n in plan.nodes}
    assert set(request.param.names) <= names  # every generated name made it into the plan
    return plan, _plain(plan)


def test_the_fuzz_feeds_at_least_200_hostile_names() -> None:
    names = [name for case in CASES for name in case.names]
    assert len(names) >= 200
    assert sum(first_unsafe(name) is not None for name in names) >= 50  # route b: refused by the schema
    assert sum(len(name) > 64 for name in names) >= 5


# ---------------------------------------------------------------- the filters, one string at a time

# Any characters, and the fragments above joined in any order.
TEXT = st.lists(st.one_of(st.characters(), st.sampled_from(FRAGMENTS + tuple(CHARS))), max_size=12).map("".join)


@settings(max_examples=300, deadline=None)
@given(TEXT)
def test_each_filter_keeps_text_on_its_line_and_inside_its_quotes(text: str) -> None:
    shown = visible(text)
    doc = _docstring_text(text)
    assert ast.literal_eval(f'"""{doc}"""') == shown  # cannot close the docstring; reads back as shown
    comment = list(tokenize.generate_tokens(io.StringIO(f"x = 1  # {doc}\n").readline))
    assert [t.type for t in comment] == [tokenize.NAME, tokenize.OP, tokenize.NUMBER, tokenize.COMMENT,
                                         tokenize.NEWLINE, tokenize.ENDMARKER]
    label = _dot_html(text)
    assert not set(label) & set('<>"\\\n') and (ET.fromstring(f"<l>{label}</l>").text or "") == shown
    mermaid = _mermaid_text(text)
    assert not set(mermaid) & set('"<>&`|[](){}\\%\n')
    assert re.sub(r"#(\d+);", lambda m: chr(int(m.group(1))), mermaid) == shown


# ---------------------------------------------------------------- renderers


def _one_line_each(text: str, plain: str) -> None:
    """Nothing in ``text`` but its newlines is hidden or breaks a line (no CR, U+2028...), and the names
    added no line: the same count as under plain names."""
    assert first_unsafe(text.replace("\n", "")) is None
    assert text.count("\n") == plain.count("\n")


def _html_label(label: str) -> ET.Element:
    assert label.startswith("<") and label.endswith(">"), label
    return ET.fromstring(f"<label>{label[1:-1]}</label>")


@pytest.mark.filterwarnings("ignore::DeprecationWarning:pydot.dot_parser")  # pydot's own pyparsing calls
def test_dot_parses_as_one_graph_with_the_plans_nodes_and_edges(plans: tuple[Plan, Plan]) -> None:
    pydot = pytest.importorskip("pydot")
    plan, plain = plans
    text = specgraph.render_dot(plan)
    _one_line_each(text, specgraph.render_dot(plain))
    lines = text.splitlines()
    assert lines[0].startswith("// ") and lines[1] == "digraph plan {" and lines[-1] == "}"
    assert [line for line in lines if line.lstrip().startswith(("click", "digraph", "graph {"))] == [lines[1]]
    graphs = pydot.graph_from_dot_data(text)
    assert graphs is not None and len(graphs) == 1
    (graph,) = graphs
    assert graph.get_name() == "plan" and graph.get_type() == "digraph"
    assert sorted(n.get_name() for n in graph.get_nodes()) == ["edge", "graph", "node"]  # the defaults only
    ids = {n.name: f"n{i}" for i, n in enumerate(plan.nodes)}
    clusters = graph.get_subgraphs()
    assert all(re.fullmatch(r"cluster_L\d+", c.get_name()) for c in clusters)
    nodes = {n.get_name(): n for c in clusters for n in c.get_nodes()}
    assert len(nodes) == sum(len(c.get_nodes()) for c in clusters) == len(plan.nodes)
    for node in plan.nodes:
        label = _html_label(nodes[ids[node.name]].get("label"))
        assert "".join(label.find("b").itertext()) == visible(node.name)
    edges = sorted((e.get_source(), e.get_destination()) for e in graph.get_edges())
    assert edges == sorted((ids[e.source], ids[e.target]) for e in plan.edges)
    title = "".join(_html_label(graph.get_node("graph")[0].get("label")).itertext())
    assert title.startswith(f"{visible(plan.spec_name)} variant {visible(plan.variant)} input ")


# Every kind of line the Mermaid template writes (a comment that starts "%%{" would be a directive).
MERMAID_LINES = {kind: re.compile(pattern) for kind, pattern in {
    "header": r"flowchart LR",
    "comment": r"  %% (?!\{).* \(plan [0-9a-f]{12}\); made by specgraph render --format mermaid",
    "subgraph": r'  subgraph L\d+\["L\d+ /\d+"\]',
    "node": r'    n\d+\["[^"]*"\]',
    "end": r"  end",
    "edge": r'  n\d+ (-->|-\.->)(\|"[^"]*"\|)? n\d+',
    "style": r"  style n\d+ fill:#[0-9a-f]{6},stroke:#[0-9a-f]{6}(,stroke-width:2px)?",
    "linkStyle": r"  linkStyle \d+ stroke:#[0-9a-f]{6}",
}.items()}


def test_mermaid_lines_are_only_the_templates_kinds(plans: tuple[Plan, Plan]) -> None:
    plan, plain = plans
    text = specgraph.render_mermaid(plan)
    _one_line_each(text, specgraph.render_mermaid(plain))
    kinds = [next((kind for kind, p in MERMAID_LINES.items() if p.fullmatch(line)), line)
             for line in text.splitlines()]
    assert set(kinds) <= set(MERMAID_LINES)  # any other line is shown as itself
    assert kinds.count("header") == kinds.count("comment") == 1
    assert kinds.count("node") == kinds.count("style") == len(plan.nodes)
    assert kinds.count("edge") == kinds.count("linkStyle") == len(plan.edges)
    assert not [line for line in text.splitlines() if line.lstrip().startswith("click")]
    labels = dict(re.findall(r'^    (n\d+)\["([^"]*)"\]$', text, re.M))
    for i, node in enumerate(plan.nodes):
        parts = labels[f"n{i}"].split("<br>")
        assert all(not set(part) & set("\"<>&`|[](){}\\%") and not re.search(r"#(?!\d+;)", part) for part in parts)
        assert re.sub(r"#(\d+);", lambda m: chr(int(m.group(1))), parts[0]) == visible(node.name)


SVG_TAGS = {"svg", "title", "defs", "marker", "path", "rect", "text", "g"}


def test_svg_parses_with_no_active_content(plans: tuple[Plan, Plan]) -> None:
    plan, plain = plans
    text = specgraph.render_svg(plan)
    _one_line_each(text, specgraph.render_svg(plain))
    root = ET.fromstring(text.encode())
    assert {el.tag.removeprefix(SVG) for el in root.iter()} <= SVG_TAGS  # no script, style, a, foreignObject
    for el in root.iter():
        for attr, value in el.attrib.items():
            local = attr.rsplit("}", 1)[-1].lower()
            assert not local.startswith("on") and local != "href"
            if not local.startswith("data-"):  # data-* hold names as inert text; checked below
                assert "javascript" not in value.lower()
                assert "url(" not in value or re.fullmatch(r"url\(#sg-[0-9a-f]{10}-(input|merge|chain)\)", value)
    nodes = [g for g in root.iter(SVG + "g") if g.get("class") == "node"]
    assert [g.get("data-node") for g in nodes] == [visible(n.name) for n in plan.nodes]
    for g, node in zip(nodes, plan.nodes, strict=True):
        assert "".join(g.find(SVG + "title").itertext()).startswith(visible(node.name) + " (")
    edges = [g for g in root.iter(SVG + "g") if g.get("class") == "edge"]
    assert [(g.get("data-source"), g.get("data-target")) for g in edges] == \
        [(visible(e.source), visible(e.target)) for e in plan.edges]
    title = "".join(root.find(SVG + "title").itertext())
    assert title.startswith(f"{visible(plan.spec_name)} \u00b7 variant {visible(plan.variant)} \u00b7 ")


# ---------------------------------------------------------------- emitters


@functools.cache  # the plain plans' sources repeat
def _tokens(source: str) -> tuple[tokenize.TokenInfo, ...]:
    return tuple(tokenize.generate_tokens(io.StringIO(source).readline))


def _shape(tokens: tuple[tokenize.TokenInfo, ...]) -> list[tuple[int, int, str]]:
    """Each token's type, line and text, less the text of names, literals and comments: all that may
    differ between plans. Equal shapes: the same statements, every comment one line in the same place."""
    return [(t.type, t.start[0], "" if t.type in (tokenize.STRING, tokenize.COMMENT)
             or (t.type == tokenize.NAME and not keyword.iskeyword(t.string)) else t.string) for t in tokens]


def _spec_names(tree: ast.Module) -> dict[str, str]:
    """The emitted ``SPEC_NAMES`` table: Python identifier -> spec name."""
    (table,) = [node.value for node in tree.body if isinstance(node, ast.Assign)
                and [getattr(t, "id", None) for t in node.targets] == ["SPEC_NAMES"]]
    return ast.literal_eval(table)


def _last_class(tree: ast.Module) -> str:
    return [node.name for node in tree.body if isinstance(node, ast.ClassDef)][-1]


def _identifiers(tree: ast.Module) -> set[str]:
    """The identifiers made from plan names: SPEC_NAMES' keys, and the last class (torch's model class)."""
    return set(_spec_names(tree)) | {_last_class(tree)}


def _check_source(plan: Plan, source: str, plain_source: str) -> ast.Module:
    """Hostile names reach the source only as string literals, one-line comments and docstring text."""
    tree = ast.parse(source)
    assert first_unsafe(source.replace("\n", "")) is None
    tokens, plain_tokens = _tokens(source), _tokens(plain_source)
    assert _shape(tokens) == _shape(plain_tokens)
    template_names = {t.string for t in plain_tokens if t.type == tokenize.NAME} - _identifiers(ast.parse(plain_source))
    own = _identifiers(tree)
    assert all(ident.isascii() and ident.isidentifier() and not keyword.iskeyword(ident) for ident in own)
    assert {t.string for t in tokens if t.type == tokenize.NAME} <= template_names | own
    assert set(_spec_names(tree).values()) == {n.name for n in plan.nodes}  # the literals hold the names exactly
    doc = ast.get_docstring(tree, clean=False)
    assert f"spec:       {visible(plan.spec_name)}\nvariant:    {visible(plan.variant)}\n" in doc
    return tree


def test_torch_emit_holds_names_only_as_text(plans: tuple[Plan, Plan]) -> None:
    pytest.importorskip("specgraph_torch")
    from specgraph._codegen import emit

    plan, plain = plans
    _check_source(plan, emit(plan, "torch"), emit(plain, "torch"))


@pytest.mark.slow  # ~1 s a plan: build the model twice, run it once
def test_torch_emitted_model_runs(plans: tuple[Plan, Plan]) -> None:
    torch = pytest.importorskip("torch")
    pytest.importorskip("specgraph_torch")
    from specgraph._codegen import emit

    plan, _ = plans
    source = emit(plan, "torch")
    namespace: dict[str, Any] = {"__name__": "emitted"}
    exec(compile(source, "<emitted>", "exec"), namespace)  # the point: it runs as written
    model = namespace[_last_class(ast.parse(source))]().eval()
    # the state dict keys are the plan's names, exactly: the compiled model's weights load as they are
    model.load_state_dict(specgraph.compile(plan, backend="torch").state_dict())
    with torch.no_grad():
        out = model(torch.randn(1, 3, 64, 64))
    assert set(out) == {level for level, _ in plan.endpoints}


@pytest.mark.slow
def test_tensorflow_emit_holds_names_only_as_text(mini: Callable[[], dict[str, Any]]) -> None:
    np = pytest.importorskip("numpy")
    pytest.importorskip("specgraph_tensorflow")
    from specgraph._codegen import emit

    for i, case in enumerate(CASES):
        plan = _plan(case, mini)
        source = emit(plan, "tensorflow")
        _check_source(plan, source, emit(_plain(plan), "tensorflow"))
        if i in (0, CASES_PER_ROUTE):  # building a Keras model is slow: one case of each route
            namespace: dict[str, Any] = {"__name__": "emitted"}
            exec(compile(source, "<emitted>", "exec"), namespace)
            out = namespace["build_model"]()(np.zeros((1, 64, 64, 3), np.float32), training=False)
            assert set(out) == {level for level, _ in plan.endpoints}
