"""Every activation name means one function: each backend's kernel equals a hand-written numpy
formula (Model Garden's choices: gelu's tanh approximation, hard_sigmoid's 0.16667, leaky_relu's
0.2) and the other backend, and the emitted source runs the same function."""

from __future__ import annotations

import dataclasses
import inspect
import math

import numpy as np
import pytest
import specgraph_torch  # torch before TensorFlow
import torch

import specgraph
import specgraph.backend_api
from specgraph.backend_api import ACTIVATION_FORMULAS, ACTIVATIONS, canonical_activation

sgt = pytest.importorskip("specgraph_tensorflow")
import tensorflow as tf  # noqa: E402


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def _relu6(x: np.ndarray) -> np.ndarray:
    return np.minimum(np.maximum(x, 0.0), 6.0)


# Written from the definitions (Model Garden's official/modeling/activations, tf.nn), not from the code under test.
REFERENCE = {
    "relu": lambda x: np.maximum(x, 0.0),
    "relu6": _relu6,
    "swish": lambda x: x * _sigmoid(x),
    "hard_swish": lambda x: x * _relu6(x + 3.0) / 6.0,
    "hard_sigmoid": lambda x: _relu6(x + 3.0) * 0.16667,
    "sigmoid": _sigmoid,
    "tanh": np.tanh,
    "elu": lambda x: np.where(x > 0, x, np.expm1(np.minimum(x, 0.0))),
    "gelu": lambda x: 0.5 * x * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x**3))),
    "mish": lambda x: x * np.tanh(np.log1p(np.exp(x))),
    "leaky_relu": lambda x: np.where(x > 0, x, 0.2 * x),
    "linear": lambda x: x,
}


def test_the_core_table_is_the_reference_table():
    assert set(ACTIVATION_FORMULAS) == set(REFERENCE)
    assert {canonical_activation(name) for name in ACTIVATIONS} == set(REFERENCE)
    assert canonical_activation("silu") == canonical_activation("simple_swish") == "swish"
    assert canonical_activation("identity") == "linear"
    with pytest.raises(specgraph.BackendError, match="unknown activation 'reluu'"):
        canonical_activation("reluu")


def _inputs() -> np.ndarray:
    # Both signs, the kinks of relu6 / hard_sigmoid (-3, 0, 3, 6) and a tail.
    grid = np.linspace(-8.0, 8.0, 161)
    return np.concatenate([grid, [-3.0, 0.0, 3.0, 6.0, -20.0, 20.0]]).astype(np.float64)


@pytest.mark.parametrize("name", ACTIVATIONS)
def test_both_backends_compute_the_core_formula(name):
    x = _inputs()
    ref = REFERENCE[canonical_activation(name)](x)
    torch_out = specgraph_torch.activation_kernel(name)(torch.from_numpy(x)).numpy()
    tf_out = sgt.activation_kernel(name)(tf.constant(x)).numpy()
    np.testing.assert_allclose(torch_out, ref, rtol=1e-6, atol=1e-7, err_msg=f"torch {name}")
    np.testing.assert_allclose(tf_out, ref, rtol=1e-6, atol=1e-7, err_msg=f"tensorflow {name}")


@pytest.mark.parametrize("name", ["reluu", "", "GELU", None])
def test_unknown_activation_is_a_backend_error_in_both_backends(name):
    with pytest.raises(specgraph.BackendError, match="unknown activation"):
        specgraph_torch.activation_kernel(name)
    with pytest.raises(specgraph.BackendError, match="unknown activation"):
        sgt.activation_kernel(name)


@pytest.mark.parametrize("name", ["gelu", "mish", "leaky_relu", "hard_sigmoid"])
def test_emitted_sources_use_the_backends_function(name):
    """The emitted module holds the backend's own function, by source, and calls it."""
    plan = dataclasses.replace(specgraph.plan("spinenet_mobile", "49XS", 64), activation=name)
    header = specgraph.backend_api.header(plan)
    kind = canonical_activation(name)
    for source, kernels in ((specgraph_torch.emit(plan, header), specgraph_torch.ACTIVATION_KERNELS),
                            (sgt.emit(plan, header), sgt.ACTIVATION_KERNELS)):
        assert inspect.getsource(kernels[kind]).strip() in source
        assert f"act_{kind}(x)" in source or f"return act_{kind}" in source
