"""The compile options every first-party backend shares (Model Garden's names), checked in one place.

Backends add their own options; these are validated here, before anything is built, so a
bad value is a located :class:`ArgumentError` (``norm_momentum: ... (got nan)``) in every
backend, never a framework error halfway through a build.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ._errors import ArgumentError, BackendError, Problem
from ._schema import DropRate, Epsilon, Flag, Int, Momentum
from ._text import brief

if TYPE_CHECKING:
    from ._plan import Plan

__all__ = ["COMMON_OPTIONS", "check_options", "check_plan_matches", "frozen_nodes"]


class _CommonOptions(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)  # backend-specific options are the backend's

    activation: str | None = None  # None: the plan's; the backend knows which names it implements
    stochastic_depth_drop_rate: DropRate = 0.0
    norm_momentum: Momentum | None = None  # None: the plan's
    norm_epsilon: Epsilon | None = None  # None: the plan's
    use_sync_bn: Flag = False
    check_memory: Flag = True  # refuse a model that cannot fit in memory (specgraph.check_memory)
    # Fine-tuning a detector backbone (torchvision FrozenBatchNorm2d, detectron2 FrozenBN / FREEZE_AT):
    frozen_bn: Flag = False  # every batch norm uses its running statistics and its affine params do not train
    freeze_at: Annotated[Int, Field(ge=0)] = 0  # 0 none; 1 the stem; k > 1 the stem and the next k - 1 nodes


COMMON_OPTIONS: dict[str, Any] = {name: field.default for name, field in _CommonOptions.model_fields.items()}


def check_options(options: Mapping[str, Any], where: str = "compile()", *, plan: Plan | None = None) -> None:
    """Raise one :class:`ArgumentError` listing every shared option in ``options`` with a bad type or value.

    With ``plan``, the options that depend on it are checked against it too (``freeze_at`` at most
    the number of its nodes).
    """
    try:
        _CommonOptions.model_validate(dict(options))
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            name = ".".join(str(p) for p in error["loc"])
            message = error["msg"].removeprefix("Value error, ")
            problems.append(Problem(f"{message} (got {brief(error.get('input'))}); a {where} option", name))
        raise ArgumentError(problems) from None
    freeze_at = options.get("freeze_at", 0)
    if plan is not None and freeze_at > len(plan.nodes):
        raise ArgumentError(Problem(
            f"{freeze_at} is more than the plan's {len(plan.nodes)} nodes (stem, blocks, endpoints); give 0 to "
            f"{len(plan.nodes)} (1 freezes the stem, k the stem and the next k - 1 nodes in plan order)",
            "freeze_at"))


def frozen_nodes(plan: Plan, freeze_at: int) -> tuple[str, ...]:
    """The names of the nodes ``freeze_at`` freezes: the first ``freeze_at`` of ``plan.nodes`` (the stem first).

    detectron2's ``FREEZE_AT`` counts ResNet stages; a scale-permuted network has no stages past the
    stem, so here it counts nodes in build order: 1 is the stem, k the stem and the next k - 1 nodes.
    """
    check_options({"freeze_at": freeze_at}, plan=plan)
    return tuple(node.name for node in plan.nodes[:freeze_at])


def check_plan_matches(plan: Plan, **given: Any) -> None:
    """Raise :class:`BackendError` when a level option given beside a plan (``variant``, ``min_level``,
    ``max_level``, ``levels``; None = not given) disagrees with it: the plan is what gets built."""
    from ._planner import levels_of, parse_levels

    wrong = []
    for key, value in given.items():
        if value is None:
            continue
        if key == "levels":
            levels = parse_levels(value)
            if levels != levels_of(plan):
                wrong.append(f"levels={list(value) if isinstance(value, Sequence) else value} does not match the "
                             f"plan's levels {list(levels_of(plan))}")
        elif value != getattr(plan, key):
            wrong.append(f"{key}={value!r} does not match the plan's {key}={getattr(plan, key)!r}")
    if wrong:
        raise BackendError(f"{'; '.join(wrong)}; plan the spec again with these options (specgraph.plan) or "
                           f"leave them out")
