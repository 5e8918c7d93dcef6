"""The spec as a networkx DAG, with every semantic check and the explicit merge edges.

Nothing here depends on the variant's input size, so one graph serves every plan.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass

import networkx as nx

from ._errors import ArgumentError, GraphError, Problem
from ._fusions import FUSIONS
from ._schema import Block, Cell, Spec, Variant, missing_fields
from ._text import format_path

__all__ = ["ENDPOINT_PREFIX", "RESERVED_NAMES", "SpecGraph", "build_graph", "cell_node", "cell_repeats", "expansion"]

RESERVED_NAMES = frozenset({"input", "stem"})
ENDPOINT_PREFIX = "endpoint_"  # endpoint nodes are named endpoint_<level>


def expansion(block_type: str) -> int:
    """Output channels of a block group are ``expansion * filters``."""
    return 4 if block_type == "bottleneck" else 1


@dataclass(frozen=True)
class SpecGraph:
    """The validated topology. ``dag`` nodes are block names; edges carry ``kind``
    (``"input"`` with its ``slot``, or ``"merge"``). ``order`` is the build order:
    stem blocks, then body blocks topologically, ties kept in spec order."""

    spec: Spec
    dag: nx.DiGraph
    order: tuple[str, ...]
    merges: dict[str, tuple[str, ...]]  # output block -> unresampled extra parents

    def path_of(self, name: str) -> str:
        return self.dag.nodes[name]["path"]


def _no_block(name: str, known: list[str]) -> str:
    """The message for a reference to a block that does not exist, with the closest known name."""
    guess = difflib.get_close_matches(name, known, n=1)
    hint = f"did you mean {guess[0]!r}? " if guess else ""
    return f"no block named {name!r}; {hint}known: {', '.join(known)}"


def _needs_width(block: Block) -> bool:
    """A block's width (its ``filters`` or the [filters] table's) is used: a block group, a conv op, or
    inputs that may need projecting to one width; an op block of norms and activations on one input keeps its
    input's width."""
    if block.ops is None or len(block.inputs) > 1:
        return True
    return any(op.op in ("conv", "separable_conv") for op in block.ops)


def cell_node(cell: str, repetition: int, block: str) -> str:
    """The node of ``block`` in repetition ``repetition`` (from 1) of cell ``cell``: ``nasfpn_2/b7``."""
    return f"{cell}_{repetition}/{block}"


def cell_repeats(spec: Spec, variant: Variant | None = None) -> dict[str, int]:
    """How many times each cell repeats: the variant's ``repeats`` table, else the cell's own ``repeats``."""
    table = (variant.repeats or {}) if variant is not None else {}
    return {cell.name: table.get(cell.name, cell.repeats) for cell in spec.cells}


def build_graph(spec: Spec, repeats: dict[str, int] | None = None) -> SpecGraph:
    """Check the spec's topology and return its DAG (cached on the spec), with each cell repeated ``repeats[cell]``
    times (default: the cells' own ``repeats``; a variant's come from :func:`cell_repeats`)."""
    if not isinstance(spec, Spec):
        raise ArgumentError(f"build_graph(spec): expected a Spec (see specgraph.load), got {type(spec).__name__}")
    counts = cell_repeats(spec) if repeats is None else {c.name: repeats.get(c.name, c.repeats) for c in spec.cells}
    key = tuple(sorted(counts.items()))
    cache = spec._graph if isinstance(spec._graph, dict) else {}
    if key in cache:
        return cache[key]
    graph = _Builder(spec, counts).build()
    cache[key] = graph
    spec._graph = cache
    return graph


