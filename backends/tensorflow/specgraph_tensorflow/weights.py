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
from specgraph._weights import Target, read_npz
from specgraph.backend_api import LoadReport, modelgarden_plan, select_weights

from ._runtime import layer_variables as _layer_variables

__all__ = ["WeightMismatchError", "WeightsError", "export_npz", "load_modelgarden_weights", "load_weights",
           "weights_dict"]

# The name this package had before specgraph.WeightsError: the same class, so either can be caught.
WeightMismatchError = WeightsError


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


def _assign(model: Any, arrays: Mapping[str, Any], file: str | None = None, *, strict: bool = True,
            prefix: str = "") -> LoadReport:
    """Check and convert everything first, then assign: a problem leaves the model untouched."""
    targets = weights_dict(model)
    checked, report = select_weights(
        arrays, {k: Target(tuple(v.shape), v.dtype.as_numpy_dtype) for k, v in targets.items()}, strict=strict,
        prefix=prefix, file=file)
    for k, a in checked.items():
        targets[k].assign(a)
    return report


def load_weights(model: Any, source: Any, *, strict: bool = True, prefix: str = "") -> LoadReport:
    """Load into a specgraph Keras ``model`` from:

    - a Model Garden ``SpineNet`` / ``SpineNetMobile`` model object (mapped by structure);
    - a checkpoint path written by ``tf.train.Checkpoint`` holding such a model;
    - a ``.npz`` file or a mapping of ``name -> array`` (names as :func:`weights_dict`).

    Names, shapes, dtypes (floating or integer) and values (finite) are all checked before
    anything is assigned; every problem is listed in one :class:`specgraph.WeightsError`
    (also :class:`WeightMismatchError`) and the model is left as it was.

    ``prefix`` (a mapping or ``.npz``): only names starting with it are read, the prefix stripped
    (``"backbone/"`` for the backbone's weights inside a detector's). ``strict=False`` loads what
    matches and reports the rest (missing and unexpected names) instead of refusing; anything
    loaded is still checked first. Returns a :class:`specgraph.LoadReport`.

    A model of a level selection (``levels=[3, 5]``) takes Model Garden weights of the network of
    its ``min_level..max_level``: the variables of the nodes it does not build are left out.
    """
    _require_model(model)
    if not isinstance(strict, bool):
        raise ArgumentError(Problem(f"expected True or False, got {type(strict).__name__}", "strict"))
    if isinstance(source, Mapping):
        return _assign(model, source, strict=strict, prefix=prefix)
    if isinstance(source, str | os.PathLike) and os.fspath(source).endswith(".npz"):
        path = os.fspath(source)
        return _assign(model, read_npz(path), path, strict=strict, prefix=prefix)
    if prefix:
        raise ArgumentError(Problem("a prefix selects names of a mapping or an .npz; a Model Garden model or "
                                    "checkpoint is read by structure: leave prefix out", "prefix"))
    if not isinstance(source, str | os.PathLike | tuple | list) and not hasattr(source, "layers"):
        raise ArgumentError(Problem("expected a Model Garden model (or a (backbone, decoder) pair, or a detection "
                                    "model), a checkpoint path, an .npz path or a mapping of name -> array; got "
                                    f"{type(source).__name__}", "source"))
    full = modelgarden_plan(model.plan)
    if isinstance(source, str | os.PathLike):
        from ._mg_weights import modelgarden_from_checkpoint

        source = modelgarden_from_checkpoint(full, os.fspath(source))
    from ._mg_weights import modelgarden_arrays

    reader = model
    if full is not model.plan:  # Model Garden's layers map onto a model of the whole network: build one to read
        from ._model import compile

        reader = compile(full, check_memory=False)
    arrays, problems = modelgarden_arrays(reader, source)
    if problems:
        raise WeightsError(problems)
    if reader is not model:
        # Only the nodes the selection builds: the others' variables are dropped, not loaded.
        mine = weights_dict(model)
        arrays = {k: v for k, v in arrays.items() if k in mine}
    return _assign(model, arrays, strict=strict)


def load_modelgarden_weights(model: Any, source: Any) -> LoadReport:
    """Load Model Garden weights into ``model``, all or nothing: the same name and behaviour as
    ``specgraph_torch.load_modelgarden_weights``. ``source``: a built Model Garden ``SpineNet`` /
    ``SpineNetMobile``, or the path of a checkpoint or SavedModel holding one (backbone-only or a
    detector's, found by structure). Other sources (an ``.npz``, a mapping) go to :func:`load_weights`.
    """
    _require_model(model)
    if isinstance(source, Mapping) or (isinstance(source, str | os.PathLike)
                                       and os.fspath(source).endswith(".npz")):
        raise ArgumentError(Problem("expected a Model Garden model, or a checkpoint or SavedModel path; an .npz or "
                                    "a mapping of specgraph names loads with load_weights", "source"))
    return load_weights(model, source)
