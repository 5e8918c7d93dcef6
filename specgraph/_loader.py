"""Reading spec files (TOML, YAML, JSON, dicts, built-in names) into validated ``Spec``s.

Errors carry the file, the line where the parser knows it, and the dotted path.
"""

from __future__ import annotations

import bisect
import difflib
import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]
from pydantic import ValidationError

from ._compose import compose, is_composition
from ._errors import ArgumentError, Problem, SpecSyntaxError, SpecValidationError
from ._schema import Spec, missing_fields
from ._search import check_space
from ._text import brief, format_path, visible
from ._writer import dumps

__all__ = ["LIMITS", "Limits", "builtin_specs", "dumps", "format_path", "load"]

_SUFFIXES = {".toml": "toml", ".yaml": "yaml", ".yml": "yaml", ".json": "json"}


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


_PART_ITEM = re.compile(r"(?:blocks|cells)\[\d+\]")


@dataclass
class PartsSource(Source):
    """A composition's source: a problem in a block or cell that a part brought in is located in that part's file
    (or, for a part written inline, in the composition under its ``decoders[i].``)."""

    # composed "blocks[12]" / "cells[1]" -> (the part's source, the prefix of its paths here, its own "blocks[3]")
    origins: dict[str, tuple[Source, str, str]] = field(default_factory=dict)

    def problem(self, path: str, message: str) -> Problem:
        item = _PART_ITEM.match(path)
        if item is None or item.group() not in self.origins:
            return super().problem(path, message)
        source, prefix, own = self.origins[item.group()]
        located = source.problem(own + path[item.end():], message)
        return replace(located, path=prefix + located.path)


# ---------------------------------------------------------------- limits


@dataclass(frozen=True)
class Limits:
    """Caps on what a spec file may hold, so hostile input fails fast with a located error.

    The largest built-in spec (SpineNet-190) is 5 KB, 4 levels deep and ~700 values."""

    file_bytes: int = 4 << 20  # 4 MiB
    depth: int = 32  # nested mappings and lists
    values: int = 200_000  # every value in the document, each YAML alias expansion counted in full
    string_chars: int = 16_384  # one string (a long description fits)
    digits: int = 400  # one run of digits; Python refuses ints of more than 4,300 digits


LIMITS = Limits()


# ---------------------------------------------------------------- locating lines


class _Lines:
    """Text offsets -> 1-based line numbers."""

    def __init__(self, text: str) -> None:
        self.starts = [0] + [m.end() for m in re.finditer("\n", text)]

    def __call__(self, offset: int) -> int:
        return bisect.bisect_right(self.starts, offset)


def _duplicate(key: str, first: int, path: str, file: str | None, line: int) -> Problem:
    return Problem(f"duplicate key {brief(key)} (first at line {first}); each key may appear once: remove or "
                   "rename one", path, file, line)


def _yaml_lines(root: yaml.Node, out: dict[str, int], problems: list[Problem], file: str | None) -> None:
    """Record the line of every path, and report duplicate keys with both lines.

    A node reached again through an alias is walked once: its lines are those of its first use."""
    seen: set[int] = set()
    stack: list[tuple[yaml.Node, tuple]] = [(root, ())]
    while stack:
        node, loc = stack.pop()
        out.setdefault(format_path(loc), node.start_mark.line + 1)
        if id(node) in seen:
            continue
        seen.add(id(node))
        if isinstance(node, yaml.MappingNode):
            first: dict[tuple, int] = {}
            for key, value in node.value:
                if not isinstance(key, yaml.ScalarNode) or key.tag == "tag:yaml.org,2002:merge":
                    continue
                line = key.start_mark.line + 1
                k: Any = key.value
                if (key.tag, k) in first:
                    problems.append(_duplicate(k, first[key.tag, k], format_path((*loc, k)), file, line))
                    continue
                first[key.tag, k] = line
                out[format_path((*loc, k))] = line
                stack.append((value, (*loc, k)))
        elif isinstance(node, yaml.SequenceNode):
            stack.extend((item, (*loc, i)) for i, item in enumerate(node.value))


_JSON_TOKEN = re.compile(r'"(?:[^"\\]|\\.)*"|[{}\[\]:,]|[^\s{}\[\]:,"]+')


