"""Shared fixtures for the core tests."""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

# torchvision 0.29 segfaults when it is imported after tensorflow 2.20 in one process;
# imported first, both work. The suite collects TF tests before torchvision's.
with contextlib.suppress(ImportError):
    import torchvision  # noqa: F401


def mini_spec() -> dict[str, Any]:
    """A small valid spec: one stem block, five climbing blocks, five outputs at levels 3..7."""
    blocks = [
        {"name": "b1", "level": 3, "type": "bottleneck", "inputs": ["s1"]},
        {"name": "b2", "level": 4, "type": "residual", "inputs": ["s1", "b1"]},
        {"name": "b3", "level": 5, "type": "residual", "inputs": ["b1", "b2"]},
        {"name": "b4", "level": 6, "type": "residual", "inputs": ["b2", "b3"]},
        {"name": "b5", "level": 7, "type": "residual", "inputs": ["b3", "b4"]},
        {"name": "o3", "level": 3, "type": "bottleneck", "inputs": ["b1", "b5"], "output": True},
        {"name": "o4", "level": 4, "type": "bottleneck", "inputs": ["b2", "o3"], "output": True},
        {"name": "o5", "level": 5, "type": "bottleneck", "inputs": ["b3", "o4"], "output": True},
        {"name": "o6", "level": 6, "type": "bottleneck", "inputs": ["b4", "o5"], "output": True},
        {"name": "o7", "level": 7, "type": "bottleneck", "inputs": ["b5", "o6"], "output": True},
    ]
    return {
        "name": "mini",
        "activation": "relu",
        "filters": {2: 16, 3: 16, 4: 32, 5: 32, 6: 32, 7: 32},
        "stem": {
            "conv": {"filters": 16, "kernel": 3, "stride": 2},
            "pool": {"kernel": 3, "stride": 2},
            "blocks": [{"name": "s1", "level": 2, "type": "bottleneck"}],
        },
        "endpoints": {"min_level": 3, "max_level": 7},
        "variants": {"A": {"endpoints_num_filters": 16}},
        "blocks": blocks,
    }


@pytest.fixture
def mini() -> Callable[[], dict[str, Any]]:
    """A factory of fresh copies of the mini spec (tests mutate them)."""
    return lambda: copy.deepcopy(mini_spec())


SPECS = Path(__file__).parents[1] / "specs"


def _assert_bad_edit_is_located(tmp_path: Path, spec: str, edit: Callable[[str], str], path: str, words: str,
                               variant: str, size: tuple[int, int], *, backbone: str | None = None) -> None:
    """Edit the built-in spec file ``spec`` with ``edit``, plan it (a decoder: composed on ``backbone``) and check
    a ``SpecgraphError`` names ``path`` in that file, at a line, with ``words`` in its message."""
    import specgraph

    text = (SPECS / f"{spec}.toml").read_text(encoding="utf-8")
    bad = edit(text)
    assert bad != text
    file = tmp_path / f"{spec}.toml"
    file.write_text(bad, encoding="utf-8")
    planned = file
    if backbone is not None:
        planned = tmp_path / "composed.toml"
        planned.write_text(f'name = "composed"\nbackbone = "{backbone}"\ndecoders = ["{spec}.toml"]\n\n'
                           f'[variants.v]\nuse = {{ {spec} = "{variant}" }}\n', encoding="utf-8")
        variant = "v"
    with pytest.raises(specgraph.SpecgraphError) as info:
        specgraph.plan(specgraph.load(planned), variant, size)
    problems = info.value.problems
    assert any(p.path == path and words in p.message for p in problems), [str(p) for p in problems]
    assert all(p.file == str(file) and p.line for p in problems if p.path == path), [str(p) for p in problems]


@pytest.fixture
def assert_bad_edit_is_located() -> Callable[..., None]:
    """The check of a located error after a bad edit of a built-in spec (see ``_assert_bad_edit_is_located``)."""
    return _assert_bad_edit_is_located
