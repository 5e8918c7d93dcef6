"""specgraph: declarative neural-architecture specs -> validated DAG -> scale plan -> models.

The core never imports a deep-learning framework; backends are plugins found through
the ``specgraph.backends`` entry-point group.
"""

from typing import TYPE_CHECKING, Any

from ._errors import (
    ArgumentError,
    BackendError,
    BackendUnavailableError,
    CodegenError,
    GraphError,
    PlanError,
    Problem,
    ResourceError,
    SearchError,
    SpecgraphError,
    SpecSyntaxError,
    SpecValidationError,
    WeightsError,
)

# The rest is imported on first use (pydantic, networkx and jinja2 take most of a second), so
# the command line starts fast and handles Ctrl-C from its first moment.
_LAZY = {
    "available_backends": "_backends", "compile": "_backends", "get_backend": "_backends",
    "Diff": "_diff", "diff": "_diff",
    "Feature": "_features", "FeatureInfo": "_features",
    "SpecGraph": "_graph", "build_graph": "_graph",
    "LIMITS": "_loader", "Limits": "_loader", "builtin_specs": "_loader", "load": "_loader",
    "from_modelgarden_tuples": "_modelgarden",
    "Activation": "_plan", "Add": "_plan", "Conv": "_plan", "Edge": "_plan", "MaxPool": "_plan", "Node": "_plan",
    "Norm": "_plan", "Op": "_plan", "Plan": "_plan", "SeparableConv": "_plan", "SqueezeExcite": "_plan",
    "Unit": "_plan", "UnitOp": "_plan", "Upsample": "_plan",
    "plan": "_planner",
    "render_dot": "_render", "render_mermaid": "_render", "render_svg": "_render",
    "Search": "_schema", "Spec": "_schema",
    "Mutation": "_search", "default_space": "_search", "mutate": "_search", "sample": "_search",
    "NodeStats": "_stats", "Stats": "_stats", "stats": "_stats",
    "Budget": "_study", "search": "_study",
    "LoadReport": "_weights",
}

if TYPE_CHECKING:
    from ._backends import available_backends, compile, get_backend
    from ._diff import Diff, diff
    from ._features import Feature, FeatureInfo
    from ._graph import SpecGraph, build_graph
    from ._loader import LIMITS, Limits, builtin_specs, load
    from ._modelgarden import from_modelgarden_tuples
    from ._plan import (
        Activation,
        Add,
        Conv,
        Edge,
        MaxPool,
        Node,
        Norm,
        Op,
        Plan,
        SeparableConv,
        SqueezeExcite,
        Unit,
        UnitOp,
        Upsample,
    )
    from ._planner import plan
    from ._render import render_dot, render_mermaid, render_svg
    from ._schema import Search, Spec
    from ._search import Mutation, default_space, mutate, sample
    from ._stats import NodeStats, Stats, stats
    from ._study import Budget, search
    from ._weights import LoadReport


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'specgraph' has no attribute {name!r}")
    from importlib import import_module

    value = getattr(import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("specgraph")
    except PackageNotFoundError:  # a source tree that is not installed
        return "0+unknown"


__version__ = _version()  # pyproject.toml is the one place the version is written

__all__ = [
    "ArgumentError",
    "BackendError",
    "BackendUnavailableError",
    "Budget",
    "CodegenError",
    "Activation",
    "Add",
    "Conv",
    "Diff",
    "Edge",
    "Feature",
    "FeatureInfo",
    "GraphError",
    "LIMITS",
    "Limits",
    "LoadReport",
    "MaxPool",
    "Mutation",
    "Node",
    "NodeStats",
    "Norm",
    "Op",
    "Plan",
    "PlanError",
    "Problem",
    "ResourceError",
    "Search",
    "SearchError",
    "SeparableConv",
    "Spec",
    "SpecGraph",
    "SpecSyntaxError",
    "SpecValidationError",
    "SpecgraphError",
    "Stats",
    "SqueezeExcite",
    "Unit",
    "UnitOp",
    "Upsample",
    "WeightsError",
    "__version__",
    "available_backends",
    "build_graph",
    "builtin_specs",
    "compile",
    "default_space",
    "diff",
    "from_modelgarden_tuples",
    "get_backend",
    "load",
    "mutate",
    "plan",
    "render_dot",
    "render_mermaid",
    "render_svg",
    "sample",
    "search",
    "stats",
]
