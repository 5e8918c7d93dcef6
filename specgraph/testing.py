"""Test helpers for this project's tests and for backend authors'.

``valid_specs()`` draws random valid spec dicts (every block type, resampling policy,
fusion method and the merge rule); ``specgraph.load`` accepts them as they are.
``imported_modules(source)`` lists what an emitted standalone model file imports.
The weights kit (``WEIGHT_CORRUPTIONS``, ``corrupt_weights``, ``unreadable_npz``,
``assert_weights_refused``) is what every backend's loader must refuse, the same cases
for each backend. Needs ``hypothesis`` (and numpy for the weights kit).
"""

from __future__ import annotations

import ast
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hypothesis import strategies as st

__all__ = ["TYPES", "UNREADABLE_NPZ", "WEIGHT_CORRUPTIONS", "WEIGHT_ROUTES", "assert_weights_refused",
           "corrupt_weights", "imported_modules", "unreadable_npz", "valid_specs"]

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


# ---------------------------------------------------------------- the weights kit


def _last(a: Any, value: float) -> Any:
    import numpy as np

    return np.where(np.arange(a.size).reshape(a.shape) == a.size - 1, value, a)


# kind -> how one array is replaced (None: its name is dropped from the source).
WEIGHT_CORRUPTIONS: dict[str, Callable[[Any], Any] | None] = {
    "object": lambda a: a.astype(object),
    "str": lambda a: a.astype(str),
    "bool": lambda a: a.astype(bool),
    "complex": lambda a: a.astype("complex64"),
    "nan": lambda a: _last(a, float("nan")),
    "inf": lambda a: a * 0 + float("inf"),
    "-inf": lambda a: _last(a, float("-inf")),
    "none": lambda a: None,
    "ragged": lambda a: [[1.0], [1.0, 2.0]],
    "shape": lambda a: a.reshape(-1)[:-1] if a.size > 1 else a.reshape(1, 1),
    "missing": None,
}
# (route, kind): a mapping may hold anything; an .npz only arrays (np.savez cannot store a ragged list).
WEIGHT_ROUTES = [(route, kind) for route in ("mapping", "npz") for kind in WEIGHT_CORRUPTIONS
                 if not (route == "npz" and kind == "ragged")]
UNREADABLE_NPZ = ("missing", "directory", "not-a-zip", "truncated")


def corrupt_weights(arrays: dict[str, Any], kind: str, name: str) -> dict[str, Any]:
    """A copy of ``arrays`` with ``name`` corrupted as ``kind`` (a key of ``WEIGHT_CORRUPTIONS``)."""
    import numpy as np

    arrays = dict(arrays)
    change = WEIGHT_CORRUPTIONS[kind]
    if change is None:
        del arrays[name]
    else:
        arrays[name] = change(np.asarray(arrays[name]))
    return arrays


def unreadable_npz(folder: Path, kind: str) -> str:
    """An .npz path in ``folder`` that cannot be read: ``missing``, a ``directory``, ``not-a-zip``, ``truncated``."""
    import numpy as np

    path = Path(folder) / f"{kind}.npz"
    if kind == "directory":
        path.mkdir()
    elif kind == "not-a-zip":
        path.write_text("these are not weights")
    elif kind == "truncated":
        np.savez(path, **{f"w{i}": np.ones((8, 8), np.float32) for i in range(4)})
        path.write_bytes(path.read_bytes()[:-200])
    return str(path)


def assert_weights_refused(err: BaseException, path: str | None = None, file: str | None = None) -> None:
    """One ``WeightsError`` whose problems are all located ``Problem``\\ s; ``path`` / ``file`` among them."""
    import specgraph

    assert isinstance(err, specgraph.WeightsError), type(err)
    assert err.problems
    for p in err.problems:
        assert isinstance(p, specgraph.Problem)
        assert p.message and (p.path or p.file), p
    if path is not None:
        # Model Garden variable names lose Keras's ':0', except an .npz member that cannot be read.
        assert {path, path.removesuffix(":0")} & {p.path for p in err.problems}, str(err)
    if file is not None:
        assert all(p.file == file for p in err.problems), str(err)
