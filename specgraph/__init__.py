"""specgraph: declarative neural-architecture specs -> validated DAG -> scale plan -> models.

The core never imports a deep-learning framework; backends are plugins found through
the ``specgraph.backends`` entry-point group.
"""

from ._backends import available_backends, compile, get_backend
from ._errors import (
    ArgumentError,
    BackendError,
    GraphError,
    PlanError,
    Problem,
    ResourceError,
    SpecgraphError,
    SpecSyntaxError,
    SpecValidationError,
    WeightsError,
)
from ._graph import SpecGraph, build_graph
from ._loader import builtin_specs, load
from ._modelgarden import from_modelgarden_tuples
from ._plan import Conv, Edge, MaxPool, Node, Plan, Unit, Upsample
from ._planner import plan
from ._render import render_dot, render_mermaid, render_svg
from ._schema import Spec
from ._stats import NodeStats, Stats, stats

__version__ = "0.1.0"

__all__ = [
    "ArgumentError",
    "BackendError",
    "Conv",
    "Edge",
    "GraphError",
    "MaxPool",
    "Node",
    "NodeStats",
    "Plan",
    "PlanError",
    "Problem",
    "ResourceError",
    "Spec",
    "SpecGraph",
    "SpecSyntaxError",
    "SpecValidationError",
    "SpecgraphError",
    "Stats",
    "Unit",
    "Upsample",
    "WeightsError",
    "__version__",
    "available_backends",
    "build_graph",
    "builtin_specs",
    "compile",
    "from_modelgarden_tuples",
    "get_backend",
    "load",
    "plan",
    "render_dot",
    "render_mermaid",
    "render_svg",
    "stats",
]
