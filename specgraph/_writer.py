"""Writing specs as TOML, YAML or JSON text; plain data in, text out.

Kept apart from the loader so the spec class can write itself without importing its own reader.
"""

from __future__ import annotations

import json
import re
from typing import Any, Protocol

import yaml

from ._errors import ArgumentError
from ._text import brief

__all__ = ["dumps"]


class _Dumpable(Protocol):
    def to_dict(self) -> dict: ...


def dumps(spec: _Dumpable, fmt: str = "yaml") -> str:
    """``spec`` (anything with ``to_dict()``, e.g. a :class:`specgraph.Spec`) as YAML, TOML or JSON text."""
    data = _prune_none(spec.to_dict())
    if fmt == "yaml":
        return yaml.safe_dump(data, sort_keys=False)
    if fmt == "json":
        return json.dumps(data, indent=2)
    if fmt == "toml":
        return _toml_dump(data)
    raise ArgumentError(f"fmt: unknown format {brief(fmt)}; use yaml, toml or json")


def _prune_none(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _prune_none(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_prune_none(v) for v in value]
    return value


def _toml_key(key: Any) -> str:
    key = str(key)
    return key if re.fullmatch(r"[A-Za-z0-9_-]+", key) else json.dumps(key)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{_toml_key(k)} = {_toml_value(v)}" for k, v in value.items()) + " }"
    raise TypeError(f"cannot write {type(value).__name__} as TOML")


def _toml_dump(data: dict, prefix: tuple = ()) -> str:
    def is_table(v: Any) -> bool:
        return isinstance(v, dict)

    def is_table_array(v: Any) -> bool:
        return isinstance(v, list) and bool(v) and all(isinstance(i, dict) for i in v)

    lines = [f"{_toml_key(k)} = {_toml_value(v)}" for k, v in data.items() if not (is_table(v) or is_table_array(v))]
    for k, v in data.items():
        path = (*prefix, k)
        dotted = ".".join(_toml_key(p) for p in path)
        if is_table(v):
            lines += ["", f"[{dotted}]", _toml_dump(v, path)]
        elif is_table_array(v):
            for item in v:
                lines += ["", f"[[{dotted}]]", _toml_dump(item, path)]
    return "\n".join(line for line in lines if line is not None).strip("\n") + ("\n" if not prefix else "")
