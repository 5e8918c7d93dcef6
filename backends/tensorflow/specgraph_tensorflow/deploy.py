"""Export: SavedModel with a serving signature, and TFLite flatbuffers."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import tensorflow as tf
import tf_keras

from specgraph import ArgumentError

__all__ = ["TFLiteModel", "export_saved_model", "serving_function", "to_tflite"]


def serving_function(model: Any, input_shape: Sequence[int | None] | None = None,
                     batch: int | None = None) -> Any:
    """A concrete inference function ``images -> {level: features}``; H, W stay dynamic unless given."""
    ArgumentError.expect(model, tf_keras.Model, "model", "a Keras model (specgraph_tensorflow.compile)")
    shape = list(input_shape) if input_shape is not None else list(model.input_shape[1:])
    spec = tf.TensorSpec([batch, *shape], model.inputs[0].dtype, name="images")
    return tf.function(lambda images: model(images, training=False)).get_concrete_function(spec)


def export_saved_model(model: Any, path: str | os.PathLike[str]) -> None:
    """Write a SavedModel loadable by ``tf_keras.models.load_model`` (rebuilt from the config, so it
    needs this package) and by ``tf.saved_model.load`` (signature ``serving_default``, any H, W)."""
    ArgumentError.expect(model, tf_keras.Model, "model", "a Keras model (specgraph_tensorflow.compile)")
    ArgumentError.expect(path, (str, os.PathLike), "path", "a directory path")
    # Per-layer traces are not needed (the model rebuilds from its config) and cost most of the save time.
    model.save(os.fspath(path), save_format="tf", save_traces=False,
               signatures={"serving_default": serving_function(model)})


@dataclass(frozen=True)
class TFLiteModel:
    """A TFLite flatbuffer and which output tensor holds which level."""

    content: bytes
    levels: dict[str, str]  # output tensor name -> level key

    def run(self, images: Any) -> dict[str, Any]:
        """Run in the TFLite interpreter: ``{level: array}``."""
        interpreter = tf.lite.Interpreter(model_content=self.content)
        interpreter.allocate_tensors()
        interpreter.set_tensor(interpreter.get_input_details()[0]["index"], images)
        interpreter.invoke()
        return {self.levels[d["name"]]: interpreter.get_tensor(d["index"]) for d in interpreter.get_output_details()}


def to_tflite(model: Any, input_size: Sequence[int], *, batch: int = 1,
              optimizations: Sequence[Any] = ()) -> TFLiteModel:
    """Convert for a fixed ``(H, W)`` input (TFLite wants static shapes)."""
    ArgumentError.expect(model, tf_keras.Model, "model", "a Keras model (specgraph_tensorflow.compile)")
    if not (isinstance(input_size, Sequence) and len(input_size) == 2
            and all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in input_size)):
        raise ArgumentError(f"input_size: expected (H, W) as two positive integers, got {input_size!r}")
    fn = serving_function(model, (*input_size, model.input_shape[-1]), batch=batch)
    # Converting the frozen function directly; passing the Keras model as trackable makes the
    # converter save it as a SavedModel first, which is many times slower.
    converter = tf.lite.TFLiteConverter.from_concrete_functions([fn])
    converter.optimizations = list(optimizations)
    flat = tf.nest.flatten(fn.structured_outputs)
    keys = sorted(fn.structured_outputs)  # nest.flatten orders a dict by key
    levels = {t.name.split(":")[0]: k for t, k in zip(flat, keys, strict=True)}
    return TFLiteModel(converter.convert(), levels)
