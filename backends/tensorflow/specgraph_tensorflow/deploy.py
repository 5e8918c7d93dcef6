"""Export: SavedModel with a serving signature, and TFLite flatbuffers."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import tensorflow as tf

__all__ = ["export_saved_model", "serving_function", "to_tflite"]


def serving_function(model: Any, input_shape: Sequence[int | None] | None = None,
                     batch: int | None = None) -> Any:
    """A concrete inference function ``images -> {level: features}``; H, W stay dynamic unless given."""
    shape = list(input_shape) if input_shape is not None else list(model.input_shape[1:])
    spec = tf.TensorSpec([batch, *shape], model.inputs[0].dtype, name="images")
    return tf.function(lambda images: model(images, training=False)).get_concrete_function(spec)


def export_saved_model(model: Any, path: str | os.PathLike[str]) -> None:
    """Write a SavedModel loadable by ``tf_keras.models.load_model`` (rebuilt from the config, so it
    needs this package) and by ``tf.saved_model.load`` (signature ``serving_default``, any H, W)."""
    # Per-layer traces are not needed (the model rebuilds from its config) and cost most of the save time.
    model.save(os.fspath(path), save_format="tf", save_traces=False,
               signatures={"serving_default": serving_function(model)})


def to_tflite(model: Any, input_size: Sequence[int], *, batch: int = 1, optimizations: Sequence[Any] = ()) -> bytes:
    """Convert for a fixed ``(H, W)`` input; outputs are keyed by level in the ``serving_default`` signature."""
    fn = serving_function(model, (*input_size, model.input_shape[-1]), batch=batch)
    converter = tf.lite.TFLiteConverter.from_concrete_functions([fn], model)
    converter.optimizations = list(optimizations)
    return converter.convert()
