"""The plan lowered to an ``nn.Module``: one submodule per plan node, named after it.

State-dict layout (see README): ``nodes.<node>.ops.<i>`` for stem/endpoint ops,
``nodes.<node>.inputs.<j>.ops.<i>`` for the resampling ops of a block's j-th input,
``nodes.<node>.units.<k>.<conv>`` for its block-group units. A node that shares another's weights
is the same module under its own name too (its keys hold the owner's tensors).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import torch
from torch import nn

from specgraph import (
    Activation,
    ArgumentError,
    BackendError,
    Conv,
    MaxPool,
    Node,
    Norm,
    Op,
    Plan,
    SeparableConv,
    Spec,
    Upsample,
)
from specgraph.backend_api import (
    COMMON_OPTIONS,
    Feature,
    FeatureInfo,
    check_memory,
    check_options,
    check_plan_matches,
    frozen_nodes,
    fusion_weight_shape,
)

from ._blocks import make_unit
from ._layers import (
    BlockNode,
    ConvNormAct,
    MaxPoolSame,
    OpChain,
    SeparableConvNormAct,
    UpsampleBilinear,
    UpsampleNearest,
)
from ._ops import make_activation, make_norm

__all__ = ["OPTIONS", "Feature", "FeatureInfo", "FrozenBatchNorm2d", "ShapeSpec", "SpecgraphModel", "compile",
           "decoder_inputs"]

# compile() options: Model Garden's names and defaults (None: take the plan's value), shared with
# every backend and validated in the core.
OPTIONS: dict[str, Any] = dict(COMMON_OPTIONS)


class ShapeSpec(NamedTuple):
    """detectron2's ShapeSpec fields, without depending on detectron2."""

    channels: int | None = None
    height: int | None = None
    width: int | None = None
    stride: int | None = None


# FeatureInfo (timm's accessors over a list of Feature(level, channels, stride, node)) is the core's:
# the Keras model describes its outputs with the same class.


class FrozenBatchNorm2d(nn.BatchNorm2d):
    """Batch norm fixed to its running statistics, also in training; weight and bias do not train.

    What torchvision's ``FrozenBatchNorm2d`` and detectron2's ``FrozenBN`` do, kept a
    ``BatchNorm2d`` (same state-dict keys, weight and bias still parameters) so every weight
    loader, BN folding and the parameter count see the same model. It stays in eval mode.
    """

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float | None = 0.1, **kwargs: Any) -> None:
        super().__init__(num_features, eps, momentum, **kwargs)
        self.requires_grad_(False)
        super().train(False)

    def train(self, mode: bool = True) -> FrozenBatchNorm2d:
        return super().train(False)  # model.train() must not switch it to batch statistics

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias,
                                              False, 0.0, self.eps)

    @classmethod
    def convert(cls, module: nn.Module) -> nn.Module:
        """Replace every batch norm inside ``module`` (in place) by a frozen copy of it; returns ``module``."""
        for parent in list(module.modules()):
            for name, child in list(parent.named_children()):
                if isinstance(child, nn.BatchNorm2d) and not isinstance(child, cls):
                    frozen = cls(child.num_features, child.eps, child.momentum, device=child.running_mean.device,
                                 dtype=child.running_mean.dtype)
                    frozen.load_state_dict(child.state_dict())
                    setattr(parent, name, frozen)
        return module


# The node modules, under the names they had here (emitted source runs the same classes).
_OpChain = OpChain
_BlockNode = BlockNode


def decoder_inputs(plan: Plan, features: Any, channels_last: bool = False
                   ) -> tuple[dict[str, torch.Tensor], tuple[int, int]]:
    """A decoder's inputs by node name, and the image size they stand for: the finest one's size times its
    stride (upsampling crops to ``ceil(image / 2**level)``, which that size gives at every coarser level)."""
    inputs = plan.inputs
    if not isinstance(features, Mapping):
        raise BackendError(f"this model is a decoder ({plan.spec_name}): call it on {{level: features}} "
                           f"with levels {', '.join(level for level, _ in inputs)}, not on "
                           f"{type(features).__name__}")
    missing = [level for level, _ in inputs if level not in features]
    if missing:
        raise BackendError(f"{plan.spec_name}: no features at level(s) {', '.join(missing)}; it takes "
                           f"{', '.join(level for level, _ in inputs)} (keys are level strings, as a "
                           "backbone's outputs)")
    feats = {name: features[level] for level, name in inputs}
    if channels_last:
        feats = {k: v.contiguous(memory_format=torch.channels_last) for k, v in feats.items()}
    level, name = min(inputs, key=lambda item: int(item[0]))
    x = feats[name]
    return feats, (x.shape[-2] * 2 ** int(level), x.shape[-1] * 2 ** int(level))


