"""specgraph's TensorFlow backend: a ``specgraph.Plan`` -> ``tf_keras`` functional model.

``specgraph.compile(plan_or_spec, backend="tensorflow", **options)`` calls :func:`compile`.
"""

from ._emit import emit
from ._layers import ACTIVATION_KERNELS, activation_kernel
from ._model import OPTIONS, SpecgraphModel, build, compile, xla_function
from .deploy import TFLiteModel, export_saved_model, serving_function, to_tflite
from .weights import WeightMismatchError, WeightsError, export_npz, load_weights, weights_dict

__version__ = "0.1.0"

__all__ = [
    "ACTIVATION_KERNELS",
    "OPTIONS",
    "SpecgraphModel",
    "TFLiteModel",
    "WeightMismatchError",
    "WeightsError",
    "__version__",
    "activation_kernel",
    "build",
    "compile",
    "emit",
    "export_npz",
    "export_saved_model",
    "load_weights",
    "serving_function",
    "to_tflite",
    "weights_dict",
    "xla_function",
]
