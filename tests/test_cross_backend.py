"""The same weights in the torch and TensorFlow backends give the same outputs.

Weights travel through the shared layout (``specgraph_torch.to_structural`` /
``load_structural`` and ``specgraph_tensorflow.weights_dict`` / ``load_weights``), in
both directions, on SpineNet-49S, Mobile-49XS and random specs from hypothesis.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import specgraph
from specgraph.backend_api import ACTIVATION_FORMULAS
from specgraph.testing import composed_specs, decoder_specs, valid_specs

torch = pytest.importorskip("torch")
tf = pytest.importorskip("tensorflow")
specgraph_torch = pytest.importorskip("specgraph_torch")
specgraph_tensorflow = pytest.importorskip("specgraph_tensorflow")

pytestmark = pytest.mark.slow
DATA = Path(__file__).parent / "data"
TOLERANCE = 1e-4


def _torch_model(plan: specgraph.Plan, seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    model = specgraph.compile(plan, backend="torch").eval()
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn(m.num_features, generator=gen) * 0.1)
                m.running_var.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
                m.weight.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
                m.bias.copy_(torch.randn(m.num_features, generator=gen) * 0.1)
        for name, p in model.named_parameters():
            if name.endswith("fusion_weights"):
                p.copy_(torch.rand(p.shape, generator=gen) + 0.5)
    return model


def _gap(reference: np.ndarray, other: np.ndarray) -> float:
    """max |delta| / max |reference| (0 when they are equal, e.g. both all-zero after a ReLU)."""
    assert reference.shape == other.shape
    delta = float(np.abs(reference - other).max())
    return 0.0 if delta == 0.0 else delta / float(np.abs(reference).max())


def _relative_gap(torch_out: dict, tf_out: dict) -> dict[str, float]:
    assert set(torch_out) == set(tf_out)
    return {level: _gap(t.detach().numpy().transpose(0, 2, 3, 1), np.asarray(tf_out[level]))
            for level, t in torch_out.items()}


def _example(plan: specgraph.Plan, size: tuple[int, int], seed: int) -> np.ndarray | dict[str, np.ndarray]:
    """NCHW images, or for a decoder's plan its {level: NCHW features}."""
    rng = np.random.default_rng(seed)
    if plan.inputs:
        return {level: rng.standard_normal((2, plan.node(name).channels, *plan.node(name).size)).astype(np.float32)
                for level, name in plan.inputs}
    return rng.standard_normal((2, 3, *size)).astype(np.float32)


def _torch_in(x: Any) -> Any:
    return {k: torch.from_numpy(v) for k, v in x.items()} if isinstance(x, dict) else torch.from_numpy(x)


def _tf_in(x: Any) -> Any:
    return {k: v.transpose(0, 2, 3, 1) for k, v in x.items()} if isinstance(x, dict) else x.transpose(0, 2, 3, 1)


def _assert_agree(plan: specgraph.Plan, size: tuple[int, int], seed: int = 0) -> None:
    """Torch and TF agree (<= TOLERANCE relative, every level) with the weights moved each way."""
    forward, backward = _both_ways(plan, size, seed)
    assert max(forward.values()) <= TOLERANCE, forward
    assert max(backward.values()) <= TOLERANCE, backward


def _both_ways(plan: specgraph.Plan, size: tuple[int, int], seed: int = 0) -> tuple[dict, dict]:
    torch_model = _torch_model(plan, seed)
    tf_model = specgraph.compile(plan, backend="tensorflow")
    images = _example(plan, size, seed)
    with torch.no_grad():
        reference = torch_model(_torch_in(images))
    # torch -> TensorFlow
    specgraph_tensorflow.load_weights(tf_model, specgraph_torch.to_structural(torch_model))
    forward = _relative_gap(reference, tf_model(_tf_in(images), training=False))
    # TensorFlow -> torch, into a differently initialised model
    fresh = _torch_model(plan, seed + 1)
    tf_weights = {k: v.numpy() for k, v in specgraph_tensorflow.weights_dict(tf_model).items()}
    specgraph_torch.load_structural(fresh, tf_weights)
    with torch.no_grad():
        back = fresh(_torch_in(images))
    backward = {k: _gap(reference[k].numpy(), back[k].numpy()) for k in reference}
    return forward, backward


@pytest.mark.parametrize(("family", "variant"), [("spinenet", "49S"), ("spinenet_mobile", "49XS")])
def test_builtin_variants_agree(family: str, variant: str) -> None:
    plan = specgraph.plan(specgraph.load(family), variant, (128, 192))
    _assert_agree(plan, (128, 192))


def test_shared_layout_names_every_weight_once() -> None:
    plan = specgraph.plan(specgraph.load("spinenet_lite"), "S", 64)
    torch_names = set(specgraph_torch.to_structural(specgraph.compile(plan, backend="torch")))
    tf_names = set(specgraph_tensorflow.weights_dict(specgraph.compile(plan, backend="tensorflow")))
    assert torch_names == tf_names
    assert "lite9/fuse/weights" in torch_names and "lite9/in2/op2/moving_variance" in torch_names


