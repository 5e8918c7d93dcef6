"""specgraph-torch: the PyTorch backend of specgraph (entry point ``torch`` in ``specgraph.backends``).

``specgraph.compile(plan, backend="torch", **options)`` calls :func:`compile` here.
"""

from importlib.metadata import version as _metadata_version

from ._contract import apply_activation, apply_fusion, count_parameters, emitted_model, predict
from ._emit import emit
from ._export import dynamic_shapes, export, fold_batch_norm, min_dynamic_side, optimize_for_inference, to_onnx
from ._fused import InferenceNet, onednn_available
from ._interop import load_structural, structural_name, to_structural
from ._layers import ConvNormAct, SqueezeExcite
from ._memory import reuse_freed_memory
from ._model import OPTIONS, Feature, FeatureInfo, FrozenBatchNorm2d, ShapeSpec, SpecgraphModel, compile
from ._ops import ACTIVATION_KERNELS, activation_kernel
from ._weights import WeightsError, load_modelgarden_weights, modelgarden_kwargs, modelgarden_names

SpecgraphNet = SpecgraphModel  # its name before both backends used one vocabulary

__version__ = _metadata_version("specgraph-torch")  # its pyproject.toml is the one place it is written

__all__ = [
    "ACTIVATION_KERNELS",
    "ConvNormAct",
    "OPTIONS",
    "Feature",
    "FeatureInfo",
    "FrozenBatchNorm2d",
    "InferenceNet",
    "ShapeSpec",
    "SpecgraphModel",
    "SpecgraphNet",
    "SqueezeExcite",
    "WeightsError",
    "__version__",
    "activation_kernel",
    "apply_activation",
    "apply_fusion",
    "compile",
    "count_parameters",
    "dynamic_shapes",
    "emit",
    "emitted_model",
    "export",
    "fold_batch_norm",
    "load_modelgarden_weights",
    "load_structural",
    "min_dynamic_side",
    "modelgarden_kwargs",
    "modelgarden_names",
    "onednn_available",
    "optimize_for_inference",
    "predict",
    "reuse_freed_memory",
    "structural_name",
    "to_onnx",
    "to_structural",
]
