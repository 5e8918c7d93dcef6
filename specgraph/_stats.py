"""Parameter, MAC and memory counts straight from a plan, no framework needed.

Counts follow Keras ``count_params()``: batch-norm moving mean/variance are
non-trainable parameters. MACs count every convolution (depthwise and the
squeeze-excitation 1x1s included) for a batch of one.

Memory is float32: ``param_bytes`` holds every parameter and statistic;
``activation_bytes`` estimates the feature maps a training forward pass at batch 1
keeps for the backward pass: per conv its output and its activation's output, the
outputs of resampling, fusion and residual activations (tested against what torch's
autograd saves: 0.8x-1.3x). Inference needs far less; a batch of N needs N times the
activations.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from ._fusions import fusion_weight_shape
from ._plan import Activation, Conv, Edge, Node, Norm, Op, Plan, SeparableConv, SqueezeExcite, Unit, UnitOpKind

__all__ = ["NodeStats", "Stats", "stats"]


BYTES_PER_VALUE = 4  # float32


@dataclass(frozen=True)
class _Count:
    trainable: int = 0
    non_trainable: int = 0
    macs: int = 0
    activations: int = 0  # values kept for the backward pass, batch 1

    def __add__(self, other: _Count) -> _Count:
        return _Count(self.trainable + other.trainable, self.non_trainable + other.non_trainable,
                      self.macs + other.macs, self.activations + other.activations)


_ZERO = _Count()


def _maps(size: tuple[int, int], channels: int, count: int = 1) -> _Count:
    """``count`` feature maps of ``channels`` x ``size`` (sums, pools, activations)."""
    return _Count(activations=count * size[0] * size[1] * channels)


def _conv(cin: int, cout: int, k: int, size: tuple[int, int], *, groups: int = 1, norm: bool = True,
          bias: bool = False, act: bool = True) -> _Count:
    weights = k * k * (cin // groups) * cout + (cout if bias else 0)
    bn = 2 * cout if norm else 0
    return (_Count(weights + bn, bn, size[0] * size[1] * cout * k * k * (cin // groups))
            + _maps(size, cout, 1 + act))


def _op(op: Op | UnitOpKind) -> _Count:
    if isinstance(op, Conv):
        return _conv(op.in_channels, op.out_channels, op.kernel, op.size, groups=op.groups, norm=op.norm,
                     bias=op.bias, act=op.activation)
    if isinstance(op, SeparableConv):  # the depthwise conv, then the 1x1 conv that takes the bias and norm
        return (_conv(op.in_channels, op.in_channels, op.kernel, op.size, groups=op.in_channels, norm=False,
                      act=False)
                + _conv(op.in_channels, op.out_channels, 1, op.size, norm=op.norm, bias=op.bias, act=op.activation))
    if isinstance(op, Norm):  # gamma, beta trainable; the moving mean and variance not
        c = op.channels
        return _Count(2 * c, 2 * c) + _maps(op.size, c)
    if isinstance(op, SqueezeExcite):  # two biased 1x1 convs on the squeezed map, then the gated map
        return (_conv(op.channels, op.se_channels, 1, (1, 1), norm=False, bias=True)
                + _conv(op.se_channels, op.channels, 1, (1, 1), norm=False, bias=True) + _maps(op.size, op.channels))
    if isinstance(op, Activation):
        return _ZERO  # after a sum, in place on it (autograd keeps one of the two)
    return _maps(op.size, op.channels)


def _unit(unit: Unit) -> _Count:
    total = _ZERO
    for step in unit.ops:
        total += _op(step.op)
    return total


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
    activation_bytes: int = 0


@dataclass(frozen=True)
class Stats:
    params: int
    trainable_params: int
    non_trainable_params: int
    macs: int
    nodes: tuple[NodeStats, ...]
    param_bytes: int = 0  # float32 weights and statistics
    activation_bytes: int = 0  # float32 feature maps a training forward pass keeps, batch 1

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
    shape = fusion_weight_shape(node.fusion, len(node.inputs), node.fused_channels)
    weighted = shape is not None
    if weighted:
        total += _Count(math.prod(shape))
    if node.fusion is not None and (len(node.inputs) > 1 or weighted or node.fusion_activation):
        # the sum (and the weighted inputs), then its activation
        total += _maps(node.size, node.channels, max(1, node.fusion_activation + (len(node.inputs) if weighted else 0)))
    if node.shares is not None:  # it runs (and costs MACs like) the node it shares with; its weights are counted there
        total = _Count(0, 0, total.macs, total.activations)
    return NodeStats(node.name, node.kind, node.level, total.trainable + total.non_trainable, total.trainable,
                     total.non_trainable, total.macs, total.activations * BYTES_PER_VALUE)


def stats(plan: Plan) -> Stats:
    """Total and per-node parameters (trainable / non-trainable), conv MACs and float32 memory of ``plan``."""
    from ._errors import ArgumentError

    if not isinstance(plan, Plan):
        raise ArgumentError(f"stats(plan): expected a Plan (see specgraph.plan), got {type(plan).__name__}")
    rows = tuple(_node(n) for n in plan.nodes)
    params = sum(r.params for r in rows)
    return Stats(
        params=params,
        trainable_params=sum(r.trainable_params for r in rows),
        non_trainable_params=sum(r.non_trainable_params for r in rows),
        macs=sum(r.macs for r in rows),
        nodes=rows,
        param_bytes=params * BYTES_PER_VALUE,
        activation_bytes=sum(r.activation_bytes for r in rows),
    )
