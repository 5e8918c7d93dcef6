"""Test helpers for this project's tests and for backend authors'.

``valid_specs()`` draws random valid spec dicts (every block type, resampling policy,
fusion method and the merge rule); ``specgraph.load`` accepts them as they are.
``imported_modules(source)`` lists what an emitted standalone model file imports.
Needs ``hypothesis`` (not a dependency of the core).
"""

from __future__ import annotations

import ast
from typing import Any

from hypothesis import strategies as st

__all__ = ["TYPES", "imported_modules", "valid_specs"]

TYPES = ["residual", "bottleneck", "mbconv"]


@st.composite
def valid_specs(draw: st.DrawFn) -> dict[str, Any]:
    filters = {lvl: draw(st.integers(4, 48)) for lvl in range(1, 8)}
    pool = draw(st.booleans())
    stem_levels = [2] * draw(st.integers(1, 2)) if pool else [1, 2]
    stem = [{"name": f"s{i}", "level": lvl, "type": draw(st.sampled_from(TYPES))} for i, lvl in enumerate(stem_levels)]
    names = [b["name"] for b in stem]
    blocks = []
    for i in range(draw(st.integers(0, 10))):
        inputs = draw(st.lists(st.sampled_from(names), min_size=1, max_size=3, unique=True))
        blocks.append({"name": f"n{i}", "level": draw(st.integers(1, 7)), "type": draw(st.sampled_from(TYPES)),
                       "inputs": inputs})
        names.append(f"n{i}")
    for level in draw(st.permutations(list(range(3, 8)))):
        inputs = draw(st.lists(st.sampled_from(names), min_size=1, max_size=3, unique=True))
        blocks.append({"name": f"out{level}", "level": level, "type": draw(st.sampled_from(TYPES)),
                       "inputs": inputs, "output": True})
        names.append(f"out{level}")
    variant = {
        "endpoints_num_filters": draw(st.integers(1, 64)),
        "filter_size_scale": draw(st.sampled_from([0.5, 0.65, 1.0, 1.3])),
        "resample_alpha": draw(st.sampled_from([0.5, 1.0])),
        "block_repeats": draw(st.integers(1, 2)),
        "expand_ratio": draw(st.sampled_from([1.0, 2.5, 6.0])),
        "se_ratio": draw(st.sampled_from([0.0, 0.25])),
    }
    return {
        "name": "random",
        "activation": draw(st.sampled_from(["relu", "swish"])),
        "filters": filters,
        "stem": {"conv": {"filters": draw(st.integers(4, 32)), "kernel": draw(st.sampled_from([3, 5, 7])),
                          "stride": 2, "scale_filters": draw(st.booleans())},
                 "pool": {"kernel": 3, "stride": 2} if pool else None,
                 "blocks": stem},
        "resample": {"squeeze": draw(st.booleans()),
                     "down": draw(st.sampled_from(["conv_maxpool", "depthwise", "conv"]))},
        "fusion": {"method": draw(st.sampled_from(["sum", "weighted"])),
                   "merge_unused_into_outputs": draw(st.booleans())},
        "variants": {"v": variant},
        "blocks": blocks,
    }


def imported_modules(source: str) -> set[str]:
    """The modules a Python source imports (``import a.b`` -> ``a.b``; ``from m import x`` -> ``m``)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            names.add("." * node.level + (node.module or ""))
    return names
