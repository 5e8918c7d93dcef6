"""The inference lowering: a :class:`SpecgraphModel` rewritten into fewer, fused kernels.

Same function, less memory traffic (eager PyTorch on CPU is bound by it):

- batch norm folded into every conv;
- activations, residual adds and block-fusion sums run inside the conv (oneDNN
  post-ops through ``torch.ops.mkldnn._convolution_pointwise``) instead of as
  separate passes over the feature map; where the addend is a scratch tensor of the
  block (never a feature map another block reads), the conv writes into it in place;
- small 1x1 convs (levels 5-7 of SpineNet-Mobile) as one BLAS matrix product, which costs
  less per call than a oneDNN primitive;
- TensorFlow's asymmetric ``SAME`` padding without a padded copy: max-pools use
  ``ceil_mode`` (the window overhanging the end is what ``-inf`` padding gives) and
  depthwise convs a kernel grown by one leading zero row/column with symmetric padding;
- 1x1 convs after a nearest upsample run before it, at the lower resolution (a
  pointwise op commutes with pixel repetition and the crop);
- squeeze-excitation at batch 1 scales the projection kernel's input channels
  instead of the feature map.

Off CPU, or without oneDNN, the same program runs on plain ``F.conv2d`` + separate
activations, so the module works on any device.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from specgraph import BackendError

from ._layers import (
    UPSAMPLES,
    BlockNode,
    BlockUnit,
    ConvNormAct,
    MaxPoolSame,
    OpChain,
    SeparableConvNormAct,
    SqueezeExcite,
    UpsampleNearest,
    fuse_inputs,
    same_padding,
)
from ._model import SpecgraphModel, decoder_inputs
from ._ops import ACTIVATIONS

__all__ = ["InferenceNet", "onednn_available"]

# Activations oneDNN applies as a conv post-op: name -> (attr, scalars, algorithm).
_POST_OPS: dict[str, tuple[str, list[float], str]] = {
    "relu": ("relu", [], ""),
    "relu6": ("hardtanh", [0.0, 6.0], ""),
    "swish": ("swish", [], ""),
    "silu": ("swish", [], ""),
    "simple_swish": ("swish", [], ""),
    "hard_swish": ("hardswish", [], ""),
    "sigmoid": ("sigmoid", [], ""),
    "tanh": ("tanh", [], ""),
    "gelu": ("gelu", [], "tanh"),
    "leaky_relu": ("leaky_relu", [0.2], ""),
}


# Below this many multiply-adds a 1x1 conv runs as one BLAS matrix product on the channels-last
# rows instead: a oneDNN conv call costs 35-50 us even when it computes nothing (measured on
# SpineNet-Mobile's level 5-7 maps: 0.36-0.76x per conv up to 2.7 M MACs, even at 11 M, worse at 22 M).
_GEMM_MAX_MACS = 4_000_000


def onednn_available() -> bool:
    """Whether this torch build has the oneDNN fused-conv ops the CPU fast path uses."""
    return torch.backends.mkldnn.is_available() and all(
        hasattr(torch.ops.mkldnn, op)
        for op in ("_convolution_pointwise", "_convolution_pointwise_", "_reorder_convolution_weight"))


def _act_name(module: nn.Module) -> str | None:
    return getattr(module, "name", None)  # ops._Fn carries its activation name; Identity has none


class FusedConv(nn.Module):
    """Conv with folded BN and bias, then ``+ add`` (optional), then the activation ``act``."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor, stride: int, groups: int, act: str | None,
                 onednn: bool) -> None:
        super().__init__()
        self.register_buffer("weight", weight)
        self.register_buffer("bias", bias)
        self.kernel, self.stride, self.groups = weight.shape[-1], stride, groups
        self._strides, self._dilations = [stride, stride], [1, 1]
        self.depthwise = groups > 1 and groups == weight.shape[0]
        self.act = act
        self.onednn = onednn
        # (attr, scalars, algorithm, separate activation or None) without / with a post-sum:
        # oneDNN fuses every _POST_OPS activation after a conv but only relu after conv + sum.
        self._plain = self._post_op(act, tuple(_POST_OPS))
        self._summed = self._post_op(act, ("relu",))
        # Per input shape (N, C, H, W): (kernel, symmetric padding, explicit F.pad or None, as a GEMM).
        self._layouts: dict[tuple[int, ...], tuple[torch.Tensor, list[int], tuple[int, ...] | None, bool]] = {}

    @staticmethod
    def _post_op(act: str | None, fusable: tuple[str, ...]) -> tuple[str, list[float], str, object]:
        if act is None or act in ("linear", "identity"):
            return "none", [], "", None
        if act in fusable:
            return (*_POST_OPS[act], None)
        return "none", [], "", ACTIVATIONS[act]

    @classmethod
    def fold(cls, unit: ConvNormAct, act: str | None, onednn: bool) -> FusedConv:
        """From a ``ConvNormAct``: the eval-mode batch norm folded into kernel and bias."""
        conv, norm = unit.conv, unit.norm
        weight = conv.weight.detach()
        bias = conv.bias.detach() if conv.bias is not None else torch.zeros(weight.shape[0], dtype=weight.dtype,
                                                                              device=weight.device)
        if isinstance(norm, nn.modules.batchnorm._BatchNorm):
            scale = norm.weight.detach() / torch.sqrt(norm.running_var + norm.eps)
            weight = weight * scale.reshape(-1, 1, 1, 1)
            bias = (bias - norm.running_mean) * scale + norm.bias.detach()
        return cls(weight.clone(), bias.clone(), conv.stride[0], conv.groups, act, onednn)

    # Cached kernels are copies: drop them when the weights move or are loaded, and never
    # copy or pickle them (a prepacked oneDNN kernel is an opaque tensor).
    def _apply(self, fn, recurse=True):  # nn.Module hook behind .to(), .cuda(), .double()
        self._layouts.clear()
        return super()._apply(fn, recurse)

    def _load_from_state_dict(self, *args, **kwargs) -> None:  # nn.Module hook behind load_state_dict
        self._layouts.clear()
        super()._load_from_state_dict(*args, **kwargs)

    def __getstate__(self) -> dict:  # behind copy.deepcopy and pickling
        state = super().__getstate__()
        state["_layouts"] = {}
        return state

    def _uses_onednn(self, x: torch.Tensor) -> bool:
        return self.onednn and x.device.type == "cpu" and x.dtype == torch.float32

    def _layout(self, x: torch.Tensor, onednn: bool) -> tuple[torch.Tensor, list[int], tuple[int, ...] | None, bool]:
        """(kernel, symmetric conv padding, explicit F.pad or None, as a GEMM) for ``x``'s shape, cached.

        On the oneDNN path the kernel is stored prepacked in the blocked layout the conv
        primitive for this shape wants, so no call reorders it again (≈ 6% of a
        SpineNet-Mobile forward pass at batch 1). Small 1x1 convs run as a GEMM instead
        (``_GEMM_MAX_MACS``); their kernel stays dense.
        """
        key = (*x.shape, onednn)
        if key not in self._layouts:
            if onednn and self._is_small_pointwise(x):
                self._layouts[key] = (self.weight, [0, 0], None, True)
                return self._layouts[key]
            height, width = x.shape[-2:]
            (top, bottom), (left, right) = (same_padding(s, self.kernel, self.stride) for s in (height, width))
            weight, pad = self.weight, None
            if top == bottom and left == right:
                padding = [top, left]
            elif self.depthwise and bottom - top in (0, 1) and right - left in (0, 1):
                # One zero row (column) in front of the kernel shifts every window by one,
                # which turns symmetric padding p+1 into TF's (p, p+1) without copying the input.
                grow_h, grow_w = bottom - top, right - left
                weight = F.pad(self.weight, (grow_w, 0, grow_h, 0))
                padding = [bottom, right]
            else:
                padding, pad = [0, 0], (left, right, top, bottom)
            if onednn:
                shape = list(x.shape)
                if pad is not None:
                    shape[-2:] = [height + top + bottom, width + left + right]
                weight = torch.ops.mkldnn._reorder_convolution_weight(weight, padding, self._strides, self._dilations,
                                                                     self.groups, shape)
            self._layouts[key] = (weight, padding, pad, False)
        return self._layouts[key]

    def _is_small_pointwise(self, x: torch.Tensor) -> bool:
        n, c, h, w = x.shape
        return (self.kernel == 1 and self.stride == 1 and self.groups == 1
                and n * h * w * c * self.weight.shape[0] <= _GEMM_MAX_MACS)

    def _gemm(self, x: torch.Tensor, weight: torch.Tensor, add: torch.Tensor | None) -> torch.Tensor:
        """The 1x1 conv as ``rows @ weight^T + bias`` on the channels-last memory (no copies)."""
        n, c, h, w = x.shape
        y = torch.addmm(self.bias, x.permute(0, 2, 3, 1).reshape(-1, c), weight.flatten(1).t())
        if add is not None:
            y += add.permute(0, 2, 3, 1).reshape(y.shape)
        y = y.view(n, h, w, -1).permute(0, 3, 1, 2)  # channels-last (N, C_out, H, W)
        if self.act == "relu":
            return y.relu_()
        return y if self.act is None else ACTIVATIONS[self.act](y)

    def forward(self, x: torch.Tensor, add: torch.Tensor | None = None,
                weight: torch.Tensor | None = None, add_is_scratch: bool = False) -> torch.Tensor:
        """``weight`` replaces the kernel for this call (1x1 stride-1 convs only).

        ``add_is_scratch``: nothing reads ``add`` after this call, so the oneDNN path may
        write the result into it (one feature-map stream less: 0.7-0.9x per conv at level 2).
        """
        onednn = self._uses_onednn(x)
        if weight is None:
            weight, padding, pad, gemm = self._layout(x, onednn)
        else:  # a per-call 1x1 kernel: nothing to prepack
            padding, pad, gemm = [0, 0], None, onednn and self._is_small_pointwise(x)
        if gemm and x.is_contiguous(memory_format=torch.channels_last):
            return self._gemm(x, weight, add)
        if pad is not None:
            x = F.pad(x, pad)
        if onednn:
            if add is None:
                attr, scalars, algorithm, act_fn = self._plain
                y = torch.ops.mkldnn._convolution_pointwise(
                    x, weight, self.bias, padding, self._strides, self._dilations, self.groups, attr, scalars,
                    algorithm)
            else:
                attr, scalars, algorithm, act_fn = self._summed
                unary = None if attr == "none" else attr
                fmt = _format_of(x)
                if add_is_scratch and add.is_contiguous(memory_format=fmt) and add.dtype == x.dtype:
                    y = torch.ops.mkldnn._convolution_pointwise_.binary(
                        add, x, weight, self.bias, padding, self._strides, self._dilations, self.groups, "add", None,
                        unary, scalars, algorithm)
                else:
                    y = torch.ops.mkldnn._convolution_pointwise.binary(
                        x, add.contiguous(memory_format=fmt), weight, self.bias, padding, self._strides,
                        self._dilations, self.groups, "add", None, unary, scalars, algorithm)
            return y if act_fn is None else act_fn(y)
        y = F.conv2d(x, weight, self.bias, self.stride, padding, 1, self.groups)
        if add is not None:
            y = y + add
        return y if self.act is None else ACTIVATIONS[self.act](y)

    def extra_repr(self) -> str:
        kind = "depthwise" if self.depthwise else "conv"
        return (f"{kind} {self.kernel}x{self.kernel}/s{self.stride} {self.weight.shape[1] * self.groups}->"
                f"{self.weight.shape[0]}, act={self.act}")