def test_mismatched_layout_is_listed_and_nothing_loads() -> None:
    plan = specgraph.plan(specgraph.load("spinenet_mobile"), "49XS", 64)
    model = specgraph.compile(plan, backend="torch")
    arrays = specgraph_torch.to_structural(model)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    arrays = {k: np.zeros_like(v) for k, v in arrays.items()}
    del arrays["sp3/in0/op0/kernel"]
    arrays["sp14/unit0/project/kernel"] = np.zeros((1, 1, 3, 3), np.float32)
    arrays["nonesuch/op0/kernel"] = np.zeros(3, np.float32)
    with pytest.raises(specgraph.BackendError) as info:
        specgraph_torch.load_structural(model, arrays)
    problems = {p.path: p.message for p in info.value.problems}
    assert problems["sp3/in0/op0/kernel"].startswith("missing")
    assert problems["nonesuch/op0/kernel"].startswith("unexpected")
    assert problems["sp14/unit0/project/kernel"].startswith("shape")
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(valid_specs(), st.tuples(st.integers(20, 96), st.integers(20, 96)), st.integers(0, 1000))
def test_random_specs_agree(data, size, seed) -> None:
    plan = specgraph.plan(specgraph.load(data), input_size=size)
    _assert_agree(plan, size, seed)


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(composed_specs(), st.tuples(st.integers(20, 96), st.integers(20, 96)), st.integers(0, 1000))
def test_random_compositions_agree(data, size, seed) -> None:
    """A random backbone (a permutation of random blocks) under a random decoder (op blocks, a repeated cell)."""
    plan = specgraph.plan(specgraph.load(data), input_size=size)
    _assert_agree(plan, size, seed)


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(decoder_specs(), st.tuples(st.integers(20, 96), st.integers(20, 96)), st.integers(0, 1000))
def test_random_decoders_alone_agree(data, size, seed) -> None:
    plan = specgraph.plan(specgraph.load(data), input_size=size)
    _assert_agree(plan, size, seed)


@pytest.mark.parametrize(("decoder", "variant"), [("fpn", "separable"), ("nasfpn", "3"), ("bifpn", "d1")])
def test_decoders_alone_agree(decoder: str, variant: str) -> None:
    """The decoders on their declared inputs at a size that crops every upsampling (100x150)."""
    plan = specgraph.plan(decoder, variant, (100, 150))
    _assert_agree(plan, (100, 150))


def test_shared_cell_weights_agree() -> None:
    """tests/data/shared_cells.toml: a shared pair of block groups and a shared BiFPN-like cell; each backend runs
    one set of weights per shared block (the TF model holds as many as stats counts) and they move both ways."""
    plan = specgraph.plan(specgraph.load(DATA / "shared_cells.toml"), input_size=(64, 96))
    tf_model = specgraph.compile(plan, backend="tensorflow")
    assert tf_model.count_params() == specgraph.stats(plan).params
    assert not any("pyramid_2" in name for name in specgraph_tensorflow.weights_dict(tf_model))
    _assert_agree(plan, (64, 96))


@pytest.mark.parametrize("activation", sorted(ACTIVATION_FORMULAS))
def test_every_activation_and_block_type_agrees(activation: str) -> None:
    """tests/data/small.toml has every block type (residual, bottleneck, mbconv with SE), a merge edge,
    up- and down-sampling; the activation is set on the plan, as a spec's ``activation`` would be."""
    plan = specgraph.plan(specgraph.load(DATA / "small.toml"), input_size=(64, 96))
    assert {n.block_type for n in plan.nodes if n.kind == "block"} >= {"residual", "bottleneck", "mbconv"}
    plan = dataclasses.replace(plan, activation=activation)
    _assert_agree(plan, (64, 96))


# The same things have the same names in both backends (the issue-16 vocabulary).
SHARED_NAMES = {"SpecgraphModel", "ConvNormAct", "SqueezeExcite", "WeightsError", "ACTIVATION_KERNELS", "OPTIONS",
                "activation_kernel", "compile", "emit", "load_modelgarden_weights", "load_structural", "to_structural",
                "predict", "count_parameters", "emitted_model", "apply_activation", "__version__"}


def test_both_backends_use_one_vocabulary() -> None:
    for backend in (specgraph_torch, specgraph_tensorflow):
        assert set(backend.__all__) >= SHARED_NAMES, (backend.__name__, SHARED_NAMES - set(backend.__all__))
        assert backend.WeightsError is specgraph.WeightsError
    plan = specgraph.plan("spinenet_mobile", "49XS", (64, 64))  # mbconv units with squeeze-excitation
    torch_model = specgraph.compile(plan, backend="torch")
    tf_model = specgraph.compile(plan, backend="tensorflow")
    assert isinstance(torch_model, specgraph_torch.SpecgraphModel)
    assert isinstance(tf_model, specgraph_tensorflow.SpecgraphModel)
    torch_kinds = {type(m).__name__ for m in torch_model.modules()
                   if isinstance(m, specgraph_torch.ConvNormAct | specgraph_torch.SqueezeExcite)}
    tf_kinds = {type(layer).__name__ for layer in tf_model._flatten_layers()
                if isinstance(layer, specgraph_tensorflow.ConvNormAct | specgraph_tensorflow.SqueezeExcite)}
    assert torch_kinds == tf_kinds == {"ConvNormAct", "SqueezeExcite"}


def test_both_backends_implement_exactly_the_core_fusions() -> None:
    """Each runtime keeps its own table of fusion names (emitted source inlines it, without specgraph): each must
    be the core registry's, no more and no fewer."""
    from specgraph_tensorflow._runtime import FUSION_METHODS
    from specgraph_torch._layers import FUSION_KERNELS

    from specgraph.backend_api import FUSIONS

    assert set(FUSION_KERNELS) == set(FUSIONS) == set(FUSION_METHODS)
