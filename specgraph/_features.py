"""What a backbone's outputs are, for detection and dense-prediction libraries (timm's ``FeatureInfo``).

Built from the plan alone, so the torch and Keras models describe their outputs with the same
class and the same numbers; each backend only supplies the name of the module (layer) that
produces each output.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any, NamedTuple, overload

from ._errors import ArgumentError, Problem
from ._plan import Plan

__all__ = ["Feature", "FeatureInfo"]


class Feature(NamedTuple):
    """One output: its dict key (``"3"``), channels, stride (``2**level``) and plan node (``endpoint_3``)."""

    level: str
    channels: int
    stride: int
    node: str


class FeatureInfo(Sequence[Feature]):
    """The model's outputs in endpoint order (fine to coarse), like timm's ``model.feature_info``.

    A sequence of :class:`Feature` (``info[0].channels``, ``for f in info``), plus timm's accessors:
    ``channels()``, ``reduction()``, ``module_name()`` each return a list in endpoint order, or
    one value for an int ``idx`` (a list for a list of indices); ``levels()`` gives the levels as
    ints (what ``compile(..., levels=...)`` takes), ``keys()`` the output dict's keys.
    """

    def __init__(self, plan: Plan, module_names: Sequence[str] | None = None) -> None:
        ArgumentError.expect(plan, Plan, "plan", "a Plan (specgraph.plan)")
        self._features = tuple(Feature(level, plan.node(name).channels, 2 ** plan.node(name).level, name)
                               for level, name in plan.endpoints)
        names = tuple(module_names) if module_names is not None else tuple(f.node for f in self._features)
        if len(names) != len(self._features):
            raise ArgumentError(Problem(f"{len(names)} names for {len(self._features)} outputs", "module_names"))
        self._modules = names

    # --- the sequence of Feature -----------------------------------------------------------
    def __len__(self) -> int:
        return len(self._features)

    @overload
    def __getitem__(self, index: int) -> Feature: ...

    @overload
    def __getitem__(self, index: slice) -> list[Feature]: ...

    def __getitem__(self, index: int | slice) -> Feature | list[Feature]:
        if isinstance(index, slice):
            return list(self._features[index])
        return self._features[index]

    def __iter__(self) -> Iterator[Feature]:
        return iter(self._features)

    def __eq__(self, other: object) -> bool:
        # Equal to another FeatureInfo with the same outputs, or to a list of the same Features
        # (what feature_info was before it had accessors).
        if isinstance(other, FeatureInfo):
            return self._features == other._features and self._modules == other._modules
        if isinstance(other, list | tuple):
            return list(self._features) == list(other)
        return NotImplemented

    def __hash__(self) -> int:
        return hash((self._features, self._modules))

    def __repr__(self) -> str:
        return "FeatureInfo([" + ", ".join(repr(f) for f in self._features) + "])"

    # --- timm's accessors -------------------------------------------------------------------
    def _pick(self, values: Sequence[Any], idx: int | Sequence[int] | None) -> Any:
        if idx is None:
            return list(values)
        if isinstance(idx, int) and not isinstance(idx, bool):
            return values[self._index(idx)]
        if isinstance(idx, Sequence) and not isinstance(idx, str):
            return [values[self._index(i)] for i in idx]
        raise ArgumentError(Problem(f"expected None, an output index or a list of them, got {type(idx).__name__}",
                                    "idx"))

    def _index(self, i: object) -> int:
        if isinstance(i, bool) or not isinstance(i, int) or not -len(self) <= i < len(self):
            raise ArgumentError(Problem(f"{i!r} is not an output index: this model has {len(self)} outputs "
                                        f"(levels {', '.join(f.level for f in self._features)})", "idx"))
        return i

    def channels(self, idx: int | Sequence[int] | None = None) -> Any:
        """Output channels, per output (or of output ``idx``)."""
        return self._pick([f.channels for f in self._features], idx)

    def reduction(self, idx: int | Sequence[int] | None = None) -> Any:
        """Output stride with respect to the input (``2**level``), per output (or of output ``idx``)."""
        return self._pick([f.stride for f in self._features], idx)

    def module_name(self, idx: int | Sequence[int] | None = None) -> Any:
        """The module (torch) or layer (Keras) producing each output (or output ``idx``)."""
        return self._pick(self._modules, idx)

    def levels(self, idx: int | Sequence[int] | None = None) -> Any:
        """The pyramid levels as ints (``[3, 5]``), per output (or of output ``idx``)."""
        return self._pick([int(f.level) for f in self._features], idx)

    def keys(self) -> list[str]:
        """The keys of the model's output dict, in order (``["3", "5"]``)."""
        return [f.level for f in self._features]

    def get_dicts(self, idx: int | Sequence[int] | None = None) -> Any:
        """timm's per-output dicts: ``num_chs``, ``reduction``, ``module``, ``level``."""
        dicts = [{"num_chs": f.channels, "reduction": f.stride, "module": m, "level": int(f.level)}
                 for f, m in zip(self._features, self._modules, strict=True)]
        return self._pick(dicts, idx)
