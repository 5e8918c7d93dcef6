"""Porting Model Garden's hard-coded block lists into specs."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from ._errors import ArgumentError, SpecValidationError
from ._loader import load, validate_data
from ._schema import Spec
from ._text import brief

__all__ = ["from_modelgarden_tuples"]

_FAMILIES = {"spinenet": "spinenet", "mobile": "spinenet_mobile", "spinenet_mobile": "spinenet_mobile"}


def _fields(spec: Any) -> tuple[int, str, tuple[int, int], bool]:
    if isinstance(spec, tuple | list):
        level, block_fn, offsets, is_output = spec
    else:  # Model Garden's BlockSpec objects
        level, block_fn, offsets, is_output = spec.level, spec.block_fn, spec.input_offsets, spec.is_output
    return int(level), str(block_fn), tuple(offsets), bool(is_output)


def from_modelgarden_tuples(
    block_specs: Iterable[Any],
    scaling_map: Mapping[str, Mapping[str, Any]] | None = None,
    *,
    family: str = "spinenet",
    name: str | None = None,
    **defaults: Any,
) -> Spec:
    """Turn Model Garden's ``(level, block_fn, (offset0, offset1), is_output)`` list into a spec.

    Offsets index Model Garden's growing ``net`` list: 0 and 1 are the two stem blocks
    (``stem1``, ``stem2``), ``k >= 2`` is block ``sp{k-1}``. The stem, base filters,
    resampling and fusion come from the built-in ``family`` (``spinenet`` or
    ``mobile``); ``scaling_map`` (``SCALING_MAP``-shaped) replaces its variants, and
    ``defaults`` (e.g. ``se_ratio=0.2``) fill fields the map leaves out.
    """
    if family not in _FAMILIES:
        raise SpecValidationError(f"family: unknown family {brief(family)}; known: {', '.join(_FAMILIES)}")
    if isinstance(block_specs, str | bytes) or not isinstance(block_specs, Iterable):
        raise ArgumentError(f"block_specs: expected Model Garden's list of block specs, got "
                            f"{type(block_specs).__name__}")
    if scaling_map is not None and not isinstance(scaling_map, Mapping):
        raise ArgumentError(f"scaling_map: expected a mapping like SCALING_MAP, got {type(scaling_map).__name__}")
    base = load(_FAMILIES[family]).to_dict()
    blocks = []
    specs = list(block_specs)
    for i, raw in enumerate(specs):
        try:
            level, block_fn, offsets, is_output = _fields(raw)
        except (TypeError, ValueError, AttributeError):
            raise SpecValidationError(f"block_specs[{i}]: expected (level, block_fn, (offset0, offset1), is_output), "
                                      f"got {brief(raw)}") from None
        inputs = []
        for j, offset in enumerate(offsets):
            if isinstance(offset, bool) or not isinstance(offset, int) or not 0 <= offset < i + 2:
                raise SpecValidationError(f"block_specs[{i}].input_offsets[{j}]: offset {offset} is not an earlier "
                                          f"block (0..{i + 1})")
            inputs.append(f"stem{offset + 1}" if offset < 2 else f"sp{offset - 1}")
        blocks.append({"name": f"sp{i + 1}", "level": level, "type": block_fn, "inputs": inputs, "output": is_output})
    base["blocks"] = blocks
    if scaling_map is not None:
        known = set(base["variants"][next(iter(base["variants"]))]) if base["variants"] else set()
        base["variants"] = {
            str(k): {**defaults, **{f: v for f, v in dict(row).items() if f in known}} for k, row in scaling_map.items()
        }
        base["default_variant"] = next(iter(base["variants"]), None)
    if name is not None:
        base["name"] = name
    return validate_data(base)