class SpecgraphModel(nn.Module):
    """A planned network. ``forward(images)`` (NCHW) returns ``{level: feature map}``."""

    def __init__(self, plan: Plan, *, activation: str | None = None, stochastic_depth_drop_rate: float = 0.0,
                 norm_momentum: float | None = None, norm_epsilon: float | None = None,
                 use_sync_bn: bool = False, frozen_bn: bool = False, freeze_at: int = 0) -> None:
        super().__init__()
        check_options({"frozen_bn": frozen_bn, "freeze_at": freeze_at}, "SpecgraphModel()", plan=plan)
        frozen = frozen_nodes(plan, freeze_at)  # checked before anything is built
        self.plan = plan
        self.activation = activation or plan.activation
        self.stochastic_depth_drop_rate = float(stochastic_depth_drop_rate)
        momentum = plan.norm_momentum if norm_momentum is None else norm_momentum
        epsilon = plan.norm_epsilon if norm_epsilon is None else norm_epsilon
        make_activation(self.activation)  # fail early on an unknown name

        def norm(channels: int) -> nn.Module:
            return make_norm(channels, momentum, epsilon, use_sync_bn)

        def act() -> nn.Module:
            return make_activation(self.activation)

        self._norm, self._act = norm, act
        self._levels = {n.name: n.level for n in plan.nodes}
        built: dict[str, nn.Module] = {}
        for n in plan.nodes:  # a node that shares weights runs its owner's module (one set of parameters)
            built[n.name] = built[n.shares] if n.shares else self._build_node(n)
        self.nodes = nn.ModuleDict(built)
        del self._norm, self._act  # construction-time closures: the module must pickle (torch.save)
        # Frozen after construction, whatever the modules inside look like: a node's batch norms
        # become FrozenBatchNorm2d, and with freeze_at its parameters stop training too.
        self.frozen_bn, self.freeze_at = bool(frozen_bn), int(freeze_at)
        for node in plan.nodes if frozen_bn else ():
            FrozenBatchNorm2d.convert(self.nodes[node.name])
        for name in frozen:
            FrozenBatchNorm2d.convert(self.nodes[name]).requires_grad_(False)
        # Plain-Python wiring so forward() is a static loop (traceable, exportable).
        self._wiring = [(n.name, n.kind, tuple(e.source for e in n.inputs)) for n in plan.nodes]
        self._outputs = tuple(plan.endpoints)
        self._inputs = tuple(plan.inputs)  # a decoder's: (level, input node)
        self.channels_last = False  # set by optimize_for_inference: inputs are converted on entry

    # --- construction -------------------------------------------------------------------
    def _chain(self, ops: Sequence[Op], level: int, where: str, glorot_depthwise: bool = False) -> OpChain:
        return OpChain(self._op_modules(ops, level, where, glorot_depthwise))

    def _op_modules(self, ops: Sequence[Op], level: int, where: str, glorot_depthwise: bool = False
                    ) -> list[nn.Module]:
        modules: list[nn.Module] = []
        for op in ops:
            if not isinstance(op, Conv | SeparableConv | MaxPool | Upsample | Norm | Activation):
                raise BackendError(f"{where}: the torch backend has no op {type(op).__name__}")
            level += op.level_step
            if isinstance(op, Conv):
                modules.append(ConvNormAct(
                    op.in_channels, op.out_channels, op.kernel, op.stride, groups=op.groups,
                    norm=self._norm(op.out_channels) if op.norm else None,
                    act=self._act() if op.activation else None, bias=op.bias,
                    glorot=glorot_depthwise and op.depthwise))
            elif isinstance(op, SeparableConv):
                modules.append(SeparableConvNormAct(
                    op.in_channels, op.out_channels, op.kernel, op.stride,
                    norm=self._norm(op.out_channels) if op.norm else None,
                    act=self._act() if op.activation else None, bias=op.bias))
            elif isinstance(op, Norm):
                modules.append(self._norm(op.channels))
            elif isinstance(op, Activation):
                modules.append(make_activation(op.function) if op.function else self._act())
            elif isinstance(op, MaxPool):
                modules.append(MaxPoolSame(op.kernel, op.stride))
            else:
                expected = tuple(-(-s // 2**level) for s in self.plan.input_size)
                if expected != tuple(op.size):
                    raise BackendError(f"{where}: upsample output {op.size} is not the input size / 2**{level}")
                modules.append((UpsampleBilinear if op.mode == "bilinear" else UpsampleNearest)(op.factor, level))
        return modules

    def _build_node(self, node: Node) -> nn.Module:
        where = f"{node.name} ({node.spec_path})"
        if node.kind == "stem":
            return self._chain(node.ops, 0, where)
        if node.kind == "input":  # a decoder's feature map, taken as it is
            return nn.Identity()
        if node.kind == "endpoint":
            return self._chain(node.ops, node.level, where)
        if node.kind not in ("stem_block", "block"):
            raise BackendError(f"{where}: unknown node kind {node.kind!r}")
        # Keras DepthwiseConv2D ignores the kernel_initializer Model Garden passes to the
        # Mobile resamplers, so those kernels are glorot-uniform.
        inputs = [self._chain(e.ops, self._levels[e.source], f"{where} input {e.source}", glorot_depthwise=True)
                  for e in node.inputs]
        rate = self.stochastic_depth_drop_rate * (node.drop_fraction or 0.0) if node.kind == "block" else 0.0
        units = [make_unit(u, self._norm, self._act, rate) for u in node.units]
        ops = self._op_modules(node.ops, node.fused_level, where) if node.kind == "block" else []
        shape = fusion_weight_shape(node.fusion, len(node.inputs), node.fused_channels)
        return BlockNode(inputs, units, node.fusion, self._act() if node.fusion_activation else None, ops, shape)

    # --- forward ------------------------------------------------------------------------
    def forward(self, images: torch.Tensor | Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """``images`` (N, C, H, W) -> ``{level: features}``; a decoder's plan takes ``{level: features}`` instead
        (e.g. a backbone's outputs), one map per level of ``plan.inputs``."""
        feats: dict[str, torch.Tensor] = {}
        if self._inputs:
            feats, image_hw = decoder_inputs(self.plan, images, self.channels_last)
        else:
            image_hw = (images.shape[-2], images.shape[-1])
            if self.channels_last:
                images = images.contiguous(memory_format=torch.channels_last)
        for name, kind, sources in self._wiring:
            module = self.nodes[name]
            if kind == "input":
                continue
            if kind == "stem":
                feats[name] = module(images, image_hw)
            elif kind == "endpoint":
                feats[name] = module(feats[sources[0]], image_hw)
            else:
                feats[name] = module([feats[s] for s in sources], image_hw)
        return {level: feats[name] for level, name in self._outputs}

    # --- ecosystem contracts ------------------------------------------------------------
    @property
    def feature_info(self) -> FeatureInfo:
        """Per output, in order: ``Feature(level, channels, stride, node)``; timm's ``channels()``,
        ``reduction()``, ``module_name()`` (``nodes.endpoint_3``) and ``levels()``."""
        return FeatureInfo(self.plan, [f"nodes.{name}" for _, name in self.plan.endpoints])

    def output_shape(self) -> dict[str, ShapeSpec]:
        """detectron2-style ``{level: ShapeSpec(channels, stride)}``."""
        return {f.level: ShapeSpec(channels=f.channels, stride=f.stride) for f in self.feature_info}

    @property
    def size_divisibility(self) -> int:
        return 2**self.plan.max_level

    @property
    def out_channels(self) -> int | None:
        """The endpoints' channels (torchvision's contract); None when they differ per level (ResNet's bare ones)."""
        widths = {f.channels for f in self.feature_info}
        return widths.pop() if len(widths) == 1 else None

    def extra_repr(self) -> str:
        p = self.plan
        return f"{p.spec_name} {p.variant}, levels {p.levels_label}, activation={self.activation}"


def compile(plan: Plan | Spec | str, *, min_level: int | None = None, max_level: int | None = None,  # noqa: A001
            levels: Sequence[int] | None = None, variant: str | None = None,
            input_size: int | Sequence[int] | str = (640, 640), spec: Spec | None = None,
            **options: Any) -> SpecgraphModel:
    """Lower a plan to a :class:`SpecgraphModel` (the ``specgraph.backends`` entry point ``torch``).

    With a Spec (or spec name) the levels (``min_level``, ``max_level``, or a selection such as
    ``levels=[3, 5]``) replan it; with a Plan they must match it. ``frozen_bn`` and ``freeze_at``
    freeze batch norms and the first nodes for fine-tuning. ``check_memory=False`` builds a
    model that the memory check would refuse. ``spec`` is the backend contract's (the spec
    ``specgraph.compile`` planned); the torch model needs only the plan.
    """
    del spec
    unknown = sorted(set(options) - set(OPTIONS))
    if unknown:
        raise BackendError(f"unknown torch backend option(s) {', '.join(unknown)}; known: "
                           f"min_level, max_level, levels, {', '.join(OPTIONS)}")
    check_options(options)
    if not isinstance(plan, Plan):
        import specgraph

        if not isinstance(plan, Spec | str):
            raise ArgumentError(f"compile(plan): expected a Plan, a Spec or a spec name, got {type(plan).__name__}")
        # specgraph.compile is the one place a spec becomes a plan; it calls back here with the plan.
        return specgraph.compile(plan, "torch", variant=variant, input_size=input_size, min_level=min_level,
                                 max_level=max_level, levels=levels, **options)
    check_plan_matches(plan, variant=variant, min_level=min_level, max_level=max_level, levels=levels)
    check_options(options, plan=plan)
    if options.pop("check_memory", True):
        check_memory(plan)
    return SpecgraphModel(plan, **options)

