"""specgraph's TensorFlow backend: a ``specgraph.Plan`` -> ``tf_keras`` functional model.

``specgraph.compile(plan_or_spec, backend="tensorflow", **options)`` calls :func:`compile`.
"""

from ._model import OPTIONS, SpecgraphModel, compile
from .weights import WeightMismatchError, export_npz, load_weights, weights_dict

__version__ = "0.1.0"

__all__ = [
    "OPTIONS",
    "SpecgraphModel",
    "WeightMismatchError",
    "__version__",
    "compile",
    "export_npz",
    "load_weights",
    "weights_dict",
]
