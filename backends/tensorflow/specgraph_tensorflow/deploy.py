"""Export: SavedModel with a serving signature, and TFLite flatbuffers.

The Python model returns ``{"3": ..., "7": ...}``; file artefacts name the same outputs
``level_3`` ... ``level_7`` (``specgraph.backend_api.output_name``, as the torch backend's ONNX
export does), so a signature's outputs read the same in every format.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import tensorflow as tf
import tf_keras

# The converter's own freezing step, called ahead of it: see _frozen_signature.
from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

from specgraph import ArgumentError
from specgraph.backend_api import input_name, output_name

__all__ = ["SIGNATURE", "TFLiteModel", "export_saved_model", "serving_function", "to_tflite"]

# The signature key of both artefacts (TensorFlow's default serving key).
SIGNATURE = "serving_default"


def _require_model(model: Any) -> None:
    ArgumentError.expect(model, tf_keras.Model, "model", "a Keras model (specgraph_tensorflow.compile)")


def _decoder_inputs(model: Any) -> tuple[tuple[str, int], ...]:
    """A decoder's inputs as (level, channels), from its plan; () for a network on images."""
    plan = getattr(model, "plan", None)
    return tuple((level, plan.node(name).channels) for level, name in plan.inputs) if plan is not None else ()


def _specs(model: Any, batch: int | None, size: Sequence[int | None]) -> tf.TensorSpec | dict[str, tf.TensorSpec]:
    """The signature's input: ``images`` of ``size`` (H, W, C), or a decoder's ``features_3`` ... of an image of
    (H, W) (each ``ceil(H / 2**level)``; None stays dynamic) and their channels."""
    dtype = model.inputs[0].dtype
    decoder = _decoder_inputs(model)
    if not decoder:
        return tf.TensorSpec([batch, *size], dtype, name="images")
    return {input_name(level): tf.TensorSpec(
        [batch, *(None if s is None else -(-s // 2 ** int(level)) for s in size[:2]), channels], dtype,
        name=input_name(level)) for level, channels in decoder}


def _serving(model: Any, spec: tf.TensorSpec | dict[str, tf.TensorSpec]) -> tuple[Any, dict[str, str]]:
    """The concrete function ``images -> {output_name(level): features}`` (a decoder's: ``features_3=...``, by
    name) and ``{output name: level key}``."""
    levels: dict[str, str] = {}

    def named(features: Any) -> dict[str, tf.Tensor]:
        if not isinstance(features, Mapping):
            raise ArgumentError(f"model: expected a model returning {{level: features}}, got {type(features).__name__}")
        levels.update({output_name(str(level)): str(level) for level in features})
        return {output_name(str(level)): t for level, t in features.items()}

    if isinstance(spec, dict):
        by_name = {input_name(level): level for level, _ in _decoder_inputs(model)}

        def serve_features(**maps: tf.Tensor) -> dict[str, tf.Tensor]:
            return named(model({by_name[k]: v for k, v in maps.items()}, training=False))

        return tf.function(serve_features, autograph=False).get_concrete_function(**spec), levels

    def serve(images: tf.Tensor) -> dict[str, tf.Tensor]:
        return named(model(images, training=False))

    return tf.function(serve, autograph=False).get_concrete_function(spec), levels


def serving_function(model: Any, input_shape: Sequence[int | None] | None = None,
                     batch: int | None = None) -> Any:
    """A concrete inference function ``images -> {"level_3": features, ...}`` (the artefacts' output names;
    the model itself keeps returning ``{"3": ...}``). H, W stay dynamic unless given. A decoder's takes its
    feature maps by name, ``features_3=...`` (``input_shape``: the (H, W) of the image they stand for)."""
    _require_model(model)
    if input_shape is not None:
        shape = list(input_shape)
    else:
        shape = [None, None] if _decoder_inputs(model) else list(model.input_shape[1:])
    return _serving(model, _specs(model, batch, shape))[0]


def export_saved_model(model: Any, path: str | os.PathLike[str]) -> None:
    """Write a SavedModel loadable by ``tf_keras.models.load_model`` (rebuilt from the config, so it
    needs this package; returns ``{"3": ...}`` like the model) and by ``tf.saved_model.load``
    (signature ``serving_default``: input ``images`` of any batch, H, W; outputs ``level_3`` ...)."""
    _require_model(model)
    ArgumentError.expect(path, (str, os.PathLike), "path", "a directory path")
    # Per-layer traces are not needed (the model rebuilds from its config) and cost most of the save time.
    model.save(os.fspath(path), save_format="tf", save_traces=False,
               signatures={SIGNATURE: serving_function(model)})


@dataclass(frozen=True)
class TFLiteModel:
    """A TFLite flatbuffer with a ``serving_default`` signature (input ``images``, outputs ``level_3`` ...; a
    decoder's inputs ``features_3`` ...).

    ``input_shape`` is ``(batch, H, W, C)``, ``batch`` None when the flatbuffer accepts any batch; a decoder's
    ``input_shapes`` are its inputs', by level.
    """

    content: bytes
    levels: dict[str, str]  # signature output name ("level_3") -> level key ("3")
    input_shape: tuple[int | None, ...] | None = None
    input_shapes: dict[str, tuple[int | None, ...]] | None = None  # a decoder's: level -> (batch, h, w, c)

    def run(self, images: Any) -> dict[str, Any]:
        """Run in the TFLite interpreter: ``{level: array}`` (any batch when converted with ``batch=None``); a
        decoder's takes ``{level: NHWC features}``."""
        if self.input_shapes is not None:
            if not isinstance(images, Mapping) or sorted(images) != sorted(self.input_shapes):
                got = sorted(map(str, images)) if isinstance(images, Mapping) else type(images).__name__
                raise ArgumentError(f"images: a decoder's flatbuffer takes {{level: features}} at levels "
                                    f"{', '.join(self.input_shapes)}, got {got}")
            given = {input_name(level): _checked(np.asarray(images[level]), want, f"images[{level!r}]")
                     for level, want in self.input_shapes.items()}
        else:
            given = {"": _checked(np.asarray(images), self.input_shape, "images")}
        interpreter = tf.lite.Interpreter(model_content=self.content)
        runner = interpreter.get_signature_runner(SIGNATURE)
        details = runner.get_input_details()
        if "" in given:  # an image network's one input, whatever the converter named it
            (name,) = details
            given = {name: given[""]}
        # The runner resizes the inputs to this batch and allocates the tensors before it invokes.
        outputs = runner(**{k: v.astype(details[k]["dtype"], copy=False) for k, v in given.items()})
        return {self.levels[k]: v for k, v in outputs.items()}


def _checked(array: np.ndarray, want: tuple[int | None, ...] | None, what: str) -> np.ndarray:
    # TFLite would resize H, W too, and run a graph whose upsampling crops were fixed for another size.
    if want is not None and (array.ndim != len(want)
                             or any(w not in (None, n) for w, n in zip(want, array.shape, strict=True))):
        shown = "x".join("N" if w is None else str(w) for w in want)
        raise ArgumentError(f"{what}: expected shape {shown} (as converted), got {list(array.shape)}")
    return array


def _frozen_signature(fn: Any, spec: tf.TensorSpec) -> Any:
    """``fn`` with its variables folded into constants, still returning its named dict.

    The converter writes a signature (named outputs) only when it converts through a SavedModel.
    Saved with its variables that cost ~5 s more per conversion (SpineNet-Mobile-49XS: 7 s instead
    of 3 s; the variables are written, read back and frozen anyway); frozen first, the SavedModel
    holds a constant-only graph and is quick."""
    frozen = convert_variables_to_constants_v2(fn)
    structure = fn.structured_outputs
    if isinstance(spec, dict):  # a decoder's feature maps, by name
        return tf.function(lambda **maps: tf.nest.pack_sequence_as(structure, tf.nest.flatten(frozen(**maps)))
                           ).get_concrete_function(**spec)
    return tf.function(lambda images: tf.nest.pack_sequence_as(structure, tf.nest.flatten(frozen(images)))
                       ).get_concrete_function(spec)


def to_tflite(model: Any, input_size: Sequence[int], *, batch: int | None = None,
              optimizations: Sequence[Any] = ()) -> TFLiteModel:
    """Convert for a fixed ``(H, W)`` input (TFLite wants static spatial shapes) and any batch
    (``batch=None``, resized at run time) or a fixed one. The flatbuffer's ``serving_default``
    signature takes ``images`` and names its outputs ``level_3`` ... ``level_7``. A decoder's takes its
    feature maps ``features_3`` ... of an image of ``input_size`` (each ``ceil(H / 2**level)``)."""
    _require_model(model)
    if not (isinstance(input_size, Sequence) and len(input_size) == 2
            and all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in input_size)):
        raise ArgumentError(f"input_size: expected (H, W) as two positive integers, got {input_size!r}")
    if batch is not None and not (isinstance(batch, int) and not isinstance(batch, bool) and batch > 0):
        raise ArgumentError(f"batch: expected None (any batch) or a positive integer, got {batch!r}")
    decoder = _decoder_inputs(model)
    shape = (batch, *input_size, model.input_shape[-1]) if not decoder else None
    spec = _specs(model, batch, shape[1:] if shape else input_size)
    fn, levels = _serving(model, spec)
    # An empty trackable: the frozen function captures nothing, and without one the converter
    # takes its old path, which drops the signature (outputs would be StatefulPartitionedCall:N).
    converter = tf.lite.TFLiteConverter.from_concrete_functions([_frozen_signature(fn, spec)], tf.Module())
    converter.optimizations = list(optimizations)
    shapes = {level: tuple(spec[input_name(level)].shape.as_list()) for level, _ in decoder} if decoder else None
    return TFLiteModel(converter.convert(), levels, shape, shapes)
