"""Reading spec files (TOML, YAML, JSON, dicts, built-in names) into validated ``Spec``s.

Errors carry the file, the line where the parser knows it, and the dotted path.
"""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]
from pydantic import ValidationError

from ._errors import Problem, SpecSyntaxError, SpecValidationError
from ._schema import Spec

__all__ = ["builtin_specs", "dumps", "format_path", "load"]

_SUFFIXES = {".toml": "toml", ".yaml": "yaml", ".yml": "yaml", ".json": "json"}


def format_path(loc: tuple | list) -> str:
    """``('blocks', 7, 'inputs', 1)`` -> ``blocks[7].inputs[1]``."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            part = str(part)
            if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", part):
                part = json.dumps(part)
            out += f".{part}" if out else part
    return out


@dataclass
class Source:
    """Where a spec came from, and a dotted-path -> line map for error messages."""

    file: str | None = None
    lines: dict[str, int] = field(default_factory=dict)

    def line_of(self, path: str) -> int | None:
        while path:
            if path in self.lines:
                return self.lines[path]
            cut = max(path.rfind("."), path.rfind("["))
            path = path[:cut] if cut > 0 else ""
        return None

    def problem(self, path: str, message: str) -> Problem:
        return Problem(message, path, self.file, self.line_of(path))


# ---------------------------------------------------------------- locating lines


def _yaml_lines(node: yaml.Node, loc: tuple, out: dict[str, int]) -> None:
    out.setdefault(format_path(loc), node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            k = key.value
            if isinstance(key, yaml.ScalarNode) and re.fullmatch(r"-?\d+", k):
                k = int(k) if loc and loc[-1] == "filters" else k
            sub = (*loc, k)
            out[format_path(sub)] = key.start_mark.line + 1
            _yaml_lines(value, sub, out)
            out[format_path(sub)] = key.start_mark.line + 1
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _yaml_lines(item, (*loc, i), out)


_TOML_HEADER = re.compile(r"^\s*(\[\[?)\s*([^\]]+?)\s*\]\]?\s*(#.*)?$")
_TOML_KEY = re.compile(r"""^\s*("[^"]*"|'[^']*'|[A-Za-z0-9_\-]+)\s*=""")


def _toml_key_parts(text: str) -> list[str]:
    return [p.strip().strip("\"'") for p in re.findall(r"""("[^"]*"|'[^']*'|[^.]+)""", text)]


def _toml_lines(text: str) -> dict[str, int]:
    """Best-effort map of dotted paths to lines: tables, arrays of tables, keys, and the
    elements of multi-line arrays (one inline table or value per line)."""
    out: dict[str, int] = {}
    counts: dict[tuple, int] = {}
    table: tuple = ()
    array: tuple | None = None  # the key path of the multi-line array we are inside
    element = 0
    for number, line in enumerate(text.splitlines(), start=1):
        stripped = line.split("#", 1)[0].strip() if not line.lstrip().startswith(("{", "\"")) else line.strip()
        if array is not None:
            if stripped.startswith("]"):
                array = None
            elif stripped:
                path = (*array, element)
                out.setdefault(format_path(path), number)
                for key in re.findall(r"([A-Za-z_][A-Za-z0-9_-]*)\s*=", stripped):
                    out.setdefault(format_path((*path, key)), number)
                element += 1
            continue
        header = _TOML_HEADER.match(line)
        if header:
            parts = tuple(_toml_key_parts(header.group(2)))
            if header.group(1) == "[[":
                index = counts.get(parts, 0)
                counts[parts] = index + 1
                parts = (*parts, index)
            table = tuple(int(p) if isinstance(p, str) and p.isdigit() and parts[:1] == ("filters",) else p
                          for p in parts)
            out.setdefault(format_path(table), number)
            continue
        key = _TOML_KEY.match(line)
        if key:
            name = key.group(1).strip("\"'")
            sub = (*table, int(name) if table == ("filters",) and name.isdigit() else name)
            out.setdefault(format_path(sub), number)
            rest = stripped.split("=", 1)[1].strip() if "=" in stripped else ""
            if rest.startswith("[") and rest.count("[") > rest.count("]"):
                array, element = sub, 0
    return out


# ---------------------------------------------------------------- parsing


def _parse(text: str, fmt: str, file: str | None) -> tuple[Any, Source]:
    source = Source(file)
    try:
        if fmt == "toml":
            data = tomllib.loads(text)
            source.lines = _toml_lines(text)
        elif fmt == "json":
            data = json.loads(text)
        else:
            node = yaml.compose(text, Loader=yaml.SafeLoader)
            data = yaml.safe_load(text)
            if node is not None:
                _yaml_lines(node, (), source.lines)
    except tomllib.TOMLDecodeError as exc:
        m = re.search(r"line (\d+)", str(exc))
        raise SpecSyntaxError(Problem(f"invalid TOML: {exc}", "", file, int(m.group(1)) if m else None)) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        raise SpecSyntaxError(
            Problem(f"invalid YAML: {exc}".replace("\n", " "), "", file, mark.line + 1 if mark else None)
        ) from None
    except json.JSONDecodeError as exc:
        raise SpecSyntaxError(Problem(f"invalid JSON: {exc.msg}", "", file, exc.lineno)) from None
    if not isinstance(data, dict):
        raise SpecSyntaxError(Problem(f"a spec is a mapping of fields, got {type(data).__name__}", "", file, 1))
    return data, source


