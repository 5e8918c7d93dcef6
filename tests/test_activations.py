"""Every activation name means one function. The conformance suite (tests/test_conformance.py)
checks each backend's functions against numpy formulas (specgraph.testing.ACTIVATION_REFERENCES:
gelu's tanh approximation, hard_sigmoid's 0.16667, leaky_relu's 0.2); here: the core's table is
that one, unknown names fail alike, and emitted source runs the backend's own function."""

from __future__ import annotations

import dataclasses
import inspect

import pytest
import specgraph_torch  # torch before TensorFlow

import specgraph
import specgraph.backend_api
from specgraph.backend_api import ACTIVATION_FORMULAS, ACTIVATIONS, canonical_activation
from specgraph.testing import ACTIVATION_REFERENCES

sgt = pytest.importorskip("specgraph_tensorflow")


def test_the_core_table_is_the_reference_table():
    assert set(ACTIVATION_FORMULAS) == set(ACTIVATION_REFERENCES)
    assert {canonical_activation(name) for name in ACTIVATIONS} == set(ACTIVATION_REFERENCES)
    assert canonical_activation("silu") == canonical_activation("simple_swish") == "swish"
    assert canonical_activation("identity") == "linear"
    with pytest.raises(specgraph.BackendError, match="unknown activation 'reluu'"):
        canonical_activation("reluu")


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