def _json_lines(text: str, problems: list[Problem], file: str | None) -> dict[str, int]:
    """Path -> line for (already parsed, so valid) JSON text; duplicate keys reported with both lines."""
    line_of = _Lines(text)
    out: dict[str, int] = {}
    # One frame per open container: [path, is_object, next key or index, keys seen -> line]
    stack: list[list[Any]] = []
    expect_key = False
    for m in _JSON_TOKEN.finditer(text):
        token = m.group()
        line = line_of(m.start())
        frame = stack[-1] if stack else None
        if token in ",:":
            expect_key = token == "," and frame is not None and frame[1]
            continue
        if token in "]}":
            stack.pop()
            continue
        if frame is not None and frame[1] and expect_key:
            key = json.loads(token)
            path = format_path((*frame[0], key))
            if key in frame[3]:
                problems.append(_duplicate(key, frame[3][key], path, file, line))
            frame[3].setdefault(key, line)
            frame[2] = key
            out.setdefault(path, line)
            expect_key = False
            continue
        if frame is None:
            loc: tuple = ()
        elif frame[1]:
            loc = (*frame[0], frame[2])
        else:
            loc = (*frame[0], frame[2])
            frame[2] += 1
            out.setdefault(format_path(loc), line)
        if token in "[{":
            stack.append([loc, token == "{", 0, {}])
            expect_key = token == "{"
    return out


_TOML_HEADER = re.compile(r"^\s*(\[\[?)\s*([^\]]+?)\s*\]\]?\s*(#.*)?$")
_TOML_KEY = re.compile(r"""^\s*("[^"]*"|'[^']*'|[A-Za-z0-9_\-]+)\s*=""")


def _toml_key_parts(text: str) -> list[str]:
    parts = []
    for part in re.findall(r"""("(?:[^"\\]|\\.)*"|'[^']*'|[^.]+)""", text):
        part = part.strip()
        if part.startswith('"'):
            try:  # a basic string: its escapes (\n, \u...) are part of the key
                part = tomllib.loads(f"k = {part}")["k"]
            except tomllib.TOMLDecodeError:
                part = part.strip('"')
        parts.append(part.strip("'"))
    return parts


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
            table = parts
            out.setdefault(format_path(table), number)
            continue
        key = _TOML_KEY.match(line)
        if key:
            name = key.group(1).strip("\"'")
            sub = (*table, name)
            out.setdefault(format_path(sub), number)
            rest = stripped.split("=", 1)[1].strip() if "=" in stripped else ""
            if rest.startswith("[") and rest.count("[") > rest.count("]"):
                array, element = sub, 0
    return out


# ---------------------------------------------------------------- parsing

_YamlLoader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml where available