def _guess_format(text: str) -> str:
    if text.lstrip().startswith("{"):
        return "json"
    if re.search(r"^\s*\[{1,2}[^\]\n]+\]{1,2}\s*$", text, re.M) or re.search(r"^\s*[\w\"'.-]+\s*=", text, re.M):
        return "toml"
    return "yaml"


def _builtin_dir() -> Path | None:
    try:  # installed wheel: the spec library is packaged as specgraph/specs
        packaged = resources.files("specgraph") / "specs"
        if packaged.is_dir():
            return Path(str(packaged))
    except (ModuleNotFoundError, TypeError):
        pass
    checkout = Path(__file__).resolve().parent.parent / "specs"  # source checkout / editable install
    return checkout if checkout.is_dir() else None


def _builtin_files() -> dict[str, Path]:
    folder = _builtin_dir()
    if folder is None:
        return {}
    return {p.stem: p for p in sorted(folder.iterdir()) if p.suffix in _SUFFIXES}


def builtin_specs() -> list[str]:
    """Names of the specs shipped with specgraph (``load(name)`` reads them)."""
    return list(_builtin_files())


# ---------------------------------------------------------------- validation


def _describe(error: dict, source: Source) -> Problem:
    loc = tuple(error["loc"])
    kind = error["type"]
    # Pydantic appends the validator name for tagged/after checks; drop function names.
    loc = tuple(p for p in loc if not (isinstance(p, str) and p.startswith("function-")))
    path = format_path(loc)
    if kind == "extra_forbidden":
        parent = loc[:-1]
        allowed = _allowed_fields(parent)
        guess = difflib.get_close_matches(str(loc[-1]), allowed, n=1)
        hint = f"; did you mean {guess[0]!r}?" if guess else ""
        msg = f"unknown field {str(loc[-1])!r}{hint} (allowed: {', '.join(allowed)})"
    elif kind == "missing":
        msg = "required field is missing"
    else:
        msg = error["msg"].removeprefix("Value error, ")
        if "input" in error and kind not in ("model_type", "dict_type", "list_type"):
            value = error["input"]
            if not isinstance(value, dict | list):
                msg += f" (got {value!r})"
    return source.problem(path, msg)


def _allowed_fields(loc: tuple) -> list[str]:
    from . import _schema

    model: Any = _schema.Spec
    for part in loc:
        if isinstance(part, int) or model is None:
            continue
        info = model.model_fields.get(part)
        if info is None:
            return []
        model = _inner_model(info.annotation)
    return list(model.model_fields) if model is not None else []


def _inner_model(annotation: Any) -> Any:
    from typing import get_args

    from pydantic import BaseModel

    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in get_args(annotation):
        found = _inner_model(arg)
        if found is not None:
            return found
    return None


def validate_data(data: Mapping[str, Any], source: Source | None = None) -> Spec:
    """Validate plain data into a ``Spec`` and check its graph; every error is a ``SpecgraphError``."""
    from ._graph import build_graph

    source = source or Source()
    try:
        spec = Spec.model_validate(data)
    except ValidationError as exc:
        problems = [_describe(e, source) for e in exc.errors()]
        raise SpecValidationError(problems) from None
    spec._source = source
    build_graph(spec)  # semantic checks: references, cycles, levels, outputs
    return spec


def load(source: str | Path | Mapping[str, Any]) -> Spec:
    """Load and validate a spec.

    ``source`` is a file path (``.toml``, ``.yaml``/``.yml``, ``.json``), the name of a
    built-in spec (``"spinenet"``, ``"spinenet_mobile"``, see ``builtin_specs()``),
    spec text, or an already-parsed mapping.
    """
    if isinstance(source, Mapping):
        return validate_data(source)
    if isinstance(source, Path) or "\n" not in source:
        path = Path(source)
        if not path.is_file():
            builtins = _builtin_files()
            if not isinstance(source, Path) and source in builtins:
                path = builtins[source]
            else:
                known = ", ".join(builtins) or "none"
                raise SpecSyntaxError(
                    Problem(f"no spec file {str(source)!r} and no built-in spec of that name (built-in: {known})")
                )
        fmt = _SUFFIXES.get(path.suffix.lower())
        if fmt is None:
            raise SpecSyntaxError(Problem("unknown spec file type; use .toml, .yaml, .yml or .json", "", str(path)))
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise SpecSyntaxError(Problem(f"cannot read: {exc}", "", str(path))) from None
        data, src = _parse(text, fmt, str(path))
        return validate_data(data, src)
    data, src = _parse(source, _guess_format(source), None)
    return validate_data(data, src)


# ---------------------------------------------------------------- writing


def dumps(spec: Spec, fmt: str = "yaml") -> str:
    data = _prune_none(spec.to_dict())
    if fmt == "yaml":
        return yaml.safe_dump(data, sort_keys=False)
    if fmt == "json":
        return json.dumps(data, indent=2)
    if fmt == "toml":
        return _toml_dump(data)
    raise ValueError(f"unknown format {fmt!r}; use yaml, toml or json")


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
