"""Map a Model Garden SpineNet / SpineNet-Mobile onto a specgraph model's weight names.

Model Garden creates its top-level layers in the order specgraph builds its slots
(stem, stem blocks, then per block: each parent's resampling convs, then the block
group; endpoints last). Keras numbers layer names per class in creation order, so
sorting the model's own Conv2D / DepthwiseConv2D / block layers by that number
recovers the order independent of session counters. Each conv's batch norm is the
layer that consumes it in the graph. Layers Model Garden builds but leaves out of
the graph (sp16 at min_level 3) are simply absent.
"""

from __future__ import annotations

import importlib
import os
import re
from typing import Any

import numpy as np
import tensorflow as tf
import tf_keras

from specgraph import Plan, Problem, WeightsError
from specgraph._weights import first_line
from specgraph.backend_api import (
    MODELGARDEN_BLOCKS,
    modelgarden_backbone,
    modelgarden_decoder_variables,
    modelgarden_parts,
)

from ._layers import ConvNormAct, Fuse
from ._units import BlockUnit

__all__ = ["modelgarden_arrays", "modelgarden_from_checkpoint", "modelgarden_reference"]

# Model Garden's block class -> the unit type it builds (its internals are named in specgraph/_mg_blocks.py).
_BLOCK_CLASSES = {block.keras_class: unit_type for unit_type, block in MODELGARDEN_BLOCKS.items()}
_NAME_NUMBER = re.compile(r"^(.*?)(?:_(\d+))?$")


def _creation_index(layer: Any) -> int:
    match = _NAME_NUMBER.match(layer.name)
    return int(match.group(2)) if match and match.group(2) else 0


def _conv_arrays(conv: Any, norm: Any) -> dict[str, Any]:
    kernel = conv.depthwise_kernel if hasattr(conv, "depthwise_kernel") else conv.kernel
    out = {"kernel": kernel.numpy()}
    if conv.use_bias:
        out["bias"] = conv.bias.numpy()
    if norm is not None:
        out.update(gamma=norm.gamma.numpy(), beta=norm.beta.numpy(), moving_mean=norm.moving_mean.numpy(),
                   moving_variance=norm.moving_variance.numpy())
    return out


def _unit_arrays(block: Any, unit: BlockUnit) -> dict[str, Any]:
    mg = MODELGARDEN_BLOCKS[unit.unit_type]
    out: dict[str, Any] = {}
    for role, layer in unit.named_layers().items():
        if mg.squeeze_excite is not None and role == mg.squeeze_excite[0]:
            se = getattr(block, mg.squeeze_excite[1])
            for sub, attribute in zip((layer.reduce, layer.expand), mg.squeeze_excite[2:], strict=True):
                conv = getattr(se, attribute)
                sub = sub.name
                out[f"{role}/{sub}/kernel"] = conv.kernel.numpy()
                out[f"{role}/{sub}/bias"] = conv.bias.numpy()
            continue
        attributes = mg.conv_attributes(role)
        conv = getattr(block, attributes[0], None) if attributes is not None else None
        if conv is None:
            continue  # reported as missing by the caller's check
        for name, array in _conv_arrays(conv, getattr(block, attributes[1], None)).items():
            out[f"{role}/{name}"] = array
    return out


# Keras class -> the name prefix Keras gives its layers (``MODELGARDEN_DECODERS``' ``created`` naming).
_DECODER_CLASSES = {"Conv2D": "conv2d", "DepthwiseConv2D": "depthwise_conv2d", "SeparableConv2D": "separable_conv2d",
                    "BatchNormalization": "batch_normalization"}


def _decoder_arrays(plan: Plan, decoder: Any) -> tuple[dict[str, Any], list[Problem]]:
    """The op blocks' weights from Model Garden's decoder: its layer of each block's name, or its layers of each
    class in creation order (``modelgarden_decoder_variables``)."""
    variables = modelgarden_decoder_variables(plan)
    by_class: dict[str, list[Any]] = {}
    for layer in getattr(decoder, "layers", []):
        prefix = _DECODER_CLASSES.get(type(layer).__name__)
        if prefix is not None:
            by_class.setdefault(prefix, []).append(layer)
    for members in by_class.values():
        members.sort(key=_creation_index)
    problems: list[Problem] = []
    wanted: dict[str, int] = {}
    for v in variables:
        if v.index is not None:
            wanted[v.layer] = max(wanted.get(v.layer, 0), v.index + 1)
    for prefix, count in wanted.items():
        theirs = by_class.get(prefix, [])
        if len(theirs) != count:
            problems.append(Problem(f"the plan's decoder has {count}, the Model Garden decoder has {len(theirs)}",
                                    f"{prefix} layers"))
    if problems:
        return {}, problems
    arrays: dict[str, Any] = {}
    for v in variables:
        if v.index is not None:
            layer = by_class[v.layer][v.index]
        else:
            try:
                layer = decoder.get_layer(v.layer)
            except ValueError:
                problems.append(Problem(f"the Model Garden decoder has no layer {v.layer!r}", v.slot))
                continue
        value = getattr(layer, v.role, None)
        if value is None:
            problems.append(Problem(f"Model Garden layer {layer.name!r} ({type(layer).__name__}) has no {v.role}",
                                    v.slot))
        else:
            arrays[f"{v.slot}/{v.role}"] = value.numpy()
    return arrays, problems


