"""The null backend: walks a plan without a framework and returns output shapes.

It is the reference for what a backend must produce (one NCHW feature map per
endpoint level) and lets the plugin machinery be tested without torch or TF.
"""

from __future__ import annotations

from ._errors import BackendError
from ._plan import Plan

__all__ = ["OPTIONS", "NullModel", "compile"]


class NullModel:
    """Calling it with an NCHW shape returns ``{level: (N, C, H, W)}`` from the plan."""

    def __init__(self, plan: Plan) -> None:
        self.plan = plan

    def __call__(self, shape: tuple[int, int, int, int]) -> dict[str, tuple[int, int, int, int]]:
        batch, channels, height, width = shape
        if (height, width) != self.plan.input_size or channels != self.plan.input_channels:
            raise ValueError(f"this plan is for {self.plan.input_channels}x{self.plan.input_size}, got {shape}")
        return {level: (batch, self.plan.node(name).channels, *self.plan.node(name).size)
                for level, name in self.plan.endpoints}


OPTIONS: tuple[str, ...] = ()


def compile(plan: Plan, *, spec: object = None, check_memory: bool = True,  # noqa: A001
            **options: object) -> NullModel:
    """``spec`` and ``check_memory`` are the contract's; the null backend allocates nothing."""
    if options:
        raise BackendError(f"the null backend takes no options, got {sorted(options)}")
    return NullModel(plan)
