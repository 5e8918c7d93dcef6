"""Parameter and MAC counts straight from a plan, no framework needed.

Counts follow Keras ``count_params()``: batch-norm moving mean/variance are
non-trainable parameters. MACs count every convolution (depthwise and the
squeeze-excitation 1x1s included) for a batch of one.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from ._plan import Conv, Edge, Node, Op, Plan, Unit

__all__ = ["NodeStats", "Stats", "stats"]


@dataclass(frozen=True)
class _Count:
    trainable: int = 0
    non_trainable: int = 0
    macs: int = 0

    def __add__(self, other: _Count) -> _Count:
        return _Count(self.trainable + other.trainable, self.non_trainable + other.non_trainable,
                      self.macs + other.macs)


_ZERO = _Count()


def _conv(cin: int, cout: int, k: int, size: tuple[int, int], *, groups: int = 1, norm: bool = True,
          bias: bool = False) -> _Count:
    weights = k * k * (cin // groups) * cout + (cout if bias else 0)
    bn = 2 * cout if norm else 0
    return _Count(weights + bn, bn, size[0] * size[1] * cout * k * k * (cin // groups))


def _op(op: Op) -> _Count:
    if isinstance(op, Conv):
        return _conv(op.in_channels, op.out_channels, op.kernel, op.size, groups=op.groups, norm=op.norm,
                     bias=op.bias)
    return _ZERO


def _unit(u: Unit) -> _Count:
    if u.type == "bottleneck":
        c = (_conv(u.in_channels, u.filters, 1, u.in_size) + _conv(u.filters, u.filters, 3, u.size)
             + _conv(u.filters, u.out_channels, 1, u.size))
        return c + _conv(u.in_channels, u.out_channels, 1, u.size) if u.projection else c
    if u.type == "residual":
        c = _conv(u.in_channels, u.filters, 3, u.size) + _conv(u.filters, u.filters, 3, u.size)
        return c + _conv(u.in_channels, u.out_channels, 1, u.size) if u.projection else c
    e = u.expand_channels
    c = _conv(u.in_channels, e, 1, u.in_size) if u.expand else _ZERO
    c += _conv(e, e, 3, u.size, groups=e)
    if u.se_channels:
        c += _conv(e, u.se_channels, 1, (1, 1), norm=False, bias=True)
        c += _conv(u.se_channels, e, 1, (1, 1), norm=False, bias=True)
    return c + _conv(e, u.out_channels, 1, u.size)


def _edge(edge: Edge) -> _Count:
    total = _ZERO
    for op in edge.ops:
        total += _op(op)
    return total


@dataclass(frozen=True)
class NodeStats:
    """One node's share: its own ops and block group, plus the resampling of its inputs."""

    name: str
    kind: str
    level: int
    params: int
    trainable_params: int
    non_trainable_params: int
    macs: int


@dataclass(frozen=True)
class Stats:
    params: int
    trainable_params: int
    non_trainable_params: int
    macs: int
    nodes: tuple[NodeStats, ...]

    def to_dict(self) -> dict:
        return asdict(self)


def _node(node: Node) -> NodeStats:
    total = _ZERO
    for edge in node.inputs:
        total += _edge(edge)
    for op in node.ops:
        total += _op(op)
    for unit in node.units:
        total += _unit(unit)
    if node.fusion == "weighted":
        total += _Count(len(node.inputs), 0, 0)
    return NodeStats(node.name, node.kind, node.level, total.trainable + total.non_trainable, total.trainable,
                     total.non_trainable, total.macs)


def stats(plan: Plan) -> Stats:
    """Total and per-node parameters (trainable / non-trainable) and conv MACs of ``plan``."""
    rows = tuple(_node(n) for n in plan.nodes)
    return Stats(
        params=sum(r.params for r in rows),
        trainable_params=sum(r.trainable_params for r in rows),
        non_trainable_params=sum(r.non_trainable_params for r in rows),
        macs=sum(r.macs for r in rows),
        nodes=rows,
    )
