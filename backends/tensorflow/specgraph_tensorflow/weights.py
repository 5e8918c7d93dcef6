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

from specgraph import BackendError

from ._layers import ConvNorm, Fuse
from ._units import BlockUnit, SqueezeExcite

__all__ = ["WeightMismatchError", "export_npz", "load_weights", "weights_dict"]


class WeightMismatchError(BackendError):
    """Weights do not fit the model: every missing, extra and wrongly shaped weight is listed."""


def _layer_variables(layer: Any) -> dict[str, tf.Variable]:
    if isinstance(layer, ConvNorm | SqueezeExcite):
        return layer.named_variables()
    if isinstance(layer, Fuse):
        return {"weights": layer.fusion_weights}
    if isinstance(layer, BlockUnit):
        return {f"{part}/{role}": v for part, sub in layer.named_layers().items()
                for role, v in _layer_variables(sub).items()}
    raise TypeError(f"no weight naming for {type(layer).__name__}")


def weights_dict(model: Any) -> dict[str, tf.Variable]:
    """``{structural name: variable}`` for every variable of a specgraph Keras model."""
    return {f"{key}/{role}": v for key, layer in model.slots.items() for role, v in _layer_variables(layer).items()}


def export_npz(model: Any, path: str | os.PathLike[str]) -> None:
    """Write every weight as ``name -> array`` (loadable with :func:`load_weights`)."""
    np.savez(path, **{k: v.numpy() for k, v in weights_dict(model).items()})


def _assign(model: Any, arrays: Mapping[str, Any], source: str) -> None:
    """Check everything first, then assign: a mismatch leaves the model untouched."""
    targets = weights_dict(model)
    problems = [f"missing: {k} {tuple(v.shape)}" for k, v in targets.items() if k not in arrays]
    problems += [f"extra: {k} {tuple(np.shape(a))}" for k, a in arrays.items() if k not in targets]
    problems += [f"shape: {k} model {tuple(v.shape)} vs {source} {tuple(np.shape(arrays[k]))}"
                 for k, v in targets.items() if k in arrays and tuple(v.shape) != tuple(np.shape(arrays[k]))]
    if problems:
        raise WeightMismatchError([f"{len(problems)} weight mismatch(es) loading {source} into "
                                   f"{model.plan.spec_name} {model.plan.variant}:", *problems])
    for k, v in targets.items():
        v.assign(np.asarray(arrays[k], dtype=v.dtype.as_numpy_dtype))


def load_weights(model: Any, source: Any) -> None:
    """Load into a specgraph Keras ``model`` from:

    - a Model Garden ``SpineNet`` / ``SpineNetMobile`` model object (mapped by structure);
    - a checkpoint path written by ``tf.train.Checkpoint`` holding such a model;
    - a ``.npz`` file or a mapping of ``name -> array`` (names as :func:`weights_dict`).

    Any mismatch raises :class:`WeightMismatchError` listing all of them; nothing is loaded then.
    """
    if isinstance(source, Mapping):
        _assign(model, source, "mapping")
        return
    if isinstance(source, str | os.PathLike):
        path = os.fspath(source)
        if path.endswith(".npz"):
            with np.load(path) as data:
                _assign(model, {k: data[k] for k in data.files}, path)
            return
        from ._mg_weights import modelgarden_from_checkpoint

        source = modelgarden_from_checkpoint(model.plan, path)
    from ._mg_weights import modelgarden_arrays

    arrays, problems = modelgarden_arrays(model, source)
    if problems:
        raise WeightMismatchError([f"{len(problems)} mismatch(es) mapping the Model Garden model "
                                   f"{getattr(source, 'name', '?')} onto {model.plan.spec_name} "
                                   f"{model.plan.variant}:", *problems])
    _assign(model, arrays, f"Model Garden model {getattr(source, 'name', '?')}")
