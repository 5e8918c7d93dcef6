"""The compile options every first-party backend shares (Model Garden's names), checked in one place.

Backends add their own options; these are validated here, before anything is built, so a
bad value is a located :class:`ArgumentError` (``norm_momentum: ... (got nan)``) in every
backend, never a framework error halfway through a build.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from ._errors import ArgumentError, Problem
from ._schema import DropRate, Epsilon, Flag, Momentum
from ._text import brief

__all__ = ["COMMON_OPTIONS", "check_options"]


class _CommonOptions(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)  # backend-specific options are the backend's

    activation: str | None = None  # None: the plan's; the backend knows which names it implements
    stochastic_depth_drop_rate: DropRate = 0.0
    norm_momentum: Momentum | None = None  # None: the plan's
    norm_epsilon: Epsilon | None = None  # None: the plan's
    use_sync_bn: Flag = False
    check_memory: Flag = True  # refuse a model that cannot fit in memory (specgraph.check_memory)


COMMON_OPTIONS: dict[str, Any] = {name: field.default for name, field in _CommonOptions.model_fields.items()}


def check_options(options: Mapping[str, Any], where: str = "compile()") -> None:
    """Raise one :class:`ArgumentError` listing every shared option in ``options`` with a bad type or value."""
    try:
        _CommonOptions.model_validate(dict(options))
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            name = ".".join(str(p) for p in error["loc"])
            message = error["msg"].removeprefix("Value error, ")
            problems.append(Problem(f"{message} (got {brief(error.get('input'))}); a {where} option", name))
        raise ArgumentError(problems) from None