def _compose_yaml(text: str, file: str | None, limits: Limits) -> tuple[yaml.Node | None, Any]:
    """Compose the one YAML document from the event stream, iteratively (no recursion), with the
    depth and total-value caps enforced as it goes; an alias counts every value it repeats, so
    "billion laughs" stops at the cap. Anchors become usable at the end of their node (no cycles)."""
    loader = _YamlLoader(text)
    loader.get_event()  # stream start
    if loader.check_event(yaml.StreamEndEvent):
        return None, loader
    loader.get_event()  # document start
    anchors: dict[str, tuple[yaml.Node, int]] = {}
    stack: list[list[Any]] = []  # [node, anchor, items, values inside]
    root: yaml.Node | None = None
    total = 0

    def fail(message: str, mark: Any) -> SpecSyntaxError:
        return SpecSyntaxError(Problem(message, "", file, mark.line + 1 if mark else None))

    while root is None:
        event = loader.get_event()
        size = 1
        if isinstance(event, yaml.AliasEvent):
            if event.anchor not in anchors:
                raise yaml.composer.ComposerError(None, None, f"found undefined alias {event.anchor!r}",
                                                  event.start_mark)
            node, size = anchors[event.anchor]
        elif isinstance(event, yaml.ScalarEvent):
            if len(event.value) > limits.string_chars:
                raise fail(f"a string of {len(event.value):,} characters; the limit is {limits.string_chars:,}",
                           event.start_mark)
            tag = event.tag
            if tag is None or tag == "!":
                tag = loader.resolve(yaml.ScalarNode, event.value, event.implicit)
            node = yaml.ScalarNode(tag, event.value, event.start_mark, event.end_mark, style=event.style)
        elif isinstance(event, yaml.SequenceStartEvent | yaml.MappingStartEvent):
            if len(stack) >= limits.depth:
                raise fail(f"nested more than {limits.depth} levels deep; a spec needs at most 5", event.start_mark)
            kind = yaml.SequenceNode if isinstance(event, yaml.SequenceStartEvent) else yaml.MappingNode
            tag = event.tag
            if tag is None or tag == "!":
                tag = loader.resolve(kind, None, event.implicit)
            stack.append([kind(tag, [], event.start_mark, None, flow_style=event.flow_style), event.anchor, [], 1])
            total += 1
            continue
        else:  # sequence or mapping end
            node, anchor, items, size = stack.pop()
            node.end_mark = event.end_mark
            node.value = items if isinstance(node, yaml.SequenceNode) else list(zip(items[::2], items[1::2],
                                                                                    strict=True))
            if anchor is not None:
                anchors[anchor] = (node, size)
            total -= 1  # counted at its start
        if isinstance(event, yaml.ScalarEvent) and event.anchor is not None:
            anchors[event.anchor] = (node, 1)
        total += size
        if total > limits.values:
            raise fail(f"more than {limits.values:,} values (YAML aliases counted as often as they repeat); "
                       "a spec needs a few thousand", event.start_mark)
        if stack:
            stack[-1][2].append(node)
            stack[-1][3] += size
        else:
            root = node
    loader.get_event()  # document end
    if not loader.check_event(yaml.StreamEndEvent):
        raise fail("a spec file holds one YAML document; found a second '---'", loader.peek_event().start_mark)
    return root, loader


def _yaml_problem(exc: yaml.YAMLError, text: str, file: str | None) -> Problem:
    """A YAML error as one located line (PyYAML's own text repeats the place as '<unicode string>')."""
    if isinstance(exc, yaml.reader.ReaderError):  # a character YAML forbids: located by offset
        code = exc.character if isinstance(exc.character, int) else ord(exc.character)
        return Problem(f"invalid YAML: character U+{code:04X} is not allowed (control characters are not)", "",
                       file, _Lines(text)(exc.position))
    if isinstance(exc, yaml.MarkedYAMLError):
        mark = exc.problem_mark or exc.context_mark
        what = "; ".join(visible(str(part)) for part in (exc.context, exc.problem) if part)
        where = f" (column {mark.column + 1})" if mark is not None else ""
        return Problem(f"invalid YAML: {what}{where}", "", file, mark.line + 1 if mark is not None else None)
    return Problem(f"invalid YAML: {visible(str(exc))}", "", file)


def _scan_text(text: str, fmt: str, file: str | None, limits: Limits) -> None:
    """Caps checked on the raw text, before any parser sees it (the parsers fail on these with
    a RecursionError or a ValueError that names no line)."""
    line_of = _Lines(text)
    long = re.search(f"[0-9]{{{limits.digits + 1},}}", text)
    if long:
        raise SpecSyntaxError(Problem(f"a run of {len(long.group()):,} digits; a spec holds no number of more "
                                      f"than {limits.digits} digits", "", file, line_of(long.start())))
    if fmt == "yaml":
        return  # YAML nesting is counted on the event stream
    # Brackets outside strings and comments; a string that fools this only moves the line reported.
    depth = 0
    for m in re.finditer(r'"(?:[^"\\\n]|\\.)*"|\'[^\'\n]*\'|#[^\n]*|[\[{]|[\]}]', text):
        token = m.group()
        if token in "[{":
            depth += 1
            if depth > limits.depth:
                raise SpecSyntaxError(Problem(f"nested more than {limits.depth} levels deep; a spec needs at most 5",
                                              "", file, line_of(m.start())))
        elif token in "]}":
            depth -= 1


