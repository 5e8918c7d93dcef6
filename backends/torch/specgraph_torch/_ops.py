"""Plan ops in PyTorch: TensorFlow ``SAME`` padding, conv + norm + act, max pool, nearest upsample.

Padding is computed from the tensor actually seen, so any input size works; for the
planned size it reproduces Model Garden exactly (stride 2 pads after, not before).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import skip_init

from specgraph.backend_api import ACTIVATION_FORMULAS, canonical_activation
from specgraph.backend_api import ACTIVATIONS as ACTIVATION_NAMES

__all__ = [
    "ACTIVATIONS",
    "ACTIVATION_KERNELS",
    "activation_kernel",
    "ConvNormAct",
    "MaxPoolSame",
    "SyncBatchNorm2d",
    "UpsampleNearest",
    "hard_sigmoid",
    "init_glorot_uniform",
    "init_variance_scaling",
    "level_size",
    "make_activation",
    "make_norm",
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
    out = (size + stride - 1) // stride
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


class _Fn(nn.Module):
    def __init__(self, name: str, fn: Callable[[torch.Tensor], torch.Tensor]) -> None:
        super().__init__()
        self.name, self.fn = name, fn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fn(x)

    def extra_repr(self) -> str:
        return self.name


# One function per canonical activation (specgraph._activations.FORMULAS says what each computes).
# Module-level, not lambdas: a module holding one must pickle. Each is self-contained (torch and F
# only) because the emitter copies the plan's one into standalone source.
def act_relu(x: torch.Tensor) -> torch.Tensor:
    return F.relu(x)


def act_relu6(x: torch.Tensor) -> torch.Tensor:
    return F.relu6(x)


def act_swish(x: torch.Tensor) -> torch.Tensor:
    return F.silu(x)


def act_hard_swish(x: torch.Tensor) -> torch.Tensor:
    return F.hardswish(x)  # x * relu6(x + 3) / 6, as Model Garden's


def act_hard_sigmoid(x: torch.Tensor) -> torch.Tensor:
    return F.relu6(x + 3.0) * 0.16667  # Model Garden's constant, not exactly 1/6


def act_sigmoid(x: torch.Tensor) -> torch.Tensor:
    return torch.sigmoid(x)


def act_tanh(x: torch.Tensor) -> torch.Tensor:
    return torch.tanh(x)


def act_elu(x: torch.Tensor) -> torch.Tensor:
    return F.elu(x)


def act_gelu(x: torch.Tensor) -> torch.Tensor:
    return F.gelu(x, approximate="tanh")  # Model Garden's gelu is the tanh approximation


def act_mish(x: torch.Tensor) -> torch.Tensor:
    return F.mish(x)


def act_leaky_relu(x: torch.Tensor) -> torch.Tensor:
    return F.leaky_relu(x, 0.2)  # tf.nn.leaky_relu's default alpha


def act_linear(x: torch.Tensor) -> torch.Tensor:
    return x


ACTIVATION_KERNELS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    name: globals()[f"act_{name}"] for name in ACTIVATION_FORMULAS}
# Every accepted name (aliases too) -> its function.
ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    name: ACTIVATION_KERNELS[canonical_activation(name)] for name in ACTIVATION_NAMES}
hard_sigmoid = act_hard_sigmoid  # squeeze-excitation's gate


def activation_kernel(name: str) -> Callable[[torch.Tensor], torch.Tensor]:
    """The function for any accepted activation name (aliases too); :class:`BackendError` otherwise."""
    return ACTIVATION_KERNELS[canonical_activation(name)]


def make_activation(name: str) -> nn.Module:
    kind = canonical_activation(name)  # BackendError for an unknown name
    return nn.Identity() if kind == "linear" else _Fn(name, ACTIVATION_KERNELS[kind])


class _AllReduceSum(torch.autograd.Function):
    """Differentiable sum over a process group: every process's loss depends on the total, so the
    gradient of each process's input is the sum of all processes' output gradients."""

    @staticmethod
    def forward(ctx: Any, tensor: torch.Tensor, group: Any) -> torch.Tensor:
        ctx.group = group
        total = tensor.clone(memory_format=torch.contiguous_format)
        dist.all_reduce(total, group=group)
        return total

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        grad = grad.clone(memory_format=torch.contiguous_format)
        dist.all_reduce(grad, group=ctx.group)
        return grad, None


class SyncBatchNorm2d(nn.BatchNorm2d):
    """Batch norm whose training statistics span every process of ``process_group`` (default: WORLD).

    Unlike ``nn.SyncBatchNorm`` it also synchronises CPU tensors, e.g. under DDP over gloo: torch's
    kernel takes GPU tensors only, and DDP refuses any ``nn.SyncBatchNorm`` in a CPU module, hence a
    ``BatchNorm2d`` subclass (same state-dict keys). GPU tensors take torch's own sync kernel; eval
    mode and runs without a process group are plain ``BatchNorm2d``.
    """

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float | None = 0.1, affine: bool = True,
                 track_running_stats: bool = True, process_group: Any = None) -> None:
        super().__init__(num_features, eps, momentum, affine, track_running_stats)
        self.process_group = process_group

    def _sync_group(self) -> Any:
        """The process group to synchronise over, or None for plain batch norm."""
        if not (self.training and dist.is_available() and dist.is_initialized()):
            return None
        group = dist.group.WORLD if self.process_group is None else self.process_group
        return group if dist.get_world_size(group) > 1 else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        group = self._sync_group()
        if group is None:
            return super().forward(x)
        self._check_input_dim(x)
        factor = 0.0
        if self.track_running_stats:  # same bookkeeping as nn.BatchNorm2d / nn.SyncBatchNorm
            self.num_batches_tracked.add_(1)
            factor = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
        if x.device.type != "cpu":
            # The autograd Function nn.SyncBatchNorm.forward itself calls (private, hence imported here).
            from torch.nn.modules._functions import SyncBatchNorm as _TorchSyncBatchNorm

            return _TorchSyncBatchNorm.apply(x, self.weight, self.bias, self.running_mean, self.running_var,
                                             self.eps, factor, group, dist.get_world_size(group))
        return self._cpu_sync_forward(x, group, factor)

    def _cpu_sync_forward(self, x: torch.Tensor, group: Any, factor: float) -> torch.Tensor:
        # Two passes (global mean, then the global sum of squared deviations) rather than
        # sum / sum of squares, which cancels badly when |mean| >> std. The all-reduces are
        # differentiable, so autograd gives the exact gradient of the synchronised statistics.
        dims = [0, 2, 3]
        shape = (1, -1, 1, 1)
        acc = x.to(torch.promote_types(x.dtype, torch.float32))  # statistics in at least fp32
        local_count = acc.new_full((1,), x.numel() // x.shape[1])
        sums = _AllReduceSum.apply(torch.cat([acc.sum(dims), local_count]), group)
        count = sums[-1]
        mean = sums[:-1] / count
        centered = acc - mean.view(shape)
        var = _AllReduceSum.apply(centered.square().sum(dims), group) / count
        out = centered * torch.rsqrt(var + self.eps).view(shape)
        if self.affine:
            out = out * self.weight.view(shape) + self.bias.view(shape)
        if self.track_running_stats:
            with torch.no_grad():  # torch's convention: the running variance is the unbiased one
                unbiased = var * (count / (count - 1).clamp(min=1))
                self.running_mean.mul_(1.0 - factor).add_(mean, alpha=factor)
                self.running_var.mul_(1.0 - factor).add_(unbiased, alpha=factor)
        return out.to(x.dtype)


def make_norm(channels: int, momentum: float, epsilon: float, sync: bool) -> nn.Module:
    """Batch norm with Keras's momentum convention converted (Keras 0.99 = torch 0.01)."""
    cls = SyncBatchNorm2d if sync else nn.BatchNorm2d
    return cls(channels, eps=epsilon, momentum=1.0 - momentum)


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
        self.conv = skip_init(nn.Conv2d, in_channels, out_channels, kernel, stride, padding=padding, groups=groups,
                              bias=bias)
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
