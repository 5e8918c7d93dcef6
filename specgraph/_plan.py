"""The plan: an immutable, framework-free description of one concrete network.

It is the only thing backends read. Every size, channel count and resampling step
is worked out here, so a backend only translates ops.

Op semantics (what every backend must implement):

- ``Conv``: a 2-D convolution without bias (unless ``bias``), TensorFlow ``SAME``
  padding (for stride 2: ``max((ceil(n/s)-1)*s + k - n, 0)`` in total, the smaller
  half before), ``groups == in_channels == out_channels`` for depthwise; then batch
  norm if ``norm``, then the plan's activation if ``activation``.
- ``MaxPool``: max-pool with ``SAME`` padding (pads with -inf).
- ``Upsample``: ``mode="nearest"``: repeat every pixel ``factor x factor`` times, then crop to ``size``
  (``out[i] = in[i // factor]``), which is Model Garden's nearest upsampling; ``mode="bilinear"``: resize to
  ``size`` bilinearly with half-pixel centres (TF2's ``tf.image.resize``, torch's ``align_corners=False``).
- ``SqueezeExcite``: ``x * gate(expand(inner(reduce(mean_hw(x)))))``; ``reduce`` and ``expand``
  are 1x1 convolutions with a bias and no norm; ``inner``/``gate`` are activation names
  (``specgraph._activations``).
- ``Add``: a unit's residual sum, ``drop(branch) + shortcut``: the branch after stochastic depth
  (the node's rate) plus the shortcut path's output (the unit's input when it has no shortcut op).
- ``Activation``: the plan's activation (or the op's own ``function``) on its own (after an ``Add``, or as
  a node op).

A block's inputs are fused by ``Node.fusion``, one of ``specgraph._fusions.FUSIONS`` (sum, fast
normalised weights per input or per input and channel, softmax weights, NAS-FPN's global attention,
concatenation), where each formula is written.
- ``SeparableConv``: a depthwise ``kernel x kernel`` convolution (no bias), then a 1x1 convolution to
  ``out_channels`` (with the bias, if ``bias``), Keras's ``SeparableConv2D``; then norm and activation
  like ``Conv``.
- ``Norm``: batch norm on its own (FPN's output norms).

A block ``Unit`` is expanded into these ops by :attr:`Unit.ops`, the one place each block
recipe is written (see ``docs/plan-ir.md``).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field, replace
from functools import cached_property
from typing import Literal

from ._errors import BackendError, PlanError, Problem
from ._fusions import FUSIONS

__all__ = ["Activation", "Add", "Conv", "Edge", "MaxPool", "Node", "Norm", "Op", "Plan", "SeparableConv",
           "SqueezeExcite", "Unit", "UnitOp", "Upsample"]

Size = tuple[int, int]


@dataclass(frozen=True)
class Conv:
    in_channels: int
    out_channels: int
    kernel: int
    stride: int
    size: Size  # output (H, W)
    groups: int = 1
    norm: bool = True
    activation: bool = True
    bias: bool = False
    op: Literal["conv"] = "conv"

    @property
    def depthwise(self) -> bool:
        return self.groups > 1 and self.groups == self.in_channels == self.out_channels

    @property
    def level_step(self) -> int:
        """Levels the op moves its input by (log2 of the stride); every reader takes it from here."""
        return self.stride.bit_length() - 1

    def describe(self) -> str:
        kind = "dwconv" if self.depthwise else "conv"
        stride = f"/s{self.stride}" if self.stride > 1 else ""
        return f"{kind} {self.kernel}x{self.kernel}{stride} {self.in_channels}->{self.out_channels}"


@dataclass(frozen=True)
class SeparableConv:
    in_channels: int
    out_channels: int
    kernel: int
    stride: int
    size: Size  # output (H, W)
    norm: bool = True
    activation: bool = True
    bias: bool = False
    op: Literal["separable_conv"] = "separable_conv"

    @property
    def level_step(self) -> int:
        return self.stride.bit_length() - 1

    def describe(self) -> str:
        stride = f"/s{self.stride}" if self.stride > 1 else ""
        return f"sepconv {self.kernel}x{self.kernel}{stride} {self.in_channels}->{self.out_channels}"


@dataclass(frozen=True)
class MaxPool:
    kernel: int
    stride: int
    channels: int
    size: Size
    op: Literal["maxpool"] = "maxpool"

    @property
    def level_step(self) -> int:
        return self.stride.bit_length() - 1

    def describe(self) -> str:
        return f"maxpool {self.kernel}x{self.kernel}/s{self.stride}"


@dataclass(frozen=True)
class Upsample:
    factor: int
    channels: int
    size: Size
    mode: Literal["nearest", "bilinear"] = "nearest"
    op: Literal["upsample"] = "upsample"

    @property
    def level_step(self) -> int:
        return -(self.factor.bit_length() - 1)

    def describe(self) -> str:
        return f"up x{self.factor} {self.mode}"


@dataclass(frozen=True)
class SqueezeExcite:
    channels: int
    se_channels: int
    size: Size  # of the gated map (the squeezed one is 1x1)
    inner: str = "relu"
    gate: str = "hard_sigmoid"
    op: Literal["squeeze_excite"] = "squeeze_excite"

    def describe(self) -> str:
        return f"se {self.channels}->{self.se_channels}->{self.channels} ({self.gate})"


@dataclass(frozen=True)
class Add:
    channels: int
    size: Size
    op: Literal["add"] = "add"

    def describe(self) -> str:
        return "add"


@dataclass(frozen=True)
class Activation:
    channels: int
    size: Size
    function: str = ""  # an activation name; "" = the plan's (a node op may have its own: BiFPN's swish)
    op: Literal["activation"] = "activation"
    level_step = 0

    def describe(self) -> str:
        return f"act {self.function}" if self.function else "act"


@dataclass(frozen=True)
class Norm:
    channels: int
    size: Size
    op: Literal["norm"] = "norm"
    level_step = 0

    def describe(self) -> str:
        return "norm"


# The ops of resampling chains, stems, endpoints and op blocks (a block given as ``ops`` in the spec).
Op = Conv | SeparableConv | MaxPool | Upsample | Norm | Activation
UnitOpKind = Conv | SqueezeExcite | Add | Activation  # the ops units expand into


@dataclass(frozen=True)
class Edge:
    """A parent feeding a node: ``ops`` bring it to the node's level and channels.

    ``kind`` is ``"input"`` for a listed parent, ``"merge"`` for one added by the
    merge-unused rule (no ops), ``"chain"`` for the stem and endpoint wiring.
    """

    source: str
    target: str
    kind: Literal["input", "merge", "chain"]
    ops: tuple[Op, ...] = ()
    source_level: int = 0
    target_level: int = 0

    def describe(self) -> str:
        if not self.ops:
            return "direct (merge)" if self.kind == "merge" else "="
        return ", ".join(op.describe() for op in self.ops)


@dataclass(frozen=True)
class UnitOp:
    """One op of a unit. ``role`` names it within the unit (its weights' slot is
    ``unit_slot(node, k) + "/" + role``); ``path`` says what it reads: ``shortcut`` ops read the
    unit's input, ``branch`` ops the previous branch op's output (the first one the unit's input),
    ``join`` ops the branch (``Add`` also the shortcut) and write the branch."""

    role: str
    path: Literal["shortcut", "branch", "join"]
    op: UnitOpKind


@dataclass(frozen=True)
class Unit:
    """One block of a block group (``block_repeats`` units per group); :attr:`ops` is its recipe."""

    type: Literal["residual", "bottleneck", "mbconv"]
    in_channels: int
    filters: int
    out_channels: int
    stride: int
    in_size: Size
    size: Size
    projection: bool = False
    expand: bool = False
    expand_channels: int = 0
    se_channels: int = 0
    residual: bool = True

    @property
    def level_step(self) -> int:
        """Levels the unit moves its input by (log2 of its stride)."""
        return self.stride.bit_length() - 1

    @property
    def ops(self) -> tuple[UnitOp, ...]:
        """The unit as single ops, in build order (Model Garden's creation order)."""
        recipe = _RECIPES.get(self.type)
        return recipe(self) if recipe is not None else ()

    @property
    def weighted_ops(self) -> tuple[UnitOp, ...]:
        """The ops that hold weights (convolutions and squeeze-excitations)."""
        return tuple(step for step in self.ops if isinstance(step.op, Conv | SqueezeExcite))


# The block recipes: each block type as single ops, written here only. Every backend, the stats,
# the weight mappings and the emitted source read them through ``Unit.ops``.

def _shortcut(u: Unit) -> tuple[UnitOp, ...]:
    if not u.projection:
        return ()
    return (UnitOp("shortcut", "shortcut", Conv(u.in_channels, u.out_channels, 1, u.stride, u.size, activation=False)),)


def _join(u: Unit, activation: bool) -> tuple[UnitOp, ...]:
    if not u.residual:
        return ()
    add = UnitOp("add", "join", Add(u.out_channels, u.size))
    return (add, UnitOp("act", "join", Activation(u.out_channels, u.size))) if activation else (add,)


def _bottleneck(u: Unit) -> tuple[UnitOp, ...]:
    f = u.filters
    return (*_shortcut(u),
            UnitOp("conv1", "branch", Conv(u.in_channels, f, 1, 1, u.in_size)),
            UnitOp("conv2", "branch", Conv(f, f, 3, u.stride, u.size)),
            UnitOp("conv3", "branch", Conv(f, u.out_channels, 1, 1, u.size, activation=False)),
            *_join(u, activation=True))


def _residual(u: Unit) -> tuple[UnitOp, ...]:
    f = u.filters
    return (*_shortcut(u),
            UnitOp("conv1", "branch", Conv(u.in_channels, f, 3, u.stride, u.size)),
            UnitOp("conv2", "branch", Conv(f, u.out_channels, 3, 1, u.size, activation=False)),
            *_join(u, activation=True))


def _mbconv(u: Unit) -> tuple[UnitOp, ...]:
    width = u.expand_channels if u.expand else u.in_channels
    ops = [UnitOp("expand", "branch", Conv(u.in_channels, width, 1, 1, u.in_size))] if u.expand else []
    ops.append(UnitOp("depthwise", "branch", Conv(width, width, 3, u.stride, u.size, groups=width)))
    if u.se_channels > 0:
        ops.append(UnitOp("se", "branch", SqueezeExcite(width, u.se_channels, u.size)))
    ops.append(UnitOp("project", "branch", Conv(width, u.out_channels, 1, 1, u.size, activation=False)))
    return (*ops, *_join(u, activation=False))  # MobileNet's linear bottleneck: no activation after the add


_RECIPES = {"bottleneck": _bottleneck, "residual": _residual, "mbconv": _mbconv}
UNIT_TYPES: tuple[str, ...] = tuple(_RECIPES)


@dataclass(frozen=True)
class Node:
    """A node of the planned network, in build order.

    ``kind``: ``stem`` (``ops`` on the image), ``stem_block`` / ``block`` (fuse
    ``inputs``, then ``units``; an op block fuses, then runs ``ops``), ``endpoint``
    (``ops`` on its one input), ``input`` (a decoder's feature map from outside: no inputs, no ops).
    """

    name: str
    kind: Literal["stem", "stem_block", "block", "endpoint", "input"]
    level: int
    size: Size
    channels: int
    inputs: tuple[Edge, ...] = ()
    ops: tuple[Op, ...] = ()
    block_type: str | None = None
    units: tuple[Unit, ...] = ()
    fusion: str | None = None  # a name of specgraph._fusions.FUSIONS
    fusion_activation: bool = False
    drop_fraction: float | None = None  # stochastic depth rate = drop_rate * drop_fraction
    output_level: int | None = None
    spec_path: str = ""
    part: str | None = None  # the part of a composed network it is in (a spec's name); None: a spec of one part
    shares: str | None = None  # the earlier node whose weights it runs (a shared cell's later repetitions)

    @property
    def weight_shapes(self) -> tuple:
        """What a node's weights are made for: its inputs' resampling, fusion, units and ops (names, sources and
        stochastic depth left out). A node that ``shares`` another's weights has the same."""
        return (tuple(e.ops for e in self.inputs), self.fusion, self.fusion_activation, self.units, self.ops,
                self.kind, self.block_type)

    @property
    def fused_level(self) -> int:
        """The level a block's inputs are brought to and fused at; its strided units or ops move on from it."""
        if self.kind not in ("block", "stem_block"):
            return self.level
        return self.level - sum(unit.level_step for unit in self.units) - sum(op.level_step for op in self.ops)

    @property
    def fused_channels(self) -> int:
        """The channels a block's inputs are brought to: what its first unit or op takes."""
        if self.units:
            return self.units[0].in_channels
        if self.kind == "block" and self.ops:
            first = self.ops[0]
            return first.in_channels if isinstance(first, Conv | SeparableConv) else first.channels
        return self.channels


@dataclass(frozen=True)
class Plan:
    """One variant of a spec at one input size, with endpoints ``min_level..max_level``."""

    spec_name: str
    variant: str
    input_size: Size
    input_channels: int
    min_level: int
    max_level: int
    activation: str
    norm_momentum: float
    norm_epsilon: float
    endpoints_num_filters: int | None  # None: no endpoint convs (the endpoints keep their blocks' channels)
    nodes: tuple[Node, ...]
    endpoints: tuple[tuple[str, str], ...]  # (level key "3", endpoint node name)
    pruned: tuple[str, ...] = field(default=())
    # (index in the build order of every planned node, node) for each node not in ``nodes``: the pruned
    # blocks and a level selection's skipped endpoints. Nothing builds them, but Model Garden creates them
    # (its layer names count them) and loads a selection from its whole min..max network; kept here so
    # weight loaders never re-plan from ``spec_name``. Not in ``hash``: they do not change the network.
    pruned_nodes: tuple[tuple[int, Node], ...] = field(default=())
    # A decoder's plan (a spec that declares ``inputs``): (level key "3", input node name) for each feature map it
    # takes, in declared order; empty for a network on an image (``input_size`` is then the image the feature
    # maps come from, which fixes their sizes).
    inputs: tuple[tuple[str, str], ...] = field(default=())

    def require_image(self, what: str) -> None:
        """A ``BackendError`` when this is a decoder's plan (it takes feature maps) and ``what`` needs a network
        on an image."""
        if self.inputs:
            levels = ", ".join(level for level, _ in self.inputs)
            raise BackendError(f"{what}: {self.spec_name} is a decoder (it takes feature maps at levels {levels}); "
                               f"{what} takes a network on an image: compose it with a backbone (a "
                               f"composition spec: backbone = \"...\", decoders = [\"{self.spec_name}\"])")

    @cached_property
    def _index(self) -> dict[str, Node]:
        return {n.name: n for n in self.nodes}

    def node(self, name: str) -> Node:
        return self._index[name]

    def __contains__(self, name: object) -> bool:
        return name in self._index

    @property
    def edges(self) -> tuple[Edge, ...]:
        return tuple(e for n in self.nodes for e in n.inputs)

    @property
    def endpoint_map(self) -> dict[str, str]:
        return dict(self.endpoints)

    @property
    def levels_label(self) -> str:
        """The endpoint levels for people: ``3..7``, or ``3, 5`` for a selection (``plan(..., levels=)``)."""
        keys = [key for key, _ in self.endpoints]
        if keys == [str(lv) for lv in range(self.min_level, self.max_level + 1)]:
            return f"{self.min_level}..{self.max_level}"
        return ", ".join(keys)

    @property
    def unpruned_nodes(self) -> tuple[Node, ...]:
        """Every node the planner made, in build order: ``nodes`` and ``pruned_nodes`` merged."""
        merged = list(self.nodes)
        for index, node in sorted(self.pruned_nodes, key=lambda pair: pair[0]):
            merged.insert(index, node)
        return tuple(merged)

    def contiguous(self) -> Plan:
        """The plan with an endpoint at every level of ``min_level..max_level`` (``self`` when it has them).

        A level selection (``levels=[3, 5]``) is that network less some endpoints and the blocks only they
        need; Model Garden has no selections, so its weights are those of this network. Made from
        ``pruned_nodes`` alone (equal to planning the spec with ``min_level``/``max_level``); a
        :class:`PlanError` when a level in between has no endpoint, or the plan lacks its pruned nodes.
        """
        wanted = tuple(range(self.min_level, self.max_level + 1))
        if tuple(int(key) for key, _ in self.endpoints) == wanted:
            return self
        every = self.unpruned_nodes
        missing = sorted(set(self.pruned) - {node.name for _, node in self.pruned_nodes})
        if missing:
            raise PlanError(f"the plan lacks the pruned block(s) {', '.join(missing)} (a plan dict from an older "
                            "specgraph?); plan the spec again")
        endpoints = {node.level: node.name for node in every if node.kind == "endpoint"}
        absent = [level for level in wanted if level not in endpoints]
        if absent:
            raise PlanError(f"levels {self.levels_label}: no endpoint at level {', '.join(map(str, absent))}, so "
                            f"there is no network of levels {self.min_level}..{self.max_level}")
        live = _ancestors(every, [endpoints[level] for level in wanted])
        return replace(
            self, nodes=tuple(node for node in every if node.name in live),
            endpoints=tuple((str(level), endpoints[level]) for level in wanted),
            pruned=tuple(node.name for node in every if node.name not in live and node.kind != "endpoint"),
            pruned_nodes=tuple((i, node) for i, node in enumerate(every) if node.name not in live))

    def lint(self) -> None:
        """Check the plan's own invariants; one :class:`PlanError` lists every broken one.

        What a backend relies on without re-deriving it: unique node names; every input an earlier
        node; each op chain's channels continue from the source and end at what the node consumes;
        levels follow the strides and factors; every size is ``ceil(input / 2**level)``; the units
        chain to the node's channels; a node that ``shares`` weights names an earlier owner of the same
        :attr:`Node.weight_shapes`; endpoints name endpoint nodes. The planner's plans always pass;
        a plan built by hand or read with :meth:`from_dict` may not.
        """
        problems: list[Problem] = []

        def bad(path: str, message: str) -> None:
            problems.append(Problem(message, path))

        def size_at(level: int) -> Size:
            return (-(-self.input_size[0] // 2**level), -(-self.input_size[1] // 2**level))

        def chain(path: str, ops: tuple[Op, ...], channels: int, level: int) -> tuple[int, int]:
            """Walk ``ops`` from (channels, level); returns where they end."""
            for k, op in enumerate(ops):
                where = f"{path}.ops[{k}]"
                if isinstance(op, Conv | SeparableConv):
                    if op.in_channels != channels:
                        bad(where, f"takes {op.in_channels} channels, gets {channels}")
                    if op.stride < 1 or op.stride & (op.stride - 1):
                        bad(where, f"stride {op.stride} is not a power of two")
                    channels, level = op.out_channels, level + op.level_step
                elif isinstance(op, MaxPool | Upsample | Norm | Activation):
                    if op.channels != channels:
                        bad(where, f"holds {op.channels} channels, gets {channels}")
                    level += op.level_step
                else:
                    bad(where, f"unknown op {type(op).__name__}")
                    continue
                if tuple(op.size) != size_at(level):
                    bad(where, f"size {tuple(op.size)}, but level {level} of {self.input_size} is {size_at(level)}")
            return channels, level

        def unit_ops(path: str, unit: Unit) -> None:
            """The unit's ops chain from its input to its output; roles are unique (they are slots)."""
            if unit.type not in _RECIPES:
                bad(path, f"unknown unit type {unit.type!r}; known: {', '.join(_RECIPES)}")
                return
            roles = [step.role for step in unit.ops]
            for role in sorted({r for r in roles if roles.count(r) > 1}):
                bad(path, f"two ops named {role!r}")
            branch = unit.in_channels
            for step in unit.ops:
                op, where = step.op, f"{path}.{step.role}"
                if isinstance(op, Conv):
                    if op.in_channels != (unit.in_channels if step.path == "shortcut" else branch):
                        bad(where, f"takes {op.in_channels} channels, gets "
                                   f"{unit.in_channels if step.path == 'shortcut' else branch}")
                    if step.path == "shortcut" and op.out_channels != unit.out_channels:
                        bad(where, f"gives {op.out_channels} channels; the unit's output has {unit.out_channels}")
                    if step.path == "branch":
                        branch = op.out_channels
                elif op.channels != branch:
                    bad(where, f"holds {op.channels} channels, gets {branch}")
                if isinstance(op, Add) and not any(s.path == "shortcut" for s in unit.ops) and (
                        unit.in_channels != op.channels or unit.stride != 1):
                    bad(where, f"adds the unit's input ({unit.in_channels} channels, stride {unit.stride}) to "
                               f"{op.channels} channels at stride 1; the unit needs a projection shortcut")
            if branch != unit.out_channels:
                bad(path, f"its branch ends at {branch} channels; the unit says {unit.out_channels}")

        seen: dict[str, Node] = {}
        for i, node in enumerate(self.nodes):
            path = f"nodes[{i}] {node.name}"
            if node.name in seen:
                bad(path, "a second node of this name")
            if tuple(node.size) != size_at(node.level):
                bad(path, f"size {tuple(node.size)}, but level {node.level} of {self.input_size} is "
                          f"{size_at(node.level)}")
            consumed = node.fused_channels
            # The level the inputs are fused at: a strided unit (a stem block's) or op moves on from it.
            fused_level = node.fused_level
            if node.kind == "stem":
                end = chain(path, node.ops, self.input_channels, 0)
                if end != (node.channels, node.level):
                    bad(path, f"its ops end at {end[0]} channels, level {end[1]}; the node says "
                              f"{node.channels}, level {node.level}")
            concat = node.fusion in FUSIONS and FUSIONS[node.fusion].concat
            if node.kind in ("block", "stem_block") and node.fusion is not None and node.fusion not in FUSIONS:
                bad(path, f"unknown fusion {node.fusion!r}; known: {', '.join(FUSIONS)}")
            side_by_side = 0  # a concatenation's channels
            for j, edge in enumerate(node.inputs):
                where = f"{path}.inputs[{j}]"
                source = seen.get(edge.source)
                if source is None:
                    bad(where, f"source {edge.source!r} is not an earlier node")
                    continue
                if edge.target != node.name:
                    bad(where, f"target {edge.target!r} is not this node")
                channels, level = chain(where, edge.ops, source.channels, source.level)
                if node.kind == "endpoint":
                    channels, level = chain(path, node.ops, channels, level)
                    want = (node.channels, node.level)
                else:
                    want = (channels if concat else consumed, fused_level)
                    side_by_side += channels
                if (channels, level) != want:
                    bad(where, f"reaches {channels} channels at level {level}; the node needs {want[0]} at "
                               f"level {want[1]}")
            if concat and side_by_side != consumed:
                bad(path, f"its inputs concatenate to {side_by_side} channels; the node takes {consumed}")
            if node.kind == "block" and node.ops:
                end = chain(path, node.ops, consumed, fused_level)
                if end != (node.channels, node.level):
                    bad(path, f"its ops end at {end[0]} channels, level {end[1]}; the node says "
                              f"{node.channels}, level {node.level}")
            previous, level = consumed, fused_level
            for k, unit in enumerate(node.units):
                if unit.in_channels != previous:
                    bad(f"{path}.units[{k}]", f"takes {unit.in_channels} channels, gets {previous}")
                out_level = level + unit.level_step
                if (tuple(unit.in_size), tuple(unit.size)) != (size_at(level), size_at(out_level)):
                    bad(f"{path}.units[{k}]", f"sizes {tuple(unit.in_size)} -> {tuple(unit.size)}, but levels "
                                              f"{level} -> {out_level} are {size_at(level)} -> {size_at(out_level)}")
                unit_ops(f"{path}.units[{k}]", unit)
                previous, level = unit.out_channels, out_level
            if node.units and previous != node.channels:
                bad(path, f"its units end at {previous} channels; the node says {node.channels}")
            if node.shares is not None:
                owner = seen.get(node.shares)
                if owner is None or owner.shares is not None:
                    bad(f"{path}.shares", f"{node.shares!r} is not an earlier node with weights of its own")
                elif owner.weight_shapes != node.weight_shapes:
                    bad(f"{path}.shares", f"its ops, units or inputs' resampling differ from {node.shares!r}'s, "
                                          "so it cannot run that node's weights")
            seen[node.name] = node
        for key, name in self.endpoints:
            node = seen.get(name)
            if node is None or node.kind != "endpoint":
                bad(f"endpoints[{key!r}]", f"{name!r} is not an endpoint node of the plan")
            elif str(node.level) != key:
                bad(f"endpoints[{key!r}]", f"{name!r} is at level {node.level}")
        if problems:
            raise PlanError(problems)

    def to_dict(self) -> dict:
        data = asdict(self)
        if not self.pruned_nodes:  # plans without pruned nodes keep the dict they always had
            del data["pruned_nodes"]
        data["hash"] = self.hash
        return data

    @classmethod
    def from_dict(cls, data: dict) -> Plan:
        """The inverse of ``to_dict()`` (e.g. from JSON); checks the stored hash when there is one."""
        try:
            data = dict(data)
            expected = data.pop("hash", None)
            plan = cls(**{**data, "input_size": _pair(data["input_size"]),
                          "nodes": tuple(_node_from(n) for n in data["nodes"]),
                          "endpoints": tuple((str(k), str(v)) for k, v in data["endpoints"]),
                          "inputs": tuple((str(k), str(v)) for k, v in data.get("inputs", ())),
                          "pruned": tuple(data.get("pruned", ())),
                          "pruned_nodes": tuple((_position(i), _node_from(n))
                                                for i, n in data.get("pruned_nodes", ()))})
        except (KeyError, TypeError, ValueError) as exc:
            raise PlanError(f"not a plan dict: {exc}") from None
        if expected is not None and plan.hash != expected:
            raise PlanError("plan dict does not match its hash (edited, or from another specgraph version)")
        return plan

    @cached_property
    def hash(self) -> str:
        """A stable content hash (sha256 of the canonical JSON of the plan, ``pruned_nodes`` left out)."""
        data = asdict(self)
        del data["pruned_nodes"]  # not part of the network built; leaving them out keeps every hash as it was
        for node in data["nodes"]:
            if node["part"] is None:  # likewise for plans of one part
                del node["part"]
            if node["shares"] is None:  # and for nodes with weights of their own
                del node["shares"]
        if not data["inputs"]:  # and for plans of an image
            del data["inputs"]
        text = json.dumps(data, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()

    def table(self) -> str:
        """A readable table: node, level, size, channels, parents and their resample ops."""
        rows = [("node", "kind", "level", "size", "channels", "parents / ops")]
        for n in self.nodes:
            size = f"{n.size[0]}x{n.size[1]}"
            parents = "; ".join(f"{e.source} [{e.describe()}]" for e in n.inputs)
            if n.ops:
                own = ", ".join(op.describe() for op in n.ops)
                parents = f"{parents}; {own}" if parents else own
            if n.units:
                u = n.units[0]
                parents += f" -> {n.block_type} x{len(n.units)} (filters {u.filters})"
            if n.shares:
                parents += f" (weights of {n.shares})"
            kind = n.kind + (f" (out {n.output_level})" if n.output_level is not None else "")
            rows.append((n.name, kind, str(n.level), size, str(n.channels), parents))
        widths = [max(len(r[i]) for r in rows) for i in range(5)]
        lines = ["  ".join(c.ljust(w) for c, w in zip(r[:5], widths, strict=False)) + "  " + r[5] for r in rows]
        head = (f"{self.spec_name} variant {self.variant} @ {self.input_size[0]}x{self.input_size[1]}, "
                f"levels {self.levels_label}, hash {self.hash[:12]}")
        tail = f"pruned (feed no endpoint): {', '.join(self.pruned)}" if self.pruned else ""
        return "\n".join([head, *lines] + ([tail] if tail else []))

    def _repr_svg_(self) -> str | None:  # Jupyter
        try:
            from ._render import render_svg
        except ImportError:
            return None
        return render_svg(self)


_OPS = {"conv": Conv, "separable_conv": SeparableConv, "maxpool": MaxPool, "upsample": Upsample, "norm": Norm,
        "activation": Activation}


def _pair(value: object) -> Size:
    a, b = value  # type: ignore[misc]
    return (int(a), int(b))


def _position(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"pruned node index {value!r}: expected a non-negative integer")
    return value


def _ancestors(nodes: tuple[Node, ...], names: list[str]) -> set[str]:
    """``names`` and every node they are computed from (along ``inputs``)."""
    parents = {node.name: [edge.source for edge in node.inputs] for node in nodes}
    seen: set[str] = set()
    stack = list(names)
    while stack:
        name = stack.pop()
        if name not in seen:
            seen.add(name)
            stack.extend(parents.get(name, ()))
    return seen


def _op_from(data: dict) -> Op:
    data = dict(data)
    return _OPS[data.pop("op")](**{**data, "size": _pair(data["size"])})


def _node_from(data: dict) -> Node:
    inputs = tuple(Edge(**{**e, "ops": tuple(_op_from(o) for o in e["ops"])}) for e in data["inputs"])
    units = tuple(Unit(**{**u, "in_size": _pair(u["in_size"]), "size": _pair(u["size"])}) for u in data["units"])
    return Node(**{**data, "size": _pair(data["size"]), "inputs": inputs,
                   "ops": tuple(_op_from(o) for o in data["ops"]), "units": units})