def modelgarden_arrays(model: Any, source: Any) -> tuple[dict[str, Any], list[Problem]]:
    """``({specgraph weight name: array}, problems)`` for Model Garden's backbone (and decoder) ``source``
    (nothing is checked but the layer structure: the caller checks the arrays)."""
    mg, decoder = modelgarden_parts(source, model.plan)
    decoder_arrays, decoder_problems = _decoder_arrays(model.plan, decoder) if decoder is not None else ({}, [])
    decoder_slots = {v.slot for v in modelgarden_decoder_variables(model.plan)}
    arrays, problems = _backbone_arrays(model, mg, decoder_slots)
    return {**arrays, **decoder_arrays}, problems + decoder_problems


def _backbone_arrays(model: Any, mg: Any, skip: set[str]) -> tuple[dict[str, Any], list[Problem]]:
    layers = list(getattr(mg, "layers", []))
    groups: dict[str, list[Any]] = {"conv": [], "dwconv": [], **{unit_type: [] for unit_type in MODELGARDEN_BLOCKS}}
    norm_of: dict[int, Any] = {}
    for layer in layers:
        cls = type(layer).__name__
        if cls == "Conv2D":
            groups["conv"].append(layer)
        elif cls == "DepthwiseConv2D":
            groups["dwconv"].append(layer)
        elif cls in _BLOCK_CLASSES:
            groups[_BLOCK_CLASSES[cls]].append(layer)
        elif isinstance(layer, tf_keras.layers.BatchNormalization):
            parents = layer._inbound_nodes[0].inbound_layers
            parent = parents[0] if isinstance(parents, list) else parents
            norm_of[id(parent)] = layer
    for members in groups.values():
        members.sort(key=_creation_index)

    wanted: dict[str, list[tuple[str, Any]]] = {g: [] for g in groups}
    problems: list[Problem] = []
    for key, layer in model.slots.items():
        if key in skip:
            continue
        if isinstance(layer, ConvNormAct):
            wanted["dwconv" if isinstance(layer.conv, tf_keras.layers.DepthwiseConv2D) else "conv"].append((key, layer))
        elif isinstance(layer, BlockUnit):
            wanted[layer.unit_type].append((key, layer))
        elif isinstance(layer, Fuse):
            problems.append(Problem("weighted fusion has no Model Garden counterpart", key))
    for group, mine in wanted.items():
        theirs = groups[group]
        if len(mine) != len(theirs):
            hint = (" (a Model Garden model built with an unknown input width drops a merge-only block and its "
                    "resamplers: build it with a fixed input_specs shape)" if len(theirs) < len(mine) else "")
            problems.append(Problem(f"the plan has {len(mine)}, the Model Garden model has {len(theirs)}{hint}; "
                                    f"theirs: {', '.join(t.name for t in theirs) or 'none'}", f"{group} layers"))
    if problems:
        return {}, problems

    arrays: dict[str, Any] = {}
    for group, mine in wanted.items():
        for (key, layer), theirs in zip(mine, groups[group], strict=True):
            if isinstance(layer, ConvNormAct):
                norm = norm_of.get(id(theirs))
                if layer.norm is not None and norm is None:
                    problems.append(Problem(f"Model Garden conv {theirs.name} has no batch norm after it", key))
                    continue
                parts = _conv_arrays(theirs, norm if layer.norm is not None else None)
            else:
                parts = _unit_arrays(theirs, layer)
            arrays.update({f"{key}/{role}": a for role, a in parts.items()})
    return arrays, problems


