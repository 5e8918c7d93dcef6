"""specgraph-torch: the PyTorch backend of specgraph (entry point ``torch`` in ``specgraph.backends``).

``specgraph.compile(plan, backend="torch", **options)`` calls :func:`compile` here.
"""

from ._model import OPTIONS, FeatureInfo, ShapeSpec, SpecgraphNet, compile
from ._weights import WeightsError, load_modelgarden_weights, modelgarden_kwargs, modelgarden_names

__version__ = "0.1.0"

__all__ = [
    "OPTIONS",
    "FeatureInfo",
    "ShapeSpec",
    "SpecgraphNet",
    "WeightsError",
    "__version__",
    "compile",
    "load_modelgarden_weights",
    "modelgarden_kwargs",
    "modelgarden_names",
]
