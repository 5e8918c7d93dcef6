"""Block-group units (plan ``Unit``s): each one a :class:`BlockUnit` built from the plan's ``unit.ops``."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from torch import nn

from specgraph import BackendError, Unit

from ._layers import UNIT_JOINS, UNIT_OP_MODULES, BlockUnit, SqueezeExcite, StochasticDepth
from ._ops import ACTIVATIONS

__all__ = ["BlockUnit", "SqueezeExcite", "StochasticDepth", "make_unit", "unit_op_values"]

NormFactory = Callable[[int], nn.Module]
ActFactory = Callable[[], nn.Module]

# Per weighted op kind, the plan op fields its layer factory takes, in order: the factory's own
# parameters after (make_norm, make_act, kernels) are named after them. The layers read plain
# values (they are copied into emitted source), never plan objects.
_FIELDS: dict[str, tuple[str, ...]] = {
    kind: tuple(inspect.signature(factory).parameters)[3:] for kind, factory in UNIT_OP_MODULES.items()}


def unit_op_values(unit: Unit) -> list[tuple[Any, ...]]:
    """``unit.ops`` as the plain ``(role, path, kind, *args)`` tuples :class:`BlockUnit` is built from."""
    ops = unit.ops
    if not ops:
        raise BackendError(f"the torch backend has no unit type {unit.type!r}")
    values = []
    for step in ops:
        kind = step.op.op
        if kind not in UNIT_OP_MODULES and kind not in UNIT_JOINS:
            raise BackendError(f"the torch backend has no unit op {kind!r} (role {step.role!r})")
        args = tuple(getattr(step.op, name) for name in _FIELDS.get(kind, ()))
        values.append((step.role, step.path, kind, *args))
    return values


def make_unit(unit: Unit, norm: NormFactory, act: ActFactory, drop_rate: float) -> BlockUnit:
    if not 0.0 <= drop_rate < 1.0:
        raise BackendError(f"stochastic depth rate must be in [0, 1), got {drop_rate}")
    return BlockUnit(unit_op_values(unit), norm, act, ACTIVATIONS, drop_rate)
