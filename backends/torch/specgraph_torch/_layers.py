"""The layers a compiled model is made of, self-contained: math and torch only, plain values in.

``specgraph_torch.emit`` copies this module's source (less its imports and ``__all__``) into the
standalone file it writes, so the compiled and the emitted model run the same code. Keep it free of
specgraph and of plan objects: constructors take ints, strings, lists and factories.

Padding is computed from the tensor actually seen, so any input size works; for the planned size it
reproduces Model Garden exactly (stride 2 pads after, not before).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import nn

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence

__all__ = [
    "UNIT_JOINS",
    "UNIT_OP_MODULES",
    "BlockNode",
    "BlockUnit",
    "ConvNormAct",
    "FUSION_KERNELS",
    "MaxPoolSame",
    "OpChain",
    "SeparableConvNormAct",
    "SqueezeExcite",
    "StochasticDepth",
    "UPSAMPLES",
    "UpsampleBilinear",
    "UpsampleNearest",
    "fuse_inputs",
    "init_glorot_uniform",
    "init_variance_scaling",
    "level_size",
    "same_padding",
    "same_padding_sym",
]

# Keras VarianceScaling divides by the std of a unit normal truncated at +-2.
_TRUNC_STD = 0.87962566103423978


def same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TensorFlow ``SAME`` padding for one axis: (before, after), the smaller half before."""
    total = max((-(-size // stride) - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


def same_padding_sym(size: Any, kernel: int, stride: int) -> tuple[Any, Any]:
    """:func:`same_padding` written so that a symbolic ``size`` (torch.export, dynamic shapes) stays
    simple: the padded length is ``(out - 1) * stride + kernel`` with ``out = (size + stride - 1) //
    stride``, so the conv's output size simplifies to exactly ``out`` and every path to a level gets
    the same expression (no guards, no sympy blow-up). ``after`` may be negative when the kernel is
    smaller than the stride: the rows TF leaves unread are cropped instead of padded."""
    # A power-of-two stride over several levels (an op block's max-pool) has ``out`` written as halvings, the
    # expression the stride-2 chains to that level have (the same value: ceil(ceil(n/2)/2) == ceil(n/4)).
    out = level_size(size, stride.bit_length() - 1) if stride & (stride - 1) == 0 else (size + stride - 1) // stride
    total = (out - 1) * stride + kernel - size
    if kernel < stride:  # total may be negative; TF pads max(total, 0) and starts at 0
        return 0, total
    before = total // 2
    return before, total - before


def level_size(size: Any, level: int) -> Any:
    """``ceil(size / 2**level)`` as the chain of stride-2 ops computes it (the same symbolic expression)."""
    for _ in range(level):
        size = (size + 1) // 2
    return size


def _pad_same(x: torch.Tensor, kernel: int, stride: int, value: float) -> torch.Tensor:
    top, bottom = same_padding_sym(x.shape[-2], kernel, stride)
    left, right = same_padding_sym(x.shape[-1], kernel, stride)
    # Eager: skip the copy when nothing pads. Traced: no branch on a symbolic size.
    if torch.compiler.is_compiling() or top or bottom or left or right:
        x = F.pad(x, (left, right, top, bottom), value=value)
    return x


def _keras_fans(weight: torch.Tensor, depthwise: bool) -> tuple[int, int]:
    """Fans as Keras computes them on its own layout (HWIO, depthwise [kh, kw, C, 1])."""
    out_ch, in_per_group, kh, kw = weight.shape
    field = kh * kw
    if depthwise:
        return out_ch * field, field
    return in_per_group * field, out_ch * field


def init_variance_scaling(weight: torch.Tensor, depthwise: bool = False) -> None:
    """Keras ``VarianceScaling()``: fan-in, truncated normal at 2 std."""
    fan_in, _ = _keras_fans(weight, depthwise)
    std = math.sqrt(1.0 / fan_in) / _TRUNC_STD
    # Rejection sampling, exact for a +-2 std truncation: redraw only the 4.6% outside, by
    # index (no compaction pass over the kept 95%); ~3x faster than nn.init.trunc_normal_.
    # Drawn in place (the weight is fresh and contiguous): no second buffer, no copy.
    with torch.no_grad():
        sample = weight.view(-1).normal_()
        outside = (sample.abs() > 2.0).nonzero().squeeze(1)
        while outside.numel():
            fresh = torch.randn(outside.numel())
            sample[outside] = fresh
            outside = outside[fresh.abs() > 2.0]
        sample.mul_(std)


def init_glorot_uniform(weight: torch.Tensor, depthwise: bool = False) -> None:
    """Keras ``glorot_uniform`` with Keras's fans."""
    fan_in, fan_out = _keras_fans(weight, depthwise)
    limit = math.sqrt(6.0 / (fan_in + fan_out))
    with torch.no_grad():
        nn.init.uniform_(weight, -limit, limit)


class _Fn(nn.Module):
    """An activation function as a module; ``name`` tells the inference lowering which one it is."""

    def __init__(self, name: str, fn: Callable[[torch.Tensor], torch.Tensor]) -> None:
        super().__init__()
        self.name, self.fn = name, fn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fn(x)

    def extra_repr(self) -> str:
        return self.name


class ConvNormAct(nn.Module):
    """``Conv`` op: SAME-padded conv (bias only if asked), then norm, then activation."""

    def __init__(self, in_channels: int, out_channels: int, kernel: int, stride: int = 1, *, groups: int = 1,
                 norm: nn.Module | None = None, act: nn.Module | None = None, bias: bool = False,
                 glorot: bool = False) -> None:
        super().__init__()
        self.kernel, self.stride = kernel, stride
        # Stride 1 with an odd kernel is symmetric, so torch's own padding is exact.
        self._static = stride == 1 and kernel % 2 == 1
        padding = (kernel - 1) // 2 if self._static else 0
        # skip_init: nn.Conv2d's own kaiming init would be overwritten below (a third of build time).
        self.conv = nn.utils.skip_init(nn.Conv2d, in_channels, out_channels, kernel, stride, padding=padding,
                                       groups=groups, bias=bias)
        depthwise = groups > 1 and groups == in_channels == out_channels
        (init_glorot_uniform if glorot else init_variance_scaling)(self.conv.weight, depthwise)
        if bias:
            nn.init.zeros_(self.conv.bias)
        self.norm = norm if norm is not None else nn.Identity()
        self.act = act if act is not None else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self._static:
            x = _pad_same(x, self.kernel, self.stride, 0.0)
        return self.act(self.norm(self.conv(x)))


class SeparableConvNormAct(nn.Module):
    """``SeparableConv`` op: SAME-padded depthwise conv (no bias), 1x1 conv (bias only if asked), norm, activation."""

    def __init__(self, in_channels: int, out_channels: int, kernel: int, stride: int = 1, *,
                 norm: nn.Module | None = None, act: nn.Module | None = None, bias: bool = False) -> None:
        super().__init__()
        self.depthwise = ConvNormAct(in_channels, in_channels, kernel, stride, groups=in_channels, glorot=True)
        self.pointwise = ConvNormAct(in_channels, out_channels, 1, bias=bias, norm=norm, act=act, glorot=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pointwise(self.depthwise(x))


class MaxPoolSame(nn.Module):
    """``MaxPool`` op: SAME padding filled with -inf, like ``tf.nn.max_pool``."""

    def __init__(self, kernel: int, stride: int) -> None:
        super().__init__()
        self.kernel, self.stride = kernel, stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = _pad_same(x, self.kernel, self.stride, float("-inf"))
        return F.max_pool2d(x, self.kernel, self.stride)

    def extra_repr(self) -> str:
        return f"kernel={self.kernel}, stride={self.stride}"


class UpsampleNearest(nn.Module):
    """``Upsample`` op: repeat each pixel ``factor`` times per axis, then crop.

    The crop target is ``ceil(image / 2**level)`` of the image actually fed to the
    model, i.e. the size every other tensor at that level has.
    """

    def __init__(self, factor: int, level: int) -> None:
        super().__init__()
        self.factor, self.level = factor, level

    def forward(self, x: torch.Tensor, image_hw: tuple[int, int]) -> torch.Tensor:
        height, width = level_size(image_hw[0], self.level), level_size(image_hw[1], self.level)
        if not torch.compiler.is_compiling():
            x = F.interpolate(x, scale_factor=float(self.factor), mode="nearest")
            return x[:, :, :height, :width]
        # Traced: gather rows/columns ``i // factor`` up to the target size; the same values, and no
        # guard ``target <= factor * size`` (true, but beyond the symbolic-shape solver).
        rows = torch.arange(height, device=x.device) // self.factor
        cols = torch.arange(width, device=x.device) // self.factor
        return x.index_select(-2, rows).index_select(-1, cols)

    def extra_repr(self) -> str:
        return f"factor={self.factor}, level={self.level}"


class UpsampleBilinear(nn.Module):
    """``Upsample`` op, ``mode="bilinear"``: resize to ``ceil(image / 2**level)`` bilinearly, half-pixel centres
    (TF2's ``tf.image.resize``). ``factor`` is the plan's, for reading only: the size comes from the image."""

    def __init__(self, factor: int, level: int) -> None:
        super().__init__()
        self.factor, self.level = factor, level

    def forward(self, x: torch.Tensor, image_hw: tuple[int, int]) -> torch.Tensor:
        size = (level_size(image_hw[0], self.level), level_size(image_hw[1], self.level))
        return F.interpolate(x, size=size, mode="bilinear", align_corners=False)

    def extra_repr(self) -> str:
        return f"factor={self.factor}, level={self.level}"


# The ops that need the image size (their output size is the level's).
UPSAMPLES = (UpsampleNearest, UpsampleBilinear)


class OpChain(nn.Module):
    """A sequence of plan ops; upsampling needs the image size to crop, so it is passed along."""

    def __init__(self, ops: Sequence[nn.Module]) -> None:
        super().__init__()
        self.ops = nn.ModuleList(ops)

    def forward(self, x: torch.Tensor, image_hw: tuple[int, int]) -> torch.Tensor:
        for op in self.ops:
            x = op(x, image_hw) if isinstance(op, UPSAMPLES) else op(x)
        return x


class StochasticDepth(nn.Module):
    """Drops the whole residual branch per sample in training; kept samples are scaled by 1/keep."""

    def __init__(self, rate: float) -> None:
        super().__init__()
        if not 0.0 <= rate < 1.0:
            raise ValueError(f"stochastic depth rate must be in [0, 1), got {rate}")
        self.rate = rate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.rate == 0.0:
            return x
        keep = 1.0 - self.rate
        mask = torch.floor(keep + torch.rand((x.shape[0], 1, 1, 1), dtype=x.dtype, device=x.device))
        return x / keep * mask

    def extra_repr(self) -> str:
        return f"rate={self.rate}"


class SqueezeExcite(nn.Module):
    """``x * gate(expand(inner(reduce(mean_hw(x)))))``; the only convs with a bias."""

    def __init__(self, channels: int, se_channels: int, inner: Callable[[torch.Tensor], torch.Tensor],
                 gate: Callable[[torch.Tensor], torch.Tensor]) -> None:
        super().__init__()
        self.reduce = nn.utils.skip_init(nn.Conv2d, channels, se_channels, 1)  # initialised below
        self.expand = nn.utils.skip_init(nn.Conv2d, se_channels, channels, 1)
        for conv in (self.reduce, self.expand):
            init_variance_scaling(conv.weight)
            nn.init.zeros_(conv.bias)
        self.inner, self.gate = inner, gate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = x.mean(dim=(2, 3), keepdim=True)
        return x * self.gate(self.expand(self.inner(self.reduce(s))))


# A unit's ops as plain values: ``(role, path, kind, *args)``, ``kind`` the plan op's ``op`` field. The
# weighted kinds are built by these factories from ``(make_norm, make_act, kernels, *args)``; ``kernels``
# maps an activation name to its function.
def _conv_op(make_norm: Callable[[int], nn.Module], make_act: Callable[[], nn.Module], kernels: Mapping[str, Any],
             in_channels: int, out_channels: int, kernel: int, stride: int, groups: int, norm: bool,
             activation: bool, bias: bool) -> nn.Module:
    return ConvNormAct(in_channels, out_channels, kernel, stride, groups=groups,
                       norm=make_norm(out_channels) if norm else None, act=make_act() if activation else None,
                       bias=bias)


def _squeeze_excite_op(make_norm: Callable[[int], nn.Module], make_act: Callable[[], nn.Module],
                       kernels: Mapping[str, Any], channels: int, se_channels: int, inner: str,
                       gate: str) -> nn.Module:
    return SqueezeExcite(channels, se_channels, kernels[inner], kernels[gate])


UNIT_OP_MODULES: dict[str, Callable[..., nn.Module]] = {"conv": _conv_op, "squeeze_excite": _squeeze_excite_op}
# The join ops: ``add`` is drop(branch) + shortcut, ``activation`` the model's activation after it.
UNIT_JOINS = ("add", "activation")


class BlockUnit(nn.Module):
    """One block unit from its ops (see ``UNIT_OP_MODULES``), in build order.

    Each weighted op is a submodule named after its role (``conv1``, ``se`` ...), so the state-dict
    keys are the plan's slots. ``shortcut`` ops read the input, ``branch`` ops chain from it, and
    ``join`` ops end the unit: ``add`` (stochastic depth on the branch, then + shortcut or input) and
    ``activation``.
    """

    def __init__(self, ops: Sequence[Sequence[Any]], make_norm: Callable[[int], nn.Module],
                 make_act: Callable[[], nn.Module], kernels: Mapping[str, Any], drop_rate: float = 0.0) -> None:
        super().__init__()
        shortcut, branch, join = None, [], []
        for role, path, kind, *args in ops:
            if kind in UNIT_OP_MODULES:
                self.add_module(role, UNIT_OP_MODULES[kind](make_norm, make_act, kernels, *args))
                if path == "shortcut":
                    shortcut = role
                else:
                    branch.append(role)
            elif kind in UNIT_JOINS:
                if kind == "activation":
                    self.add_module(role, make_act())
                join.append((kind, role))
            else:
                raise ValueError(f"unit op {role!r}: no layer for op kind {kind!r}")
        # Every unit has ``drop``; it only drops where the unit adds.
        self.drop = StochasticDepth(drop_rate if any(kind == "add" for kind, _ in join) else 0.0)
        # What forward walks, precomputed: role names (looked up in _modules, which stays right when a
        # submodule is replaced) and (is_add, role) per join op.
        self.shortcut_role: str | None = shortcut
        self.branch_roles: tuple[str, ...] = tuple(branch)
        self.joins: tuple[tuple[str, str], ...] = tuple(join)
        self._join = tuple((kind == "add", role) for kind, role in join)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        modules = self._modules
        y = x
        for role in self.branch_roles:
            y = modules[role](y)
        for is_add, role in self._join:
            if is_add:
                y = self.drop(y) + (x if self.shortcut_role is None else modules[self.shortcut_role](x))
            else:
                y = modules[role](y)
        return y


def _channelwise(w: torch.Tensor) -> torch.Tensor:
    """Per-input weights ``(n,)`` as ``(n, 1, 1, 1)``, per input and channel ``(n, C)`` as ``(n, 1, C, 1, 1)``."""
    return w.view(*w.shape, 1, 1, 1) if w.dim() == 1 else w.view(w.shape[0], 1, w.shape[1], 1, 1)


def _fuse_sum(xs: Sequence[torch.Tensor], w: torch.Tensor | None) -> torch.Tensor:
    x = xs[0]
    for t in xs[1:]:
        x = x + t
    return x


def _fuse_weighted(xs: Sequence[torch.Tensor], w: torch.Tensor | None) -> torch.Tensor:
    w = _channelwise(torch.relu(w))
    return sum(w[i] * t for i, t in enumerate(xs)) / (w.sum(dim=0) + 1e-4)


def _fuse_softmax(xs: Sequence[torch.Tensor], w: torch.Tensor | None) -> torch.Tensor:
    w = _channelwise(torch.softmax(w, dim=0))
    return sum(w[i] * t for i, t in enumerate(xs))


def _fuse_attention(xs: Sequence[torch.Tensor], w: torch.Tensor | None) -> torch.Tensor:
    x = xs[0] + xs[1] * torch.sigmoid(torch.amax(xs[0], dim=(2, 3), keepdim=True))
    return _fuse_sum([x, *xs[2:]], None)


def _fuse_concat(xs: Sequence[torch.Tensor], w: torch.Tensor | None) -> torch.Tensor:
    return torch.cat(list(xs), dim=1)


# One kernel per fusion method (specgraph._fusions.FUSIONS says what each computes): (inputs, weights) -> output.
FUSION_KERNELS: dict[str, Callable[[Sequence[torch.Tensor], torch.Tensor | None], torch.Tensor]] = {
    "sum": _fuse_sum, "weighted": _fuse_weighted, "weighted_channel": _fuse_weighted, "softmax": _fuse_softmax,
    "attention": _fuse_attention, "concat": _fuse_concat,
}


def fuse_inputs(xs: Sequence[torch.Tensor], weights: torch.Tensor | None, method: str = "sum") -> torch.Tensor:
    """A block's fusion of its resampled inputs by ``method`` (a ``FUSION_KERNELS`` name) with its ``weights``."""
    return FUSION_KERNELS[method](xs, weights)


class BlockNode(nn.Module):
    """Resample every input, fuse (sum or fast normalised weights), activation, block-group units; an op
    block runs its ``ops`` (like an :class:`OpChain`) after the fusion instead of units."""

    def __init__(self, inputs: Sequence[OpChain], units: Sequence[nn.Module], fusion: str | None,
                 act: nn.Module | None, ops: Sequence[nn.Module] = (),
                 weight_shape: Sequence[int] | None = None) -> None:
        super().__init__()
        self.inputs = nn.ModuleList(inputs)
        self.units = nn.Sequential(*units)
        self.fusion = fusion or "sum"
        if self.fusion not in FUSION_KERNELS:
            raise ValueError(f"unknown fusion {fusion!r}; known: {', '.join(FUSION_KERNELS)}")
        self.weighted = weight_shape is not None  # the fusion's trainable weights, initialised to 1
        if self.weighted:
            self.fusion_weights = nn.Parameter(torch.ones(tuple(weight_shape)))
        self.fusion_act = act if act is not None else nn.Identity()
        self.ops = nn.ModuleList(ops)  # state-dict keys nodes.<node>.ops.<i>, like a stem's or an endpoint's

    def forward(self, parents: list[torch.Tensor], image_hw: tuple[int, int]) -> torch.Tensor:
        xs = [edge(p, image_hw) for edge, p in zip(self.inputs, parents, strict=True)]
        x = fuse_inputs(xs, self.fusion_weights if self.weighted else None, self.fusion)
        x = self.units(self.fusion_act(x))
        for op in self.ops:
            x = op(x, image_hw) if isinstance(op, UPSAMPLES) else op(x)
        return x