class _Builder:
    def __init__(self, spec: Spec, repeats: dict[str, int]) -> None:
        self.spec = spec
        self.repeats = repeats
        self.last: dict[str, str] = {}  # ``<cell>/<block>`` -> the node of its last repetition
        self.width_checked: set[str] = set()  # a cell's block is added once per repetition; reported once
        self.source = spec._source
        self.problems: list[Problem] = []

    def fail(self, path: str, message: str) -> None:
        if self.source is not None:
            self.problems.append(self.source.problem(path, message))
        else:
            self.problems.append(Problem(message, path))

    def raise_if_failed(self) -> None:
        if self.problems:
            raise GraphError(self.problems)

    def build(self) -> SpecGraph:
        spec = self.spec
        dag = nx.DiGraph()
        self._check_settings()
        self._add_stem(dag)
        self._add_body(dag)
        self._add_cells(dag)
        self._add_body_inputs(dag)
        self.raise_if_failed()
        order = self._order(dag)
        self.raise_if_failed()
        self._check_outputs(dag)
        self._check_variants(dag)
        self.raise_if_failed()
        merges = self._merge_unused(dag, order) if spec.fusion.merge_unused_into_outputs else {}
        return SpecGraph(spec, dag, order, merges)

    def _check_settings(self) -> None:
        spec = self.spec
        for loc, why in missing_fields(spec):
            self.fail(format_path(loc), f"required field is missing: {why}")
        if spec.default_variant is not None and spec.default_variant not in spec.variants:
            self.fail("default_variant", f"no variant {spec.default_variant!r}; known: {', '.join(spec.variants)}")
        for k, part in enumerate(spec.parts):
            if part in spec.parts[:k]:
                self.fail(f"parts[{k}]", f"part {part!r} is listed twice; each part once")
        if spec.endpoints.min_level > spec.endpoints.max_level:
            self.fail("endpoints.min_level", f"min_level {spec.endpoints.min_level} is above max_level "
                      f"{spec.endpoints.max_level}")

    def _check_level(self, path: str, level: int) -> None:
        if level not in self.spec.filters:
            known = ", ".join(str(k) for k in sorted(self.spec.filters))
            own = " or give the block `filters`" if path.startswith("blocks[") else ""
            self.fail(f"{path}.level", f"level {level} has no base filters; add it to [filters]{own} (levels: {known})")

    def part_of(self, part: str | None) -> str | None:
        """The part a block is in: its own ``part``, else the last one (None in a spec of one part)."""
        return part if part is not None else (self.spec.parts[-1] if self.spec.parts else None)

    def _add_inputs_declared(self, dag: nx.DiGraph) -> None:
        levels: dict[int, str] = {}
        for i, given in enumerate(self.spec.inputs):
            if given.level in levels:
                self.fail(f"inputs[{i}].level", f"input {levels[given.level]!r} is at level {given.level} too; a "
                          "decoder takes one feature map per level")
            levels.setdefault(given.level, given.name)
            self._add_node(dag, given.name, f"inputs[{i}]", kind="input", index=i, level=given.level, type=None,
                           output=False, repeats=None, filters=given.filters, part=self.part_of(None))

    def _add_stem(self, dag: nx.DiGraph) -> None:
        stem = self.spec.stem
        if stem is None:
            self._add_inputs_declared(dag)
            return
        first = self.spec.parts[0] if self.spec.parts else None
        level = (stem.conv.stride == 2) + (stem.pool is not None and stem.pool.stride == 2)
        previous = None
        for i, block in enumerate(stem.blocks):
            path = f"stem.blocks[{i}]"
            self._check_level(path, block.level)
            if block.level not in (level, level + 1):
                self.fail(f"{path}.level", f"a stem block sits at the level before it ({level}) or one above "
                          f"(a stride-2 block); got {block.level}")
            level = block.level
            self._add_node(dag, block.name, path, kind="stem", index=i, level=block.level, type=block.type,
                           output=block.output, repeats=block.repeats, part=first)
            if previous is not None:
                dag.add_edge(previous, block.name, kind="input", slot=0)
            previous = block.name

    def _add_node(self, dag: nx.DiGraph, name: str, path: str, **attrs: object) -> None:
        if name in RESERVED_NAMES or name.startswith(ENDPOINT_PREFIX):
            self.fail(f"{path}.name", f"{name!r} is reserved for the plan's own nodes; pick another name")
            return
        if name in dag:
            self.fail(f"{path}.name", f"duplicate name {name!r}, first used at {dag.nodes[name]['path']}; "
                      "names must be unique")
            return
        dag.add_node(name, path=path, **attrs)

    def _add_block(self, dag: nx.DiGraph, block: Block, name: str, path: str, index: int, output: bool,
                   part: str | None = None, shares: str | None = None) -> None:
        part = block.part or part
        if part is not None and part not in self.spec.parts:
            where = f"{path}.part" if block.part else f"{path.rsplit('.blocks[', 1)[0]}.part"
            self.fail(where, f"no part {part!r}; the spec's `parts`: {', '.join(self.spec.parts) or 'none'}")
        if block.filters is None and _needs_width(block):
            self._check_level(path, block.level)
        if isinstance(block.filters, str):
            lacking = [v for v, variant in self.spec.variants.items() if block.filters not in (variant.widths or {})]
            if lacking and path not in self.width_checked:
                self.width_checked.add(path)
                self.fail(f"{path}.filters", f"the width {block.filters!r} is not in the `widths` of variant(s) "
                          f"{', '.join(lacking)}; add `widths = {{ {block.filters} = ... }}` to each")
        ops = tuple(block.ops) if block.ops is not None else None
        self._add_node(dag, name, path, kind="block", index=index, level=block.level, type=block.type,
                       output=output, repeats=block.repeats, ops=ops, filters=block.filters,
                       fusion=block.fusion or self.spec.fusion.method, part=self.part_of(part), shares=shares)
        method = block.fusion or self.spec.fusion.method
        where = f"{path}.fusion" if block.fusion else f"{path}.inputs"
        if len(block.inputs) < FUSIONS[method].min_inputs:
            self.fail(where, f"{method} fusion ({FUSIONS[method].formula}) needs at least "
                      f"{FUSIONS[method].min_inputs} inputs; give more, or another fusion for this block")
        if FUSIONS[method].concat and block.ops is None:
            self.fail(where, f"{method} fusion widens the block's input to its inputs' channels together, which an "
                      "op block's ops take (`ops`); a block group has a fixed width")
        self._check_op_levels(path, block)

    def _add_inputs(self, dag: nx.DiGraph, name: str, path: str, refs: list[tuple[str, str]], known: list[str]
                    ) -> None:
        """Edges from ``refs`` (the node each input names, and the name as written) into ``name``."""
        if dag.nodes.get(name, {}).get("path") != path:
            return  # a duplicate; already reported
        seen: set[str] = set()
        for j, (ref, written) in enumerate(refs):
            where = f"{path}.inputs[{j}]"
            if ref == name:
                self.fail(where, f"block {written!r} cannot be its own input")
            elif ref not in dag:
                self.fail(where, _no_block(written, known))
            elif ref in seen:
                self.fail(where, f"{written!r} is listed twice; each parent is fused once")
            else:
                seen.add(ref)
                dag.add_edge(ref, name, kind="input", slot=j)

    def _add_body(self, dag: nx.DiGraph) -> None:
        for i, block in enumerate(self.spec.blocks):
            self._add_block(dag, block, block.name, f"blocks[{i}]", i, block.output)

    def _add_body_inputs(self, dag: nx.DiGraph) -> None:
        """The body blocks' edges, once the cells are in: a block may read a cell's last repetition of one of its
        blocks as ``<cell>/<block>`` (how a composition feeds a decoder from a backbone that ends in a cell)."""
        known = [n for n in dag.nodes if not dag.nodes[n]["path"].startswith("cells[")] + list(self.last)
        for i, block in enumerate(self.spec.blocks):
            refs = [(self._resolve(dag, ref), ref) for ref in block.inputs]
            self._add_inputs(dag, block.name, f"blocks[{i}]", refs, known)

    def _resolve(self, dag: nx.DiGraph, ref: str) -> str:
        """The node ``ref`` names: a node, or ``<cell>/<block>`` for that block's last repetition."""
        return ref if ref in dag else self.last.get(ref, ref)

    def _add_cells(self, dag: nx.DiGraph) -> None:
        """Each cell's blocks once per repetition (``cell_node`` names); a repetition's cell inputs are the previous
        one's outputs."""
        index = len(self.spec.blocks)
        for c, cell in enumerate(self.spec.cells):
            where = f"cells[{c}]"
            before = len(self.problems)
            own = [block.name for block in cell.blocks]
            known = list(dag.nodes) + list(self.last)
            if cell.name in dag:
                self.fail(f"{where}.name", f"{cell.name!r} is also a block's name; a cell needs its own")
            if len(cell.inputs) != len(cell.outputs):
                self.fail(f"{where}.outputs", f"{len(cell.outputs)} outputs for {len(cell.inputs)} inputs: each output "
                          "takes the place of the input at its position in the next repetition")
            for k, ref in enumerate(cell.inputs):
                if ref in own:
                    self.fail(f"{where}.inputs[{k}]", f"{ref!r} is a block of the cell; its inputs come from outside")
                elif self._resolve(dag, ref) not in dag:
                    self.fail(f"{where}.inputs[{k}]", _no_block(ref, known))
            for k, ref in enumerate(cell.outputs):
                if ref not in own:
                    self.fail(f"{where}.outputs[{k}]", _no_block(ref, own) + " (a block of this cell)")
            twice = sorted({name for name in own if own.count(name) > 1})
            for name in twice:
                self.fail(f"{where}.blocks", f"duplicate block name {name!r} in the cell; names must be unique")
            if len(self.problems) > before:
                continue  # the cell's wiring is broken: its repetitions would only repeat the problems
            count = self.repeats[cell.name]
            for r in range(1, count + 1):
                for j, block in enumerate(cell.blocks):
                    # A shared cell's later repetitions run the first's weights (the planner checks they fit).
                    shares = cell_node(cell.name, 1, block.name) if cell.shared and r > 1 else None
                    self._add_block(dag, block, cell_node(cell.name, r, block.name), f"{where}.blocks[{j}]", index,
                                    block.output and r == count, cell.part, shares)
                    index += 1
                for j, block in enumerate(cell.blocks):
                    refs = []
                    for ref in block.inputs:
                        if ref in own:
                            refs.append((cell_node(cell.name, r, ref), ref))
                        elif ref in cell.inputs and r > 1:
                            out = cell.outputs[cell.inputs.index(ref)]
                            refs.append((cell_node(cell.name, r - 1, out), ref))
                        else:
                            refs.append((self._resolve(dag, ref), ref))
                    self._add_inputs(dag, cell_node(cell.name, r, block.name), f"{where}.blocks[{j}]", refs,
                                     known + own)
            self._check_cell_levels(dag, c, cell)
            self.last.update({f"{cell.name}/{b.name}": cell_node(cell.name, count, b.name) for b in cell.blocks})

    def _check_cell_levels(self, dag: nx.DiGraph, c: int, cell: Cell) -> None:
        for k, (ref, out) in enumerate(zip(cell.inputs, cell.outputs, strict=False)):
            level = dag.nodes[cell_node(cell.name, 1, out)]["level"]
            given = dag.nodes[self._resolve(dag, ref)]["level"]
            if given != level:
                self.fail(f"cells[{c}].outputs[{k}]", f"{out!r} is at level {level}, the input it replaces in the "
                          f"next repetition ({ref!r}) at level {given}; they must match")

    def _check_op_levels(self, path: str, block: Block) -> None:
        """An op block's strided ops move its level on from where its inputs are fused: that level must exist."""
        steps = sum(op.level_step for op in block.ops or ())
        if steps > block.level:
            self.fail(f"{path}.ops", f"its strided ops step down {steps} level(s) to level {block.level}, so its "
                      f"inputs would be fused at level {block.level - steps}; raise the level or drop a stride")

    def _order(self, dag: nx.DiGraph) -> tuple[str, ...]:
        try:
            cycle = nx.find_cycle(dag)
        except nx.NetworkXNoCycle:
            cycle = None
        if cycle:
            names = [u for u, _ in cycle] + [cycle[0][0]]
            first = min((dag.nodes[n]["index"], n) for n in names[:-1] if dag.nodes[n]["kind"] == "block")[1]
            self.fail(f"{dag.nodes[first]['path']}.inputs",
                      f"the inputs form a cycle: {' -> '.join(names)}; a block may only use blocks computed before it")
            return ()
        rank = {n: (dag.nodes[n]["kind"] == "block", dag.nodes[n]["index"]) for n in dag}
        return tuple(nx.lexicographical_topological_sort(dag, key=rank.__getitem__))

    def _check_outputs(self, dag: nx.DiGraph) -> None:
        """One output block per level in each part; the last part's give the endpoints."""
        owners: dict[str | None, dict[int, str]] = {}
        marked = sorted(dag.nodes, key=lambda n: (dag.nodes[n]["kind"] == "block", dag.nodes[n]["index"]))
        for name in marked:
            node = dag.nodes[name]
            if not node["output"]:
                continue
            owner = owners.setdefault(node["part"], {})
            if node["level"] in owner:
                first = owner[node["level"]]
                self.fail(f"{node['path']}.output", f"level {node['level']} already has output block {first!r} "
                          f"({dag.nodes[first]['path']}); one output per level")
            else:
                owner[node["level"]] = name
        owner = owners.get(self.part_of(None), {})
        lo, hi = self.spec.endpoints.min_level, self.spec.endpoints.max_level
        for level in range(lo, hi + 1):
            if level not in owner:
                self.fail("endpoints", f"endpoint level {level} (min_level {lo} .. max_level {hi}) has no output "
                          f"block; mark a level-{level} block `output = true` or narrow the endpoint levels")

    def _check_variants(self, dag: nx.DiGraph) -> None:
        spec = self.spec
        levels = {dag.nodes[n]["level"] for n in dag if dag.nodes[n].get("filters") is None
                  and dag.nodes[n]["level"] in spec.filters}
        for name, variant in spec.variants.items():
            path = f"variants.{name}" if name.isidentifier() else f'variants."{name}"'
            cells = {cell.name for cell in spec.cells}
            for block, count in (variant.repeats or {}).items():
                if block not in dag and block not in cells:
                    self.fail(f"{path}.repeats.{block}", _no_block(block, [*dag, *cells]))
                elif block in cells and count > 32:
                    self.fail(f"{path}.repeats.{block}", f"a cell repeats 1 to 32 times, not {count}")
            if isinstance(variant.separable, list):
                for k, part in enumerate(variant.separable):
                    if part not in spec.parts:
                        self.fail(f"{path}.separable[{k}]", f"no part {part!r}; the spec's `parts`: "
                                  f"{', '.join(spec.parts) or 'none'} (or `separable = true` for every op block)")
            scale = variant.filter_size_scale
            for level in sorted(levels & set(spec.filters)):
                if int(spec.filters[level] * scale) < 1:
                    self.fail(f"{path}.filter_size_scale", f"level {level} gets int({spec.filters[level]} * {scale})"
                              " = 0 filters; raise the scale or the level's base filters")
            if spec.stem is not None and spec.stem.conv.scale_filters and int(spec.stem.conv.filters * scale) < 1:
                self.fail(f"{path}.filter_size_scale", "the stem conv gets 0 filters; raise the scale")
            if spec.resample.squeeze:
                for level in sorted(levels & set(spec.filters)):
                    base = int(spec.filters[level] * scale)
                    if base and int(base * variant.resample_alpha) < 1:
                        self.fail(f"{path}.resample_alpha", f"a level-{level} parent is squeezed to "
                                  f"int({base} * {variant.resample_alpha}) = 0 channels; raise resample_alpha")
                        break

    def _merge_unused(self, dag: nx.DiGraph, order: tuple[str, ...]) -> dict[str, tuple[str, ...]]:
        # Model Garden compares widths and channels at build time; same level and the
        # same expansion is the size-independent equivalent (equal at every input size
        # where Model Garden's widths are distinct per level).
        consumers = dict.fromkeys(order, 0)
        merges: dict[str, tuple[str, ...]] = {}
        done: list[str] = []
        for name in order:
            node = dag.nodes[name]
            if node["kind"] == "block":
                for parent in dag.predecessors(name):
                    consumers[parent] += 1
                if node["output"] and node["type"] is not None:  # a SpineNet rule: block groups only
                    extra: list[str] = []
                    slot = dag.in_degree(name)
                    for earlier in done:
                        other = dag.nodes[earlier]
                        if (consumers[earlier] == 0 and other["type"] is not None and other["part"] == node["part"]
                                and other["level"] == node["level"]
                                and expansion(other["type"]) == expansion(node["type"])):
                            extra.append(earlier)
                            consumers[earlier] += 1
                            dag.add_edge(earlier, name, kind="merge", slot=slot + len(extra) - 1)
                    if extra:
                        merges[name] = tuple(extra)
            else:
                for parent in dag.predecessors(name):
                    consumers[parent] += 1
            done.append(name)
        return merges
