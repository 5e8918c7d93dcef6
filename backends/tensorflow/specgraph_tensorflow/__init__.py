"""specgraph's TensorFlow backend: a ``specgraph.Plan`` -> ``tf_keras`` functional model.

``specgraph.compile(plan_or_spec, backend="tensorflow", **options)`` calls :func:`compile`.
"""

from importlib.metadata import version as _metadata_version

from ._contract import (
    apply_activation,
    apply_fusion,
    count_parameters,
    emitted_model,
    load_structural,
    predict,
    to_structural,
)
from ._emit import emit
from ._layers import ACTIVATION_KERNELS, ConvNormAct, activation_kernel
from ._model import OPTIONS, SpecgraphModel, build, compile, xla_function
from ._units import SqueezeExcite
from .deploy import TFLiteModel, export_saved_model, serving_function, to_tflite
from .weights import (
    WeightMismatchError,
    WeightsError,
    export_npz,
    load_modelgarden_weights,
    load_weights,
    weights_dict,
)

__version__ = _metadata_version("specgraph-tensorflow")  # its pyproject.toml is the one place it is written

__all__ = [
    "ACTIVATION_KERNELS",
    "ConvNormAct",
    "OPTIONS",
    "SpecgraphModel",
    "SqueezeExcite",
    "TFLiteModel",
    "WeightMismatchError",
    "WeightsError",
    "__version__",
    "activation_kernel",
    "apply_activation",
    "apply_fusion",
    "build",
    "compile",
    "count_parameters",
    "emit",
    "emitted_model",
    "export_npz",
    "export_saved_model",
    "load_modelgarden_weights",
    "load_structural",
    "load_weights",
    "predict",
    "serving_function",
    "to_structural",
    "to_tflite",
    "weights_dict",
    "xla_function",
]