def _check_values(data: Any, source: Source, limits: Limits) -> None:
    """String lengths and nesting of parsed TOML / JSON (YAML is checked while it is composed)."""
    stack: list[tuple[Any, tuple]] = [(data, ())]
    while stack:
        value, loc = stack.pop()
        if len(loc) > limits.depth:
            raise SpecSyntaxError(source.problem(format_path(loc), f"nested more than {limits.depth} levels deep"))
        if isinstance(value, str) and len(value) > limits.string_chars:
            raise SpecSyntaxError(source.problem(format_path(loc), f"a string of {len(value):,} characters; the "
                                                 f"limit is {limits.string_chars:,}"))
        if isinstance(value, dict):
            for key, item in value.items():
                if isinstance(key, str) and len(key) > limits.string_chars:
                    raise SpecSyntaxError(source.problem(format_path(loc), f"a key of {len(key):,} characters"))
                stack.append((item, (*loc, key)))
        elif isinstance(value, list):
            stack.extend((item, (*loc, i)) for i, item in enumerate(value))


def _parse(text: str, fmt: str, file: str | None, limits: Limits = LIMITS) -> tuple[Any, Source]:
    source = Source(file)
    text = text.removeprefix("\ufeff")  # a UTF-8 byte-order mark is accepted in every format
    _scan_text(text, fmt, file, limits)
    problems: list[Problem] = []
    try:
        if fmt == "toml":
            data = tomllib.loads(text)
            source.lines = _toml_lines(text)
        elif fmt == "json":
            data = json.loads(text)
            source.lines = _json_lines(text, problems, file)
        else:
            node, loader = _compose_yaml(text, file, limits)
            data = loader.construct_document(node) if node is not None else None
            if node is not None:
                _yaml_lines(node, source.lines, problems, file)
    except tomllib.TOMLDecodeError as exc:
        m = re.search(r"line (\d+)", str(exc))
        raise SpecSyntaxError(Problem(f"invalid TOML: {exc}", "", file, int(m.group(1)) if m else None)) from None
    except yaml.YAMLError as exc:
        raise SpecSyntaxError(_yaml_problem(exc, text, file)) from None
    except json.JSONDecodeError as exc:
        raise SpecSyntaxError(Problem(f"invalid JSON: {exc.msg}", "", file, exc.lineno)) from None
    except (ValueError, UnicodeError) as exc:  # e.g. text with surrogates, which no parser can encode
        raise SpecSyntaxError(Problem(f"invalid {fmt.upper()}: {visible(str(exc))}", "", file)) from None
    except (RecursionError, MemoryError) as exc:  # past the scans' reach; should not happen
        raise SpecSyntaxError(Problem(f"the file is too deeply nested or too large to parse ({type(exc).__name__})",
                                      "", file)) from None
    if problems:
        raise SpecSyntaxError(problems)
    if not isinstance(data, dict):
        raise SpecSyntaxError(Problem(f"a spec is a mapping of fields, got {type(data).__name__}", "", file, 1))
    if fmt != "yaml":
        _check_values(data, source, limits)
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


def _describe(error: dict, source: Source, model: Any = None) -> Problem:
    loc = tuple(error["loc"])
    kind = error["type"]
    # Pydantic appends the validator name for tagged/after checks; drop function names.
    loc = tuple(p for p in loc if not (isinstance(p, str) and p.startswith("function-")))
    key = loc[-1:] == ("[key]",)  # the error is in a mapping's key (a variant name, a level)
    loc = loc[:-1] if key else loc
    path = format_path(loc)
    if kind == "extra_forbidden":
        parent = loc[:-1]
        allowed = _allowed_fields(parent, model)
        guess = difflib.get_close_matches(str(loc[-1]), allowed, n=1)
        hint = f"; did you mean {guess[0]!r}?" if guess else ""
        msg = f"unknown field {brief(str(loc[-1]))}{hint} (allowed: {', '.join(allowed)})"
    elif kind == "missing":
        msg = "required field is missing"
    else:
        msg = error["msg"].removeprefix("Value error, ")
        if "input" in error and kind not in ("model_type", "dict_type", "list_type"):
            value = error["input"]
            if not isinstance(value, dict | list):
                msg += f" (got {brief(value)})"
    return source.problem(path, f"the key: {msg}" if key else msg)


