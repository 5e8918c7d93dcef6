"""Weights by structural name: export, and all-or-nothing loading from Model Garden or ``.npz``.

A weight's name is its slot (``sp3/in0/op0``, ``sp3/unit0/conv2``) plus its role
(``kernel``, ``gamma``, ``moving_mean``...), so it does not depend on Keras layer
names or variable order.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import numpy as np
import tensorflow as tf

from specgraph import ArgumentError, Problem, WeightsError
from specgraph._weights import Target, convert_weights, read_npz

from ._layers import ConvNorm, Fuse
from ._units import BlockUnit, SqueezeExcite

__all__ = ["WeightMismatchError", "WeightsError", "export_npz", "load_weights", "weights_dict"]

# The name this package had before specgraph.WeightsError: the same class, so either can be caught.
WeightMismatchError = WeightsError


def _layer_variables(layer: Any) -> dict[str, tf.Variable]:
    if isinstance(layer, ConvNorm | SqueezeExcite):
        return layer.named_variables()
    if isinstance(layer, Fuse):
        return {"weights": layer.fusion_weights}
    if isinstance(layer, BlockUnit):
        return {f"{part}/{role}": v for part, sub in layer.named_layers().items()
                for role, v in _layer_variables(sub).items()}
    raise TypeError(f"no weight naming for {type(layer).__name__}")


def _require_model(model: Any) -> None:
    if not (hasattr(model, "slots") and hasattr(model, "plan")):
        raise ArgumentError(Problem(f"expected a specgraph Keras model (specgraph_tensorflow.compile); got "
                                    f"{type(model).__name__}", "model"))


def weights_dict(model: Any) -> dict[str, tf.Variable]:
    """``{structural name: variable}`` for every variable of a specgraph Keras model."""
    _require_model(model)
    return {f"{key}/{role}": v for key, layer in model.slots.items() for role, v in _layer_variables(layer).items()}


def export_npz(model: Any, path: str | os.PathLike[str]) -> None:
    """Write every weight as ``name -> array`` (loadable with :func:`load_weights`)."""
    np.savez(path, **{k: v.numpy() for k, v in weights_dict(model).items()})


def _assign(model: Any, arrays: Mapping[str, Any], file: str | None = None) -> None:
    """Check and convert everything first, then assign: a problem leaves the model untouched."""
    targets = weights_dict(model)
    checked = convert_weights(arrays, {k: Target(tuple(v.shape), v.dtype.as_numpy_dtype) for k, v in targets.items()},
                              file=file)
    for k, v in targets.items():
        v.assign(checked[k])


def load_weights(model: Any, source: Any) -> None:
    """Load into a specgraph Keras ``model`` from:

    - a Model Garden ``SpineNet`` / ``SpineNetMobile`` model object (mapped by structure);
    - a checkpoint path written by ``tf.train.Checkpoint`` holding such a model;
    - a ``.npz`` file or a mapping of ``name -> array`` (names as :func:`weights_dict`).

    Names, shapes, dtypes (floating or integer) and values (finite) are all checked before
    anything is assigned; every problem is listed in one :class:`specgraph.WeightsError`
    (also :class:`WeightMismatchError`) and the model is left as it was.
    """
    _require_model(model)
    if isinstance(source, Mapping):
        _assign(model, source)
        return
    if isinstance(source, str | os.PathLike):
        path = os.fspath(source)
        if path.endswith(".npz"):
            _assign(model, read_npz(path), path)
            return
        from ._mg_weights import modelgarden_from_checkpoint

        source = modelgarden_from_checkpoint(model.plan, path)
    elif not hasattr(source, "layers"):
        raise ArgumentError(Problem("expected a Model Garden model, a checkpoint path, an .npz path or a mapping of "
                                    f"name -> array; got {type(source).__name__}", "source"))
    from ._mg_weights import modelgarden_arrays

    arrays, problems = modelgarden_arrays(model, source)
    if problems:
        raise WeightsError(problems)
    _assign(model, arrays)