def modelgarden_reference(plan: Plan, *, fixed_size: bool = True) -> Any:
    """A Model Garden model with ``plan``'s architecture (for restoring its checkpoints)."""
    module, class_name, kwargs = modelgarden_backbone(
        plan, lambda module, table: getattr(importlib.import_module(module), table))
    shape = [None, *plan.input_size, plan.input_channels] if fixed_size else [None, None, None, plan.input_channels]
    backbone = getattr(importlib.import_module(module), class_name)
    return backbone(input_specs=tf_keras.layers.InputSpec(shape=shape), **kwargs)


_VALUE = "/.ATTRIBUTES/VARIABLE_VALUE"
_GRAPH_KEY = "_CHECKPOINTABLE_OBJECT_GRAPH"
# The children a Keras model adds for its layers (the backbone is found by counting the weighted ones).
_LAYER_CHILD = re.compile(r"layer(?:_with_weights)?-\d+")
_WEIGHTED_CHILD = re.compile(r"layer_with_weights-\d+")


def _object_graph(reader: Any) -> Any:
    """The checkpoint's object graph: every object, its named children, its variables' keys."""
    from tensorflow.core.protobuf import trackable_object_graph_pb2

    graph = trackable_object_graph_pb2.TrackableObjectGraph()
    graph.ParseFromString(reader.get_tensor(_GRAPH_KEY))
    return graph


def _paths(graph: Any) -> dict[int, str]:
    """Object id -> one shortest path from the root (``model/backbone``; the root is ``""``). An object
    may be reached along several paths (a SavedModel lists every variable under ``variables/N`` too);
    named attributes are preferred over Keras's generic ``layer-N`` ones, for readable messages."""
    paths = {0: ""}
    queue = [0]
    for node in queue:
        children = sorted(graph.nodes[node].children, key=lambda c: bool(_LAYER_CHILD.fullmatch(c.local_name)))
        for child in children:
            if child.node_id not in paths:
                paths[child.node_id] = f"{paths[node]}/{child.local_name}".lstrip("/")
                queue.append(child.node_id)
    return paths


def _backbone_prefix(graph: Any, weighted_layers: int, path: str) -> str:
    """The object path of the backbone inside a checkpoint, found by structure: the Keras model whose
    ``layer_with_weights-K`` children number exactly as many as Model Garden's backbone has.

    A backbone-only checkpoint keeps it under its own name (``model``), a Model Garden training
    checkpoint under ``model/backbone``, beside the decoder, the head and the optimizer; a SavedModel
    of the backbone at its root (``""``), of a RetinaNet under ``backbone``. Read off the object graph,
    not the variables' keys: a SavedModel keys many variables by another path (``variables/N``)."""
    paths = _paths(graph)
    layers = {i: len({c.local_name for c in graph.nodes[i].children if _WEIGHTED_CHILD.fullmatch(c.local_name)})
              for i in paths}
    found = sorted(paths[i] for i, n in layers.items() if n == weighted_layers)
    if len(found) == 1:
        return found[0]
    sizes = ", ".join(f"{paths[i] or '(root)'}: {n}" for i, n in sorted(layers.items(), key=lambda kv: paths[kv[0]])
                      if n) or "none"
    raise WeightsError(Problem(f"no Keras model in the checkpoint has the {weighted_layers} weighted layers of the "
                               f"Model Garden backbone (weighted layers per model: {sizes})" if not found else
                               f"several models could be the backbone: {', '.join(found)}", file=path))


def _variable_keys(graph: Any, other: Any) -> dict[str, str | None]:
    """For every variable key of checkpoint ``graph``, the key of the same object in checkpoint ``other``
    (reached along the same child names from the root), or None where ``other`` lacks it."""
    keys: dict[str, str | None] = {}
    queue = [(0, 0)]
    seen = {0}
    for node, match in queue:
        theirs = {c.local_name: c.node_id for c in other.nodes[match].children} if match is not None else {}
        values = {a.name: a.checkpoint_key for a in other.nodes[match].attributes} if match is not None else {}
        for attribute in graph.nodes[node].attributes:
            if attribute.name == "VARIABLE_VALUE":
                keys[attribute.checkpoint_key] = values.get("VARIABLE_VALUE")
        for child in graph.nodes[node].children:
            if child.node_id not in seen:
                seen.add(child.node_id)
                queue.append((child.node_id, theirs.get(child.local_name)))
    return keys


def _checkpoint_file(path: str) -> str:
    """The checkpoint to read for ``path``: a SavedModel directory's variables are an ordinary object-graph
    checkpoint at ``<dir>/variables/variables``; any other path is the checkpoint itself."""
    if os.path.isdir(path) and any(os.path.isfile(os.path.join(path, name))
                                   for name in ("saved_model.pb", "saved_model.pbtxt")):
        return os.path.join(path, "variables", "variables")
    return path


