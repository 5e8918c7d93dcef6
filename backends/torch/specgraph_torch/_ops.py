"""Plan ops in PyTorch: activations, batch norm (synchronised across processes too); the layers
themselves (SAME padding, conv + norm + act, max pool, nearest upsample) are in ``_layers``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from specgraph.backend_api import ACTIVATION_FORMULAS, canonical_activation
from specgraph.backend_api import ACTIVATIONS as ACTIVATION_NAMES

# The layers live in _layers (self-contained, copied into emitted source); re-exported here, where
# they always were (pickles and callers name them from here).
from ._layers import _TRUNC_STD as _TRUNC_STD
from ._layers import (
    ConvNormAct,
    MaxPoolSame,
    UpsampleNearest,
    _Fn,
    init_glorot_uniform,
    init_variance_scaling,
    level_size,
    same_padding,
    same_padding_sym,
)

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

# One function per canonical activation (specgraph._activations.FORMULAS says what each computes).
# Module-level, not lambdas: a module holding one must pickle. Each is self-contained (torch and F
# only) because the emitter copies the ones a plan uses into standalone source.
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