def _allowed_fields(loc: tuple, model: Any = None) -> list[str]:
    from . import _schema

    model = model or _schema.Spec
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


def validate_data(data: Mapping[str, Any], source: Source | None = None, *, limits: Limits = LIMITS) -> Spec:
    """Validate plain data into a ``Spec`` and check its graph; every error is a ``SpecgraphError``."""
    from ._graph import build_graph

    if source is None:  # plain data from the API: the caps files are held to apply too
        source = Source()
        _check_values(data, source, limits)
    if is_composition(data):  # a backbone and decoders: their specs joined into one
        data, source = compose(dict(data), source, _describe, limits)
    try:
        spec = Spec.model_validate(data)
    except ValidationError as exc:
        problems = [_describe(e, source) for e in exc.errors()]
        raise SpecValidationError(problems) from None
    missing = missing_fields(spec)
    if missing:
        raise SpecValidationError([source.problem(format_path(loc), f"required field is missing: {why}")
                                   for loc, why in missing])
    spec._source = source
    build_graph(spec)  # semantic checks: references, cycles, levels, outputs
    space = check_space(spec)  # a search space's names and fields
    if space:
        raise SpecValidationError([source.problem(p.path, p.message) for p in space])
    return spec


def _read_file(path: Path, limits: Limits) -> str:
    """The file's text: at most ``limits.file_bytes`` bytes of UTF-8 (a leading BOM is dropped later)."""
    try:
        with path.open("rb") as f:
            data = f.read(limits.file_bytes + 1)
    except OSError as exc:
        raise SpecSyntaxError(Problem(f"cannot read: {exc.strerror or exc}", "", str(path))) from None
    if len(data) > limits.file_bytes:
        raise SpecSyntaxError(Problem(f"larger than {limits.file_bytes >> 20} MiB; a spec file is a few KB",
                                      "", str(path)))
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise SpecSyntaxError(Problem(f"not UTF-8 (byte 0x{data[exc.start]:02x} at offset {exc.start}); save the "
                                      "file as UTF-8", "", str(path), line)) from None


def _is_file(path: Path) -> bool:
    """A file to read: regular, or a pipe (``<(cat spec.yaml)``); not a directory."""
    try:
        return path.exists() and not path.is_dir()
    except (OSError, ValueError):  # a name too long, or with a NUL byte
        return False


def load(source: str | os.PathLike[str] | Mapping[str, Any], *, limits: Limits = LIMITS) -> Spec:
    """Load and validate a spec.

    ``source`` is a file path (``.toml``, ``.yaml``/``.yml``, ``.json``), the name of a
    built-in spec (``"spinenet"``, ``"spinenet_mobile"``, see ``builtin_specs()``),
    spec text, or an already-parsed mapping. Files are UTF-8 (a byte-order mark is
    accepted) and held to ``limits`` (size, nesting, values, string length, digits).
    """
    if isinstance(source, Mapping):
        return validate_data(source, limits=limits)
    if not isinstance(source, str | os.PathLike):
        raise ArgumentError(f"load(source): expected a spec file path, a built-in spec name, spec text or a "
                            f"mapping; got {type(source).__name__}")
    if isinstance(source, str) and ("\n" in source or source.lstrip().startswith("{")):
        if len(source) > limits.file_bytes:
            raise SpecSyntaxError(f"spec text of {len(source):,} characters; the limit is {limits.file_bytes:,}")
        data, src = _parse(source, _guess_format(source), None, limits)
        return validate_data(data, src, limits=limits)
    path = Path(source)
    if not _is_file(path):
        builtins = _builtin_files()
        if isinstance(source, str) and source in builtins:
            path = builtins[source]
        else:
            known = ", ".join(builtins) or "none"
            raise SpecSyntaxError(Problem(f"no spec file {brief(str(source), 200)} and no built-in spec of that "
                                          f"name (built-in: {known})"))
    fmt = _SUFFIXES.get(path.suffix.lower())
    if fmt is None:
        raise SpecSyntaxError(Problem("unknown spec file type; use .toml, .yaml, .yml or .json", "", str(path)))
    data, src = _parse(_read_file(path, limits), fmt, str(path), limits)
    return validate_data(data, src, limits=limits)