def _format_of(x: torch.Tensor) -> torch.memory_format:
    return torch.channels_last if x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous() \
        else torch.contiguous_format


class _MaxPool(nn.Module):
    """``SAME`` max-pool; asymmetric padding (p, p+1) is ``ceil_mode`` with padding p."""

    def __init__(self, kernel: int, stride: int) -> None:
        super().__init__()
        self.kernel, self.stride = kernel, stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        (top, bottom), (left, right) = (same_padding(s, self.kernel, self.stride) for s in x.shape[-2:])
        if top == bottom and left == right:
            return F.max_pool2d(x, self.kernel, self.stride, (top, left))
        if bottom - top in (0, 1) and right - left in (0, 1) and _ceil_mode_fits(x.shape[-2:], self.kernel,
                                                                                  self.stride, (top, left)):
            return F.max_pool2d(x, self.kernel, self.stride, (top, left), ceil_mode=True)
        x = F.pad(x, (left, right, top, bottom), value=float("-inf"))
        return F.max_pool2d(x, self.kernel, self.stride)


def _ceil_mode_fits(sizes: Sequence[int], kernel: int, stride: int, padding: tuple[int, int]) -> bool:
    """torch's ceil_mode gives TF's ``ceil(n / stride)`` outputs (its padding must also be <= kernel/2)."""
    for n, p in zip(sizes, padding, strict=True):
        out = -(-(n + 2 * p - kernel) // stride) + 1
        if (out - 1) * stride >= n + p:  # torch drops a window that starts in the right padding
            out -= 1
        if out != -(-n // stride) or 2 * p > kernel:
            return False
    return True


def _is_pointwise(op: nn.Module) -> bool:
    return isinstance(op, FusedConv) and op.kernel == 1 and op.stride == 1


class _Chain(nn.Module):
    """A plan op chain; 1x1 convs are moved in front of upsamples; the last conv can take ``add``."""

    def __init__(self, ops: Sequence[nn.Module]) -> None:
        super().__init__()
        ops = list(ops)
        moved = True
        while moved:  # bubble pointwise convs forward past upsamples: conv(up(x)) == up(conv(x))
            moved = False
            for i in range(len(ops) - 1):
                if isinstance(ops[i], UpsampleNearest) and _is_pointwise(ops[i + 1]):
                    ops[i], ops[i + 1] = ops[i + 1], ops[i]
                    moved = True
        self.ops = nn.ModuleList(ops)
        last = ops[-1] if ops else None
        # The chain can absorb a sum (and the activation after it) into its last conv.
        self.can_host = isinstance(last, FusedConv) and last.act is None

    def forward(self, x: torch.Tensor, image_hw: tuple[int, int], add: torch.Tensor | None = None,
                add_is_scratch: bool = False) -> torch.Tensor:
        last = len(self.ops) - 1
        for i, op in enumerate(self.ops):
            if isinstance(op, UPSAMPLES):
                x = op.forward(x, image_hw)
            elif i == last and add is not None:
                x = op.forward(x, add, add_is_scratch=add_is_scratch)
            else:
                x = op.forward(x)
        return x


def _is_scratch(t: torch.Tensor, parents: Sequence[torch.Tensor]) -> bool:
    """``t`` shares no memory with a parent feature map (other blocks read those)."""
    ptr = t.untyped_storage().data_ptr()
    return all(p.untyped_storage().data_ptr() != ptr for p in parents)


def _fold(unit: ConvNormAct, onednn: bool, act: str | bool | None = True) -> FusedConv:
    """``act=True``: the conv's own activation; else the given one (applied after an add)."""
    return FusedConv.fold(unit, _act_name(unit.act) if act is True else act, onednn)


def _residual_addend(shortcut: FusedConv | None, x: torch.Tensor, x_is_scratch: bool) -> tuple[torch.Tensor, bool]:
    """A unit's residual addend and whether the unit may sum into it: a projection's output is
    the unit's own; the identity shortcut is ``x`` itself, scratch only when ``x`` is."""
    if shortcut is None:
        return x, x_is_scratch
    return shortcut.forward(x), True


class _SqueezeExcitation(nn.Module):
    def __init__(self, se: SqueezeExcite) -> None:
        super().__init__()
        for name in ("reduce", "expand"):
            conv = getattr(se, name)
            self.register_buffer(f"{name}_weight", conv.weight.detach().flatten(1).clone())
            self.register_buffer(f"{name}_bias", conv.bias.detach().clone())
        self.inner, self.gate = se.inner, se.gate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The gate, ``[N, C]``."""
        s = self.inner(F.linear(x.mean(dim=(2, 3)), self.reduce_weight, self.reduce_bias))
        return self.gate(F.linear(s, self.expand_weight, self.expand_bias))


# Join ops the last branch conv can run itself: the add, then at most the activation (conv post-ops).
_HOSTABLE = ((), ("add",), ("add", "activation"), ("activation",))


class _Unit(nn.Module):
    """A :class:`BlockUnit` lowered op by op (submodules under the same roles): every conv folded; the
    last branch conv takes the residual add and the activation after it; a squeeze-excitation gate
    before a 1x1 conv scales that conv's kernel at batch 1 instead of the feature map."""

    def __init__(self, unit: BlockUnit, onednn: bool) -> None:
        super().__init__()
        source = unit._modules
        kinds = tuple(kind for kind, _ in unit.joins)
        # (is the add, activation name) per join op; None: the add, or a linear activation.
        joins = tuple((kind == "add", None if kind == "add" else _act_name(source[role])) for kind, role in unit.joins)
        last = source[unit.branch_roles[-1]] if unit.branch_roles else None
        hosted = isinstance(last, ConvNormAct) and _act_name(last.act) is None and kinds in _HOSTABLE
        post_act = next((act for is_add, act in joins if not is_add), None)
        self.residual = "add" in kinds
        self._shortcut = unit.shortcut_role
        if unit.shortcut_role is not None:
            self.add_module(unit.shortcut_role, _fold(source[unit.shortcut_role], onednn))
        ops: list[nn.Module] = []
        for i, role in enumerate(unit.branch_roles):
            module = source[role]
            if isinstance(module, ConvNormAct):
                host = hosted and i == len(unit.branch_roles) - 1
                ops.append(_fold(module, onednn, post_act if host else True))
            elif isinstance(module, SqueezeExcite):
                ops.append(_SqueezeExcitation(module))
            else:
                raise BackendError(f"InferenceNet cannot lower unit op {role!r} ({type(module).__name__})")
            self.add_module(role, ops[-1])
        # Per op: (module, is a squeeze-excitation, its gate can go into the next op's kernel).
        self._steps = tuple((op, isinstance(op, _SqueezeExcitation),
                             i + 1 < len(ops) and _is_pointwise(ops[i + 1]) and ops[i + 1].groups == 1)
                            for i, op in enumerate(ops))
        self._host = len(ops) - 1 if hosted else -1
        self._joins = () if hosted else joins  # without a host the joins run on their own

    def forward(self, x: torch.Tensor, x_is_scratch: bool = False) -> torch.Tensor:
        add, scratch = None, False
        if self.residual:
            shortcut = None if self._shortcut is None else self._modules[self._shortcut]
            add, scratch = _residual_addend(shortcut, x, x_is_scratch)
        y, gate, host = x, None, self._host
        for i, (op, is_se, into_kernel) in enumerate(self._steps):
            if is_se:
                g = op.forward(y)
                if into_kernel and y.shape[0] == 1:  # conv(y * g) == conv'(y), its input channels scaled by g
                    gate = g
                else:
                    y = y * g[:, :, None, None]
            elif gate is not None:
                y = op.forward(y, add if i == host else None, weight=op.weight * gate.reshape(1, -1, 1, 1),
                               add_is_scratch=scratch)
                gate = None
            elif i == host:
                y = op.forward(y, add, add_is_scratch=scratch)
            else:
                y = op.forward(y)
        for is_add, act in self._joins:
            y = y + add if is_add else (y if act is None else ACTIVATIONS[act](y))
        return y


class _Affine(nn.Module):
    """A ``Norm`` op on its own, in eval mode: ``x * scale + shift`` per channel."""

    def __init__(self, norm: nn.modules.batchnorm._BatchNorm) -> None:
        super().__init__()
        scale = norm.weight.detach() / torch.sqrt(norm.running_var + norm.eps)
        self.register_buffer("scale", scale.reshape(1, -1, 1, 1).clone())
        self.register_buffer("shift", (norm.bias.detach() - norm.running_mean * scale).reshape(1, -1, 1, 1).clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.addcmul(self.shift, x, self.scale)


class _Act(nn.Module):
    """An ``Activation`` op on its own."""

    def __init__(self, name: str) -> None:
        super().__init__()
        self.name = name

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return ACTIVATIONS[self.name](x)


class _Block(nn.Module):
    """Resample the inputs, sum them inside the last conv of one of them (the host), then the units (or an op
    block's ops)."""

    def __init__(self, block: BlockNode, chains: list[_Chain], units: list[nn.Module], act: str | None,
                 onednn: bool, ops: _Chain | None = None) -> None:
        super().__init__()
        self.inputs = nn.ModuleList(chains)
        self.units = nn.ModuleList(units)
        self.ops = ops
        self.act = act
        self.weighted = block.weighted
        self.fusion = block.fusion
        if self.weighted:
            self.register_buffer("fusion_weights", block.fusion_weights.detach().clone())
        hosts = [i for i, c in enumerate(chains) if c.can_host]
        self.host = hosts[0] if hosts and self.fusion == "sum" else None
        if self.host is not None:  # the host's last conv takes the sum and the activation after it
            ops = chains[self.host].ops
            last = ops[-1]
            ops[-1] = FusedConv(last.weight, last.bias, last.stride, last.groups, act, onednn)

    def forward(self, parents: list[torch.Tensor], image_hw: tuple[int, int]) -> torch.Tensor:
        if self.host is None:
            xs = [chain.forward(p, image_hw) for chain, p in zip(self.inputs, parents, strict=True)]
            x = fuse_inputs(xs, self.fusion_weights if self.weighted else None, self.fusion)
            if self.act is not None:
                x = ACTIVATIONS[self.act](x)
        else:
            other = None
            for i, (chain, p) in enumerate(zip(self.inputs, parents, strict=True)):
                if i != self.host:
                    t = chain.forward(p, image_hw)
                    other = t if other is None else other + t
            x = self.inputs[self.host].forward(parents[self.host], image_hw, other,
                                               add_is_scratch=other is not None and _is_scratch(other, parents))
        # Units may overwrite their input only if it is not a parent's feature map.
        scratch = _is_scratch(x, parents)
        for unit in self.units:
            x = unit.forward(x, scratch)
            scratch = True
        if self.ops is not None:
            x = self.ops.forward(x, image_hw)
        return x


class InferenceNet(nn.Module):
    """A fused, inference-only copy of a :class:`SpecgraphModel` (see the module docstring).

    ``forward(images)`` returns the same ``{level: feature map}`` as the source model in
    eval mode, within float rounding; it runs without autograd.
    """

    def __init__(self, model: SpecgraphModel, channels_last: bool = True, onednn: bool | None = None) -> None:
        super().__init__()
        model = copy.deepcopy(model).eval()  # the source keeps its parameters
        self.plan = model.plan
        self.activation = model.activation
        self.onednn = onednn_available() if onednn is None else onednn
        self.channels_last = channels_last
        lowered: dict[int, nn.Module] = {}  # a module shared by several nodes (shared weights) is lowered once
        for module in model.nodes.values():
            if id(module) not in lowered:
                lowered[id(module)] = self._lower(module)
        self.nodes = nn.ModuleDict({name: lowered[id(module)] for name, module in model.nodes.items()})
        self._wiring = model._wiring
        self._outputs = model._outputs
        if channels_last:
            self.to(memory_format=torch.channels_last)

    def _lower(self, module: nn.Module) -> nn.Module:
        if isinstance(module, nn.Identity):  # a decoder's input node: the feature map as it comes
            return module
        if isinstance(module, OpChain):
            return self._chain(module)
        if not isinstance(module, BlockNode):
            raise BackendError(f"InferenceNet cannot lower a {type(module).__name__} node")
        act = _act_name(module.fusion_act)
        chains = [self._chain(c) for c in module.inputs]
        unknown = [type(u).__name__ for u in module.units if not isinstance(u, BlockUnit)]
        if unknown:
            raise BackendError(f"InferenceNet cannot lower unit type(s) {', '.join(unknown)}")
        units = [_Unit(u, self.onednn) for u in module.units]
        ops = self._chain(module) if len(module.ops) else None
        return _Block(module, chains, units, act, self.onednn, ops)

    def _chain(self, chain: OpChain | BlockNode) -> _Chain:
        ops: list[nn.Module] = []
        for op in chain.ops:
            if isinstance(op, ConvNormAct):
                ops.append(FusedConv.fold(op, _act_name(op.act), self.onednn))
            elif isinstance(op, SeparableConvNormAct):
                ops.append(FusedConv.fold(op.depthwise, None, self.onednn))
                ops.append(FusedConv.fold(op.pointwise, _act_name(op.pointwise.act), self.onednn))
            elif isinstance(op, nn.modules.batchnorm._BatchNorm):
                ops.append(_Affine(op))
            elif _act_name(op) is not None:
                ops.append(_Act(_act_name(op)))
            elif isinstance(op, nn.Identity):  # a linear activation
                continue
            elif isinstance(op, MaxPoolSame):
                ops.append(_MaxPool(op.kernel, op.stride))
            elif isinstance(op, UPSAMPLES):
                ops.append(op)  # parameter-free: the source's module serves as is
            else:
                raise BackendError(f"InferenceNet cannot lower a {type(op).__name__} op")
        return _Chain(ops)

    def train(self, mode: bool = True) -> InferenceNet:
        if mode:
            raise RuntimeError("InferenceNet is inference-only (batch norm is folded); train the SpecgraphModel")
        return super().train(False)

    @torch.no_grad()
    def forward(self, images: torch.Tensor | Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """``images`` (N, C, H, W) -> ``{level: features}``; a decoder takes ``{level: features}`` instead."""
        feats: dict[str, torch.Tensor] = {}
        if self.plan.inputs:
            feats, image_hw = decoder_inputs(self.plan, images, self.channels_last)
        else:
            image_hw = (images.shape[-2], images.shape[-1])
            if self.channels_last:
                images = images.contiguous(memory_format=torch.channels_last)
        nodes = self.nodes
        for name, kind, sources in self._wiring:
            module = nodes[name]
            if kind == "input":
                continue
            if kind == "stem":
                feats[name] = module.forward(images, image_hw)
            elif kind == "endpoint":
                feats[name] = module.forward(feats[sources[0]], image_hw)
            else:
                feats[name] = module.forward([feats[s] for s in sources], image_hw)
        return {level: feats[name] for level, name in self._outputs}

    def extra_repr(self) -> str:
        p = self.plan
        return (f"{p.spec_name} {p.variant}, levels {p.levels_label}, activation={self.activation}, "
                f"onednn={self.onednn}, channels_last={self.channels_last}")
