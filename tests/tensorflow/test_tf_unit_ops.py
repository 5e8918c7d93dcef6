"""Keras block units are built from the plan's unit ops (``Unit.ops``), one layer per weighted op."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf
from specgraph_tensorflow._layers import LayerOptions
from specgraph_tensorflow._units import BlockUnit

import specgraph
from specgraph import Conv, SqueezeExcite, Unit

UNITS = {
    "bottleneck": Unit("bottleneck", 16, 8, 32, 2, (8, 8), (4, 4), projection=True),
    "bottleneck_identity": Unit("bottleneck", 32, 8, 32, 1, (4, 4), (4, 4)),
    "residual": Unit("residual", 16, 24, 24, 2, (8, 8), (4, 4), projection=True),
    "mbconv": Unit("mbconv", 16, 0, 16, 1, (4, 4), (4, 4), expand=True, expand_channels=48, se_channels=8),
    "mbconv_plain": Unit("mbconv", 16, 0, 16, 1, (4, 4), (4, 4)),
    "mbconv_no_residual": Unit("mbconv", 16, 0, 24, 2, (8, 8), (4, 4), expand=True, expand_channels=32,
                               se_channels=4, residual=False),
}
EPS = 1e-3


def _unit(unit: Unit, seed: int = 0) -> BlockUnit:
    layer = BlockUnit(unit, 0.0, options=LayerOptions(norm_epsilon=EPS), name="u")
    layer.build((None, *unit.in_size, unit.in_channels))
    rng = np.random.default_rng(seed)
    for v in layer.weights:  # non-trivial norms and biases
        low = 0.5 if any(k in v.name for k in ("gamma", "moving_variance")) else -0.3
        if not v.name.endswith("kernel:0"):
            v.assign(rng.uniform(low, low + 1.0, v.shape).astype(np.float32))
    return layer


@pytest.mark.parametrize("key", list(UNITS))
def test_named_layers_are_the_roles_of_the_weighted_ops(key):
    unit = UNITS[key]
    layer = _unit(unit)
    roles = [step.role for step in unit.weighted_ops]
    assert sorted(layer.named_layers()) == sorted(roles)
    assert all(sub.name == name for name, sub in layer.named_layers().items())
    assert ("expand" in roles, "se" in roles) == ((unit.expand, unit.se_channels > 0) if unit.type == "mbconv"
                                                  else (False, False))


def _conv(x, layer, op: Conv):
    if op.depthwise:
        y = tf.nn.depthwise_conv2d(x, layer.conv.depthwise_kernel, [1, op.stride, op.stride, 1], "SAME")
    else:
        y = tf.nn.conv2d(x, layer.conv.kernel, op.stride, "SAME")
    n = layer.norm
    y = (y - n.moving_mean) / tf.sqrt(n.moving_variance + EPS) * n.gamma + n.beta
    return tf.nn.relu(y) if op.activation else y


@pytest.mark.parametrize("key", list(UNITS))
def test_unit_computes_its_ops_composed_by_hand(key):
    """Shortcut, branch, squeeze-excitation, add and relu, from the unit's own weights with plain tf ops."""
    unit = UNITS[key]
    layer = _unit(unit, seed=1)
    x = tf.constant(np.random.default_rng(2).normal(size=(2, *unit.in_size, unit.in_channels)).astype(np.float32))
    parts = layer.named_layers()
    branch = shortcut = x
    for step in unit.ops:
        op, sub = step.op, parts.get(step.role)
        if isinstance(op, Conv) and step.path == "shortcut":
            shortcut = _conv(x, sub, op)
        elif isinstance(op, Conv):
            branch = _conv(branch, sub, op)
        elif isinstance(op, SqueezeExcite):
            s = tf.reduce_mean(branch, axis=[1, 2], keepdims=True)
            s = tf.nn.relu(tf.nn.conv2d(s, sub.reduce.kernel, 1, "SAME") + sub.reduce.bias)
            s = tf.nn.conv2d(s, sub.expand.kernel, 1, "SAME") + sub.expand.bias
            branch = branch * (tf.nn.relu6(s + 3.0) * 0.16667)
        elif step.role == "add":
            branch = branch + shortcut
        else:
            branch = tf.nn.relu(branch)
    got = layer(x, training=False).numpy()
    assert got.shape == (2, *unit.size, unit.out_channels)
    np.testing.assert_allclose(got, branch.numpy(), rtol=1e-5, atol=1e-5)


def test_unknown_op_kind_is_a_backend_error(monkeypatch):
    unit = UNITS["residual"]
    odd = specgraph.UnitOp("pool", "branch", specgraph.MaxPool(3, 1, 24, (4, 4)))
    recipe = Unit.ops.fget
    monkeypatch.setattr(Unit, "ops", property(lambda u: (*recipe(u), odd)))
    with pytest.raises(specgraph.BackendError, match="MaxPool"):
        BlockUnit(unit, 0.0, options=LayerOptions(), name="u")