def _under(prefix: str, model: Any) -> Any:
    """A checkpoint root that reaches ``model`` along ``prefix``'s object path (``model/backbone``)."""
    root = model
    for name in reversed(prefix.split("/") if prefix else []):
        root = tf.train.Checkpoint(**{name: root})
    return root if prefix else tf.train.Checkpoint(root=model)


def _structural_names(plan: Plan, mg: Any) -> dict[int, str]:
    """Index in ``mg.weights`` -> specgraph's weight name (``sp3/in0/op0/kernel``), read off the Model Garden
    mapping itself: ``mg``'s variables hold their own indices (see :func:`_differences`)."""
    from ._model import compile

    arrays, _ = modelgarden_arrays(compile(plan, check_memory=False), mg)
    return {int(np.asarray(a).flat[0]): name for name, a in arrays.items() if np.size(a)}


def _differences(plan: Plan, mg: Any, prefix: str, shapes: dict[str, list[int]], graph: Any) -> list[Problem]:
    """What the checkpoint holds under ``prefix`` against what ``mg`` expects, by specgraph's weight names.

    ``mg`` is written to a scratch checkpoint with every variable filled with its own index, which
    tells which checkpoint key is which variable (Keras names are not in the checkpoint); each of its
    objects is matched to the checkpoint's (``graph``) along the same child names."""
    import tempfile

    for i, variable in enumerate(mg.weights):
        variable.assign(tf.fill(variable.shape, float(i)))
    with tempfile.TemporaryDirectory() as folder:
        probe = _under(prefix, mg).write(f"{folder}/probe")
        reader = tf.train.load_checkpoint(probe)
        expected = {key: (shape, reader.get_tensor(key)) for key, shape in tf.train.list_variables(probe)
                    if key.endswith(_VALUE)}
        in_checkpoint = _variable_keys(_object_graph(reader), graph)
    names = _structural_names(plan, mg)
    problems = []
    for key, (shape, marks) in sorted(expected.items()):
        name = names.get(int(marks.flat[0]), mg.weights[int(marks.flat[0])].name) if marks.size else key
        theirs_key = in_checkpoint.get(key)
        theirs = shapes.get(theirs_key) if theirs_key is not None else None
        if theirs is None:
            problems.append(Problem(f"missing from the checkpoint (expected shape {list(shape)}; key {key})", name))
        elif list(theirs) != list(shape):
            problems.append(Problem(f"shape {list(theirs)} in the checkpoint, {list(shape)} in the model", name))
    return problems


def modelgarden_from_checkpoint(plan: Plan, path: str) -> Any:
    """Restore the Model Garden backbone of ``plan``'s architecture from any checkpoint holding one:
    ``tf.train.Checkpoint(model=backbone)`` written with ``write()`` or ``save()``, a Model Garden
    training checkpoint (RetinaNet, Mask R-CNN: ``model/backbone``, found by structure), or a SavedModel
    directory (``tf.saved_model.save`` of a backbone or a RetinaNet: its variables checkpoint)."""
    checkpoint = _checkpoint_file(path)
    try:
        reader = tf.train.load_checkpoint(checkpoint)
        shapes = reader.get_variable_to_shape_map()
        graph = _object_graph(reader)
    except (tf.errors.OpError, ValueError) as exc:  # missing, a directory, not a checkpoint, no object graph
        what = "the SavedModel's variables" if checkpoint != path else "the checkpoint"
        raise WeightsError(Problem(f"cannot read {what}: {first_line(exc)}", file=path)) from exc
    errors: list[Problem] = []
    for fixed in (True, False):  # a model built at an unknown width lacks the merge-only block
        mg = modelgarden_reference(plan, fixed_size=fixed)
        weighted = sum(1 for layer in mg.layers if layer.weights)
        try:
            prefix = _backbone_prefix(graph, weighted, path)
        except WeightsError as exc:
            errors = list(exc.problems)
            continue
        try:
            _under(prefix, mg).read(checkpoint).assert_existing_objects_matched()
            return mg
        except (AssertionError, ValueError, tf.errors.InvalidArgumentError):
            differences = _differences(plan, mg, prefix, shapes, graph)
            errors = [Problem(f"the checkpoint holds another network than {plan.spec_name} {plan.variant} (another "
                              f"variant or spec?): {len(differences)} weight(s) differ", file=path), *differences]
            break
    raise WeightsError([Problem(p.message, p.path, path) for p in errors])
