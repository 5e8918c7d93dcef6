"""The scale planner: spec + variant + input size -> ``Plan``."""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

import networkx as nx

from ._errors import ArgumentError, PlanError, Problem
from ._fusions import FUSIONS
from ._graph import ENDPOINT_PREFIX, SpecGraph, build_graph, cell_repeats, expansion
from ._plan import Activation, Conv, Edge, MaxPool, Node, Norm, Op, Plan, SeparableConv, Size, Unit, Upsample
from ._schema import MAX_LEVEL, Spec, Variant
from ._text import brief

__all__ = ["levels_of", "make_divisible", "parse_levels", "plan"]

MAX_INPUT = 1 << 16


def make_divisible(value: float, divisor: int = 1) -> int:
    """Model Garden's channel rounding (never more than 10% down)."""
    new = max(divisor, int(value + divisor / 2) // divisor * divisor)
    if new < 0.9 * value:
        new += divisor
    return int(new)


def _size_at(input_size: Size, level: int) -> Size:
    return (math.ceil(input_size[0] / 2**level), math.ceil(input_size[1] / 2**level))


def _parse_size(input_size: int | Sequence[int] | str) -> Size:
    if isinstance(input_size, str):
        # ASCII digits only: int() would also take "6_40" and other scripts' digits.
        if not re.fullmatch(r"[0-9]{1,6}([x\u00d7][0-9]{1,6})?", input_size.strip().lower()):
            raise PlanError(f"input_size {brief(input_size)}: write it as HxW, e.g. 640x640")
        values = [int(p) for p in re.split("[x\u00d7]", input_size.strip().lower())]
    elif isinstance(input_size, int) and not isinstance(input_size, bool):
        values = [input_size, input_size]
    elif isinstance(input_size, Sequence):
        values = list(input_size)
    else:
        raise ArgumentError(f"input_size: expected (H, W), an int or 'HxW', got {type(input_size).__name__}")
    if len(values) == 1:
        values = values * 2
    if len(values) != 2 or not all(isinstance(v, int) and not isinstance(v, bool) for v in values):
        raise PlanError(f"input_size {brief(input_size)}: give (H, W) as two integers")
    if not all(1 <= v <= MAX_INPUT for v in values):
        raise PlanError(f"input_size {brief(input_size)}: H and W must be between 1 and {MAX_INPUT}")
    return (values[0], values[1])


def _level(name: str, value: object) -> None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
        raise ArgumentError(f"{name}: expected an integer level or None, got {brief(value)}")


def parse_levels(levels: object, argument: str = "levels") -> tuple[int, ...] | None:
    """``levels`` (None, or a non-empty list of distinct integer levels) as a sorted tuple.

    Endpoints come out fine to coarse whatever order they were given in (torchvision and
    detectron2 expect that order). A wrong type or value is an :class:`ArgumentError` whose
    problem's path is the argument, or the item in it (``levels[1]``).
    """
    if levels is None:
        return None
    if isinstance(levels, str | bytes | Mapping) or not isinstance(levels, Sequence | set | frozenset):
        raise ArgumentError(Problem(f"expected a list of integer levels such as [3, 5], got {brief(levels)}",
                                    argument))
    values = list(levels)
    if not values:
        raise ArgumentError(Problem("empty; give at least one level, e.g. [3, 5], or None for all", argument))
    for i, value in enumerate(values):
        if isinstance(value, bool) or not isinstance(value, int):
            raise ArgumentError(Problem(f"expected an integer level, got {brief(value)}", f"{argument}[{i}]"))
        if not 0 <= value <= MAX_LEVEL:
            raise ArgumentError(Problem(f"level {value} is out of range 0..{MAX_LEVEL}", f"{argument}[{i}]"))
    twice = sorted({v for v in values if values.count(v) > 1})
    if twice:
        raise ArgumentError(Problem(f"level(s) {', '.join(map(str, twice))} given more than once", argument))
    return tuple(sorted(values))


def levels_of(plan: Plan) -> tuple[int, ...]:
    """The endpoint levels of ``plan``, fine to coarse: ``(3, 4, 5, 6, 7)``, or ``(3, 5)`` for a selection."""
    return tuple(int(level) for level, _ in plan.endpoints)


def plan(
    spec: Spec | str | os.PathLike[str] | Mapping[str, Any],
    variant: str | None = None,
    input_size: int | Sequence[int] | str = (640, 640),
    min_level: int | None = None,
    max_level: int | None = None,
    input_channels: int = 3,
    *,
    levels: Sequence[int] | None = None,
) -> Plan:
    """Plan ``spec``'s ``variant`` for images of ``input_size`` (H, W), with endpoints
    ``min_level..max_level`` (the spec's defaults when None). ``spec`` may also be anything
    :func:`specgraph.load` reads.

    ``levels`` (like timm's ``out_indices``) plans endpoints at those levels only, e.g. ``[3, 5]``:
    each needs an output block (and must lie within ``min_level..max_level`` when those are given
    too); the plan's ``min_level`` / ``max_level`` become the smallest and largest, and blocks that
    feed none of them are pruned (not built, not counted)."""
    if isinstance(spec, str | os.PathLike | Mapping):
        from ._loader import load

        spec = load(spec)
    if not isinstance(spec, Spec):
        raise ArgumentError(f"plan(spec): expected a Spec, a spec file, a built-in spec name or a mapping, got "
                            f"{type(spec).__name__}")
    if (variant is not None and not isinstance(variant, str | int)) or isinstance(variant, bool):
        raise ArgumentError(f"variant: expected a variant name, got {brief(variant)}")
    _level("min_level", min_level)
    _level("max_level", max_level)
    selected = parse_levels(levels)
    if isinstance(input_channels, bool) or not isinstance(input_channels, int):
        raise ArgumentError(f"input_channels: expected an integer, got {brief(input_channels)}")
    graph = build_graph(spec)
    name, var = spec.variant(variant)
    if spec.cells:  # a variant may repeat the cells another number of times
        graph = build_graph(spec, cell_repeats(spec, var))
    size = _parse_size(input_size)
    if selected is None:
        lo = spec.endpoints.min_level if min_level is None else min_level
        hi = spec.endpoints.max_level if max_level is None else max_level
        if not (isinstance(lo, int) and isinstance(hi, int) and 0 <= lo <= hi <= MAX_LEVEL):
            raise PlanError(f"endpoint levels {lo}..{hi}: need 0 <= min_level <= max_level <= {MAX_LEVEL}")
        selected = tuple(range(lo, hi + 1))
    else:
        # min_level / max_level, when given beside levels, bound them (a selection out of that range).
        outside = [lvl for lvl in selected if (min_level is not None and lvl < min_level)
                   or (max_level is not None and lvl > max_level)]
        if outside:
            bounds = f"{'' if min_level is None else min_level}..{'' if max_level is None else max_level}"
            raise PlanError(f"levels {list(selected)}: level(s) {', '.join(map(str, outside))} outside "
                            f"min_level..max_level {bounds}; widen the range or drop those levels")
    if not (1 <= input_channels <= 64):
        raise PlanError(f"input_channels {input_channels}: must be between 1 and 64")
    return _Planner(graph, name, var, size, selected, input_channels).run()


class _Planner:
    def __init__(self, graph: SpecGraph, name: str, variant: Variant, size: Size, levels: tuple[int, ...],
                 input_channels: int) -> None:
        self.graph, self.spec, self.name, self.variant = graph, graph.spec, name, variant
        self.size, self.levels, self.input_channels = size, levels, input_channels
        self.lo, self.hi = levels[0], levels[-1]
        self.nodes: dict[str, Node] = {}

    def _is_output(self, attrs: dict) -> bool:
        """An output block of the last part (a composition's earlier parts' outputs feed the next part)."""
        return attrs["output"] and attrs["part"] == (self.spec.parts[-1] if self.spec.parts else None)

    def _separable(self, attrs: dict) -> bool:
        chosen = self.variant.separable
        return chosen is True or (isinstance(chosen, list) and attrs["part"] in chosen)

    def filters(self, level: int) -> int:
        return int(self.spec.filters[level] * self.variant.filter_size_scale)

    def width(self, attrs: dict) -> int:
        """A block's width: its own ``filters`` (a number, or a name in the variant's ``widths``), else its level's
        base filters, scaled."""
        own = attrs["filters"]
        if isinstance(own, str):
            return (self.variant.widths or {})[own]
        return own or self.filters(attrs["level"])

    def run(self) -> Plan:
        spec, dag = self.spec, self.graph.dag
        outputs = {dag.nodes[n]["level"]: n for n in self.graph.order if self._is_output(dag.nodes[n])}
        missing = [lvl for lvl in self.levels if lvl not in outputs]
        if missing:
            have = ", ".join(str(lvl) for lvl in sorted(outputs)) or "none"
            asked = (f"{self.lo}..{self.hi}" if self.levels == tuple(range(self.lo, self.hi + 1))
                     else ", ".join(map(str, self.levels)))
            raise PlanError(f"endpoints: levels {asked} requested, but no output block at level "
                            f"{', '.join(map(str, missing))} (output levels: {have})")
        if spec.stem is not None:
            self._stem()
        # Stochastic depth grows over a part's blocks up to its last block group (Model Garden's SpineNet: over all
        # of them): the op blocks after it (a composition's endpoint convs, a decoder) leave its rates as they are.
        body: dict[str | None, int] = {}
        for n in self.graph.order:
            if dag.nodes[n]["kind"] == "block" and dag.nodes[n]["type"] is not None:
                part = dag.nodes[n]["part"]
                body[part] = max(body.get(part, 0), dag.nodes[n]["index"] + 1)
        for name in self.graph.order:
            attrs = dag.nodes[name]
            if attrs["kind"] == "stem":
                self._stem_block(name, attrs)
            elif attrs["kind"] == "input":  # a decoder's feature map: its size is its level's of the image
                self.nodes[name] = Node(name, "input", attrs["level"], _size_at(self.size, attrs["level"]),
                                        attrs["filters"], part=attrs["part"], spec_path=attrs["path"])
            else:
                self._block(name, attrs, body.get(attrs["part"], 1))
        # A level selection also plans the endpoints it skips when min..max has them all: Model Garden's
        # weights for it are those of that whole network (Plan.contiguous() rebuilds it from the plan).
        whole = tuple(range(self.lo, self.hi + 1))
        for level in whole if all(lvl in outputs for lvl in whole) else self.levels:
            self._endpoint(level, outputs[level])
        self._check_shared()
        live = self._live()
        nodes = self._owners(tuple(n for n in self.nodes.values() if n.name in live))
        pruned = tuple(n.name for n in self.nodes.values() if n.name not in live and n.kind != "endpoint")
        # Kept whole, with their build-order index: loaders replay Model Garden's layers from the plan alone.
        pruned_nodes = tuple((i, n) for i, n in enumerate(self.nodes.values()) if n.name not in live)
        return Plan(
            spec_name=spec.name, variant=self.name, input_size=self.size, input_channels=self.input_channels,
            min_level=self.lo, max_level=self.hi, activation=spec.activation,
            norm_momentum=spec.norm.momentum, norm_epsilon=spec.norm.epsilon,
            endpoints_num_filters=self.variant.endpoints_num_filters, nodes=nodes,
            endpoints=tuple((str(lvl), f"{ENDPOINT_PREFIX}{lvl}") for lvl in self.levels),
            pruned=pruned, pruned_nodes=pruned_nodes,
            inputs=tuple((str(i.level), i.name) for i in spec.inputs),
        )

    def _check_shared(self) -> None:
        """A shared cell's later repetitions must fit the first's weights: same resampling, fusion, units, ops."""
        problems = []
        for node in self.nodes.values():
            owner = self.nodes.get(node.shares) if node.shares else None
            if owner is None or owner.weight_shapes == node.weight_shapes:
                continue
            differs = next((f"its input {j} ({b.source}) is brought in by [{b.describe()}], the first's by "
                            f"[{a.describe()}]" for j, (a, b) in enumerate(zip(owner.inputs, node.inputs,
                                                                              strict=True)) if a.ops != b.ops),
                           "its ops or units differ from the first's")
            cell = node.spec_path.rsplit(".blocks[", 1)[0]
            message = (f"{node.name} cannot run the weights of {owner.name}: {differs}; give the cell's inputs the "
                       "widths and levels of the outputs that replace them (e.g. a 1x1 conv block before the cell), "
                       "or drop `shared`")
            problems.append(self.spec._source.problem(f"{cell}.shared", message) if self.spec._source is not None
                            else Problem(message, f"{cell}.shared"))
            break  # the first repetition that differs says it; the later ones differ the same way
        if problems:
            raise PlanError(problems)

    @staticmethod
    def _owners(nodes: tuple[Node, ...]) -> tuple[Node, ...]:
        """Weights shared with a pruned node are owned by the first built node that runs them."""
        owner: dict[str, str] = {}
        kept = []
        for node in nodes:
            key = node.shares or node.name
            shares = owner.setdefault(key, node.name)
            shares = None if shares == node.name else shares
            kept.append(node if shares == node.shares else replace(node, shares=shares))
        return tuple(kept)

    def _live(self) -> set[str]:
        dag = nx.DiGraph()
        for node in self.nodes.values():
            dag.add_node(node.name)
            dag.add_edges_from((e.source, node.name) for e in node.inputs)
        live = {name for name, node in self.nodes.items() if node.kind == "input"}  # the model takes each
        for level in self.levels:
            name = f"{ENDPOINT_PREFIX}{level}"
            live |= nx.ancestors(dag, name) | {name}
        return live

    def _stem(self) -> None:
        stem = self.spec.stem
        channels = int(stem.conv.filters * self.variant.filter_size_scale) if stem.conv.scale_filters \
            else stem.conv.filters
        level = 1 if stem.conv.stride == 2 else 0
        ops: list[Op] = [Conv(self.input_channels, channels, stem.conv.kernel, stem.conv.stride,
                              _size_at(self.size, level))]
        if stem.pool is not None:
            level += stem.pool.stride == 2
            ops.append(MaxPool(stem.pool.kernel, stem.pool.stride, channels, _size_at(self.size, level)))
        self.nodes["stem"] = Node("stem", "stem", level, _size_at(self.size, level), channels, ops=tuple(ops),
                                  spec_path="stem", part=self.spec.parts[0] if self.spec.parts else None)

    def _units(self, block_type: str, in_channels: int, level: int, in_level: int,
               repeats: int) -> tuple[Unit, ...]:
        filters = self.filters(level)
        out = filters * expansion(block_type)
        size, in_size = _size_at(self.size, level), _size_at(self.size, in_level)
        stride = 2 ** (level - in_level)
        units = []
        for _ in range(repeats):
            if block_type == "mbconv":
                ratio, se = self.variant.expand_ratio, self.variant.se_ratio
                expand = ratio > 1
                expand_channels = make_divisible(in_channels * ratio) if expand else in_channels
                se_channels = max(1, int(in_channels * se)) if se > 0 else 0
                unit = Unit("mbconv", in_channels, filters, out, stride, in_size, size, expand=expand,
                            expand_channels=expand_channels, se_channels=se_channels,
                            residual=in_channels == out and stride == 1)
            else:
                unit = Unit(block_type, in_channels, filters, out, stride, in_size, size,  # type: ignore[arg-type]
                            projection=not (in_channels == out and stride == 1),
                            residual=True)
            units.append(unit)
            in_channels, in_size, stride = out, size, 1
        return tuple(units)

    def _repeats(self, name: str, attrs: dict) -> int:
        """Units in a block group: the variant's per-block table, the block's own, the variant's default."""
        return (self.variant.repeats or {}).get(name) or attrs["repeats"] or self.variant.block_repeats

    def _stem_block(self, name: str, attrs: dict) -> None:
        previous = list(self.nodes.values())[-1]
        level = attrs["level"]
        units = self._units(attrs["type"], previous.channels, level, previous.level, self._repeats(name, attrs))
        edge = Edge(previous.name, name, "chain", (), previous.level, level)
        self.nodes[name] = Node(name, "stem_block", level, units[-1].size, units[-1].out_channels, (edge,),
                                block_type=attrs["type"], units=units, spec_path=attrs["path"],
                                output_level=level if self._is_output(attrs) else None, part=attrs["part"])

    def _block(self, name: str, attrs: dict, body_count: int) -> None:
        if attrs["ops"] is not None:
            self._op_block(name, attrs)
            return
        dag, spec = self.graph.dag, self.spec
        level, block_type = attrs["level"], attrs["type"]
        channels = self.width(attrs) * expansion(block_type)
        edges = []
        for source, _, data in sorted(dag.in_edges(name, data=True), key=lambda e: e[2]["slot"]):
            parent = self.nodes[source]
            ops = self._resample(parent, level, channels) if data["kind"] == "input" else ()
            edges.append(Edge(source, name, data["kind"], ops, parent.level, level))
        units = self._units(block_type, channels, level, level, self._repeats(name, attrs))
        self.nodes[name] = Node(
            name, "block", level, _size_at(self.size, level), channels, tuple(edges),
            block_type=block_type, units=units, fusion=attrs["fusion"],
            fusion_activation=spec.fusion.activation, drop_fraction=(self._index(attrs) + 1) / body_count,
            output_level=level if self._is_output(attrs) else None, part=attrs["part"], spec_path=attrs["path"],
            shares=attrs["shares"],
        )

    def _index(self, attrs: dict) -> int:
        """A block's place in its part; a shared cell's later repetitions run the first's stochastic depth too."""
        return self.graph.dag.nodes[attrs["shares"]]["index"] if attrs.get("shares") else attrs["index"]

    def _op_block(self, name: str, attrs: dict) -> None:
        """A block of single ops (FPN, NAS-FPN, BiFPN nodes). One input is taken as it is; of several, each whose
        width differs from the block's is first projected to it (a 1x1 conv with bias, then a norm). They are
        brought to the level the block's strided ops start from (a finer input max-pooled down in one op, kernel
        the stride or the stride + 1 by ``[resample] pool_kernel``; a coarser one upsampled, nearest) and fused;
        then the ops, every conv giving the block's width."""
        dag = self.graph.dag
        # None only where the graph found the width unused (norms and activations on one input).
        width = self.width(attrs) if attrs["filters"] is not None or attrs["level"] in self.spec.filters else None
        specs = attrs["ops"]
        steps = [op.level_step for op in specs]
        fused_level = attrs["level"] - sum(steps)
        parents = [(source, data["kind"]) for source, _, data in
                   sorted(dag.in_edges(name, data=True), key=lambda e: e[2]["slot"])]
        concat = FUSIONS[attrs["fusion"]].concat
        fused_channels = self.nodes[parents[0][0]].channels if len(parents) == 1 or concat else width
        overlap = self.spec.resample.pool_kernel == "stride+1"
        edges = []
        for source, kind in parents:
            parent = self.nodes[source]
            ops: list[Op] = []
            c = parent.channels
            if c != fused_channels and not concat:
                ops += [Conv(c, fused_channels, 1, 1, parent.size, activation=False, bias=True)]
                c = fused_channels
            if parent.level < fused_level:
                stride = 2 ** (fused_level - parent.level)
                ops.append(MaxPool(stride + overlap, stride, c, _size_at(self.size, fused_level)))
            elif parent.level > fused_level:
                ops.append(Upsample(2 ** (parent.level - fused_level), c, _size_at(self.size, fused_level),
                                    self.spec.resample.up))
            edges.append(Edge(source, name, kind, tuple(ops), parent.level, fused_level))
        if concat:  # the inputs side by side, each as it is
            fused_channels = sum(self.nodes[source].channels for source, _ in parents)
        node_ops: list[Op] = []
        c, level = fused_channels, fused_level
        for op, step in zip(specs, steps, strict=True):
            level += step
            at = _size_at(self.size, level)
            stride = 2**step
            if op.op in ("conv", "separable_conv"):
                kind = Conv if op.op == "conv" and not self._separable(attrs) else SeparableConv
                node_ops.append(kind(c, width, op.kernel or 3, stride, at, norm=False, activation=False,
                                     bias=bool(op.bias)))
                c = width
            elif op.op == "maxpool":
                node_ops.append(MaxPool(op.kernel or 3, stride, c, at))
            elif op.op == "norm":
                node_ops.append(Norm(c, at))
            else:
                node_ops.append(Activation(c, at, op.activation or ""))
        level = attrs["level"]
        self.nodes[name] = Node(
            name, "block", level, _size_at(self.size, level), c, tuple(edges), ops=tuple(node_ops),
            fusion=attrs["fusion"], fusion_activation=False,
            output_level=level if self._is_output(attrs) else None, part=attrs["part"], spec_path=attrs["path"],
            shares=attrs["shares"])

    def _resample(self, parent: Node, level: int, channels: int) -> tuple[Op, ...]:
        policy = self.spec.resample
        ops: list[Op] = []
        c, lvl = parent.channels, parent.level
        if policy.squeeze:
            base = c / 4 if parent.block_type == "bottleneck" else c
            squeezed = int(base * self.variant.resample_alpha)
            ops.append(Conv(c, squeezed, 1, 1, parent.size))
            c = squeezed
        if level > lvl:
            for step in range(level - lvl):
                lvl += 1
                at = _size_at(self.size, lvl)
                if policy.down == "depthwise":
                    ops.append(Conv(c, c, 3, 2, at, groups=c))
                elif policy.down == "conv" or step == 0:
                    ops.append(Conv(c, c, 3, 2, at))
                else:
                    ops.append(MaxPool(3, 2, c, at))
        elif level < lvl:
            ops.append(Upsample(2 ** (lvl - level), c, _size_at(self.size, level), policy.up))
        ops.append(Conv(c, channels, 1, 1, _size_at(self.size, level), activation=False))
        return tuple(ops)

    def _endpoint(self, level: int, source: str) -> None:
        parent = self.nodes[source]
        name = f"{ENDPOINT_PREFIX}{level}"
        ops: tuple[Op, ...] = ()
        if self.spec.endpoints.conv:
            ops = (Conv(parent.channels, self.variant.endpoints_num_filters, 1, 1, parent.size),)
        self.nodes[name] = Node(name, "endpoint", level, parent.size, ops[-1].out_channels if ops else parent.channels,
                                (Edge(source, name, "chain", (), level, level),), ops=ops)
