"""The hooks of the backend contract (``specgraph.backend_api.ConformingBackend``) that the
conformance suite drives: numpy in, numpy out (NCHW images, as the torch backend), so one suite
checks every backend."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import numpy as np
import tensorflow as tf

from specgraph import ArgumentError
from specgraph.backend_api import LoadReport

from ._layers import activation_kernel
from ._runtime import Fuse
from .weights import load_weights, weights_dict

__all__ = ["apply_activation", "apply_fusion", "count_parameters", "emitted_model", "load_structural", "predict",
           "to_structural"]


def predict(model: Any, images: Any) -> dict[str, np.ndarray]:
    """Inference on NCHW float32 numpy images (transposed to the model's NHWC; a decoder: ``{level: NCHW
    features}``): ``{level: NCHW array}``."""
    if isinstance(images, Mapping):
        nhwc: Any = {level: np.asarray(x, dtype=np.float32).transpose(0, 2, 3, 1) for level, x in images.items()}
    else:
        nhwc = np.asarray(images, dtype=np.float32).transpose(0, 2, 3, 1)
    return {level: t.numpy().transpose(0, 3, 1, 2) for level, t in model(nhwc, training=False).items()}


def count_parameters(model: Any) -> int:
    """Every variable (trainable or not: BN moving statistics too), as ``specgraph.stats`` counts."""
    return int(model.count_params())


def to_structural(model: Any) -> dict[str, np.ndarray]:
    """``{shared weight name: array}``, the names and layouts the torch backend's ``to_structural`` uses."""
    return {name: v.numpy() for name, v in weights_dict(model).items()}


def load_structural(model: Any, arrays: Mapping[str, Any] | str | os.PathLike[str], *, strict: bool = True,
                    prefix: str = "") -> LoadReport:
    """:func:`load_weights` for a mapping of shared names or an ``.npz`` path (the torch backend's
    name for it); all or nothing."""
    if not isinstance(arrays, str | os.PathLike):
        ArgumentError.expect(arrays, Mapping, "arrays", "a mapping of weight name -> array or an .npz path")
    return load_weights(model, arrays, strict=strict, prefix=prefix)


def emitted_model(source: str, model: Any) -> Any:
    """Run emitted ``source`` in a fresh namespace, build its model and give it ``model``'s weights (by
    the emitted module's own ``weights_dict``, the same names)."""
    ArgumentError.expect(source, str, "source", "emitted Python source (specgraph_tensorflow.emit)")
    namespace: dict[str, Any] = {"__name__": "specgraph_emitted"}
    exec(compile(source, "<emitted>", "exec"), namespace)
    # a decoder's build_model takes no input shape (its inputs are the plan's feature maps)
    emitted = namespace["build_model"](**({} if model.plan.inputs else {"input_shape": model.input_shape[1:]}))
    targets = namespace["weights_dict"](emitted)
    for name, variable in weights_dict(model).items():
        targets[name].assign(variable)
    return emitted


def apply_activation(name: str, x: Any) -> np.ndarray:
    return activation_kernel(name)(tf.constant(np.asarray(x))).numpy()


def apply_fusion(method: str, xs: Any, weights: Any) -> np.ndarray:
    shape = None if weights is None else np.shape(weights)
    fuse = Fuse(method, len(xs), None, shape)
    nhwc = [tf.constant(np.asarray(x).transpose(0, 2, 3, 1)) for x in xs]
    fuse.build([t.shape for t in nhwc])
    if weights is not None:
        fuse.fusion_weights.assign(np.asarray(weights))
    return fuse(nhwc).numpy().transpose(0, 3, 1, 2)
