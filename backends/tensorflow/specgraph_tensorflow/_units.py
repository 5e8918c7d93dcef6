"""Block units built from a plan ``Unit``'s ops (``Unit.ops``): one table op kind -> Keras layer."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import tf_keras

from specgraph import Activation, Add, BackendError, Conv, Unit
from specgraph import SqueezeExcite as SqueezeExciteOp

from . import _runtime
from ._layers import ConvNormAct, LayerOptions, PlannedLayer, activation_fn

__all__ = ["BlockUnit", "SqueezeExcite", "make_unit"]


class SqueezeExcite(PlannedLayer, _runtime.SqueezeExcite):
    """A plan ``SqueezeExcite`` op; ``inner`` / ``gate`` are activation names."""

    def __init__(self, se_channels: int, channels: int, *, options: LayerOptions, inner: str = "relu",
                 gate: str = "hard_sigmoid", **kwargs: Any) -> None:
        super().__init__(se_channels, channels, inner=activation_fn(inner), gate=activation_fn(gate),
                         kernel_initializer=options.kernel_initializer, kernel_regularizer=options.kernel_regularizer,
                         bias_regularizer=options.bias_regularizer, **kwargs)


def _conv(op: Conv, options: LayerOptions, name: str) -> tf_keras.layers.Layer:
    if op.groups != 1 and not op.depthwise:
        raise BackendError(f"{name}: grouped conv with groups={op.groups} is not supported")
    return ConvNormAct(op.out_channels, op.kernel, op.stride, options=options, depthwise=op.depthwise, norm=op.norm,
                    activation=op.activation, bias=op.bias, name=name)


def _squeeze_excite(op: SqueezeExciteOp, options: LayerOptions, name: str) -> tf_keras.layers.Layer:
    return SqueezeExcite(op.se_channels, op.channels, options=options, inner=op.inner, gate=op.gate, name=name)


# Weighted unit op kind -> its layer (named by the op's role); join op kind -> ``_runtime.UNIT_JOINS``'s key.
LAYERS: dict[type, Callable[[Any, LayerOptions, str], tf_keras.layers.Layer]] = {
    Conv: _conv, SqueezeExciteOp: _squeeze_excite}
JOINS: dict[type, str] = {Add: "add", Activation: "activation"}


def unit_steps(unit: Unit, make: Callable[[Any, str], Any]) -> list[tuple[str, str, Any]]:
    """``unit.ops`` as ``_runtime.BlockUnit`` takes them: ``(role, path, make(op, role))`` for a weighted op,
    ``(role, "join", kind)`` for a join; a :class:`BackendError` for an op kind this backend lacks."""
    steps = []
    for step in unit.ops:
        kind = type(step.op)
        if step.path != "join" and kind in LAYERS:
            steps.append((step.role, step.path, make(step.op, step.role)))
        elif step.path == "join" and kind in JOINS:
            steps.append((step.role, step.path, JOINS[kind]))
        else:
            raise BackendError(f"{unit.type} unit op {step.role!r}: no {step.path} op {kind.__name__} in this backend")
    if sum(path == "shortcut" for _, path, _ in steps) > 1:
        raise BackendError(f"{unit.type} unit: more than one shortcut op")
    return steps


class BlockUnit(PlannedLayer, _runtime.BlockUnit):
    """One unit of a block group, built from ``unit.ops``; ``unit_type`` groups units by Model Garden block."""

    def __init__(self, unit: Unit, drop_rate: float, *, options: LayerOptions, **kwargs: Any) -> None:
        steps = unit_steps(unit, lambda op, role: LAYERS[type(op)](op, options, role))
        super().__init__(steps, activation=activation_fn(options.activation), drop_rate=drop_rate, **kwargs)
        self.unit_type = unit.type


def make_unit(unit: Unit, drop_rate: float, options: LayerOptions, name: str) -> BlockUnit:
    return BlockUnit(unit, drop_rate, options=options, name=name)
