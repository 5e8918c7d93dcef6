"""Shared machinery for emitting standalone model source: safe identifiers, jinja2 with
``StrictUndefined``, a syntax check, and all-or-nothing writes.

Plan text reaches emitted code in three ways only: identifiers from :class:`Namespace`,
string literals through the ``pystr`` filter, and docstring or comment text through the
``doc`` filter. A ``Plan`` can be built or deserialised without the schema, so none of them
assumes its names were checked.

Each backend plugin owns its template (it mirrors the backend's module layout, so the
emitted state dict equals the compiled model's) and exposes ``emit(plan, header) -> str``.
"""

from __future__ import annotations

import ast
import builtins
import inspect
import keyword
import re
import textwrap
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import jinja2

from ._activations import FORMULAS, canonical_activation
from ._errors import BackendError, CodegenError
from ._plan import Plan
from ._text import visible

__all__ = ["ACTIVATION_FUNCTIONS", "CodegenError", "Namespace", "activation_sources", "emit", "header",
           "kernel_sources", "render_template"]


# The names a backend gives its activation functions (``act_relu`` ...); emitted modules reserve them.
ACTIVATION_FUNCTIONS = frozenset(f"act_{name}" for name in FORMULAS)


def activation_sources(kernels: Mapping[str, Callable[..., Any]], activation: str) -> dict[str, str]:
    """Template values for a model using ``activation``: the source of the backend's own functions
    for it and for the squeeze-excitation gate (``act_hard_sigmoid``), copied by ``inspect``, and
    the name to call. Generated code thus runs the backend's formulas, never a hand copy."""
    kind = canonical_activation(activation)
    return {"activation_source": kernel_sources(kernels, [kind, "hard_sigmoid"]), "activation_function": f"act_{kind}"}


def kernel_sources(kernels: Mapping[str, Callable[..., Any]], names: Iterable[str]) -> str:
    """The source of ``kernels[name]`` for each name (once each, in order), copied by ``inspect``."""
    return "\n\n\n".join(textwrap.dedent(inspect.getsource(kernels[name])).rstrip() for name in dict.fromkeys(names))


_RESERVED = frozenset(keyword.kwlist) | frozenset(keyword.softkwlist) | frozenset(dir(builtins))


class Namespace:
    """One namespace of Python identifiers per emitted file.

    ``add(name)`` returns a valid, unique identifier for a spec name: characters outside
    ``[A-Za-z0-9_]`` become ``_``, a leading digit gets a prefix, keywords, builtins and
    ``reserved`` names get a trailing ``_``, and collisions a numeric suffix. ``origin``
    maps every identifier back to the spec name it came from.
    """

    def __init__(self, reserved: Iterable[str] = (), prefix: str = "") -> None:
        self._taken: set[str] = set(_RESERVED) | set(reserved)
        self._by_name: dict[str, str] = {}
        self.origin: dict[str, str] = {}
        self._prefix = prefix

    def add(self, name: str) -> str:
        if name in self._by_name:
            return self._by_name[name]
        base = self._prefix + re.sub(r"\W|^(?=\d)", "_", name, flags=re.ASCII)
        base = re.sub(r"__+", "_", base) if base.strip("_") else "node"
        if not base.isidentifier():
            base = f"n_{base}"
        ident = f"{base}_" if base in self._taken else base  # keywords, builtins: `class` -> `class_`
        k = 1
        while ident in self._taken:
            k += 1
            ident = f"{base}_{k}"
        self._taken.add(ident)
        self._by_name[name] = ident
        self.origin[ident] = name
        return ident

    def __getitem__(self, name: str) -> str:
        return self._by_name[name]


def header(plan: Plan) -> dict[str, str]:
    """What every emitted file records about its origin, as display text (:func:`visible`: one line,
    nothing hidden); a template still puts it in through ``doc`` or ``pystr``."""
    from . import __version__

    fields = {"spec": plan.spec_name, "variant": plan.variant, "plan_hash": plan.hash,
              "specgraph_version": __version__,
              "input_size": f"{plan.input_size[0]}x{plan.input_size[1]}",
              "levels": f"{plan.min_level}..{plan.max_level}"}
    return {key: visible(str(value)) for key, value in fields.items()}


def render_template(loader: jinja2.BaseLoader, name: str, context: Mapping[str, Any]) -> str:
    """Render ``name`` with ``StrictUndefined`` and check the result parses as Python."""
    env = jinja2.Environment(loader=loader, undefined=jinja2.StrictUndefined, keep_trailing_newline=True,
                             trim_blocks=True, lstrip_blocks=True, autoescape=False)
    # Spec text enters code only as Python string literals... repr() keeps the value exact (node names
    # are state-dict keys) and escapes every character visible() would, so the literal is one visible line.
    env.filters["pystr"] = repr
    env.filters["doc"] = _docstring_text  # ...or made visible and escaped inside docstrings and comments
    try:
        text = env.get_template(name).render(**context)
    except jinja2.TemplateError as exc:
        raise CodegenError(f"template {name}: {exc}") from exc
    try:
        ast.parse(text)
    except SyntaxError as exc:
        raise CodegenError(f"template {name} produced invalid Python at line {exc.lineno}: {exc.msg}") from exc
    return text


def _docstring_text(value: object) -> str:
    """Text safe inside a (non-raw) triple-quoted docstring or a ``#`` comment: one line (:func:`visible`:
    no line break of any kind), backslashes doubled (no escape sequence such as ``\\N{...}``, no line
    continuation; the docstring reads back as the visible text) and double quotes escaped (no ``\"\"\"``)."""
    return visible(str(value)).replace("\\", "\\\\").replace('"', '\\"')


def emit(plan: Plan, backend: str = "torch") -> str:
    """Standalone source of ``plan`` for ``backend`` (the backend plugin's ``emit``)."""
    from ._backends import get_backend

    plugin = get_backend(backend)
    if not callable(getattr(plugin, "emit", None)):
        raise BackendError(f"backend {backend!r} cannot emit source (it has no emit(plan, header))")
    return plugin.emit(plan, header(plan))
