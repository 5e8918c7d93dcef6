"""The spec as a networkx DAG, with every semantic check and the explicit merge edges.

Nothing here depends on the variant's input size, so one graph serves every plan.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass

import networkx as nx

from ._errors import ArgumentError, GraphError, Problem
from ._schema import Block, Spec, missing_fields
from ._text import format_path

__all__ = ["ENDPOINT_PREFIX", "RESERVED_NAMES", "SpecGraph", "build_graph", "expansion"]

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


def build_graph(spec: Spec) -> SpecGraph:
    """Check the spec's topology and return its DAG (cached on the spec)."""
    if not isinstance(spec, Spec):
        raise ArgumentError(f"build_graph(spec): expected a Spec (see specgraph.load), got {type(spec).__name__}")
    cached = spec._graph
    if isinstance(cached, SpecGraph):
        return cached
    graph = _Builder(spec).build()
    spec._graph = graph
    return graph


class _Builder:
    def __init__(self, spec: Spec) -> None:
        self.spec = spec
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
        if spec.endpoints.min_level > spec.endpoints.max_level:
            self.fail("endpoints.min_level", f"min_level {spec.endpoints.min_level} is above max_level "
                      f"{spec.endpoints.max_level}")

    def _check_level(self, path: str, level: int) -> None:
        if level not in self.spec.filters:
            known = ", ".join(str(k) for k in sorted(self.spec.filters))
            own = " or give the block `filters`" if path.startswith("blocks[") else ""
            self.fail(f"{path}.level", f"level {level} has no base filters; add it to [filters]{own} (levels: {known})")

    def _add_stem(self, dag: nx.DiGraph) -> None:
        stem = self.spec.stem
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
                           output=block.output, repeats=block.repeats)
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

    def _add_body(self, dag: nx.DiGraph) -> None:
        blocks = self.spec.blocks
        for i, block in enumerate(blocks):
            path = f"blocks[{i}]"
            if block.filters is None and _needs_width(block):
                self._check_level(path, block.level)
            ops = tuple(block.ops) if block.ops is not None else None
            self._add_node(dag, block.name, path, kind="block", index=i, level=block.level, type=block.type,
                           output=block.output, repeats=block.repeats, ops=ops, filters=block.filters)
            self._check_op_levels(path, block)
        known = list(dag.nodes)
        for i, block in enumerate(blocks):
            if dag.nodes.get(block.name, {}).get("path") != f"blocks[{i}]":
                continue  # a duplicate; already reported
            seen: set[str] = set()
            for j, ref in enumerate(block.inputs):
                path = f"blocks[{i}].inputs[{j}]"
                if ref == block.name:
                    self.fail(path, f"block {ref!r} cannot be its own input")
                elif ref not in dag:
                    self.fail(path, _no_block(ref, known))
                elif ref in seen:
                    self.fail(path, f"{ref!r} is listed twice; each parent is fused once")
                else:
                    seen.add(ref)
                    dag.add_edge(ref, block.name, kind="input", slot=j)

    def _check_op_levels(self, path: str, block: Block) -> None:
        """An op block's strided ops move its level on from where its inputs are fused: that level must exist."""
        steps = sum(op.stride.bit_length() - 1 if op.stride else op.op == "maxpool" for op in block.ops or ())
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
        owner: dict[int, str] = {}
        marked = [(f"stem.blocks[{i}]", b) for i, b in enumerate(self.spec.stem.blocks)] + \
            [(f"blocks[{i}]", b) for i, b in enumerate(self.spec.blocks)]
        for path, block in marked:
            if not block.output:
                continue
            if block.level in owner:
                first = owner[block.level]
                self.fail(f"{path}.output", f"level {block.level} already has output block {first!r} "
                          f"({dag.nodes[first]['path']}); one output per level")
            else:
                owner[block.level] = block.name
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
            for block in variant.repeats or {}:
                if block not in dag:
                    self.fail(f"{path}.repeats.{block}", _no_block(block, list(dag)))
            scale = variant.filter_size_scale
            for level in sorted(levels & set(spec.filters)):
                if int(spec.filters[level] * scale) < 1:
                    self.fail(f"{path}.filter_size_scale", f"level {level} gets int({spec.filters[level]} * {scale})"
                              " = 0 filters; raise the scale or the level's base filters")
            if spec.stem.conv.scale_filters and int(spec.stem.conv.filters * scale) < 1:
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
                        if (consumers[earlier] == 0 and other["type"] is not None and other["level"] == node["level"]
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
