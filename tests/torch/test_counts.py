"""Parameter counts (parameters + BN moving statistics, Keras's count_params()) for every variant."""

from __future__ import annotations

from pathlib import Path

import pytest
import specgraph_torch
import torch

import specgraph

# Model Garden's count_params() at a fixed input size (reference, Part D).
MODELGARDEN = {
    ("spinenet", "49S"): 9_146_351,
    ("spinenet", "49"): 21_920_192,
    ("spinenet", "96"): 36_385_728,
    ("spinenet", "143"): 60_413_888,
    ("spinenet", "143L"): 101_011_093,
    ("spinenet", "190"): 126_849_216,
    ("spinenet_mobile", "49"): 2_313_892,
    ("spinenet_mobile", "49S"): 1_004_872,
    ("spinenet_mobile", "49XS"): 869_400,
}
BIG = {("spinenet", "143"), ("spinenet", "143L"), ("spinenet", "190")}


def _keras_count(model: torch.nn.Module) -> tuple[int, int]:
    trainable = sum(p.numel() for p in model.parameters())
    stats = sum(b.numel() for name, b in model.named_buffers() if not name.endswith("num_batches_tracked"))
    return trainable + stats, trainable


@pytest.mark.parametrize(("spec", "variant"), [
    pytest.param(*key, marks=[pytest.mark.slow] if key in BIG else []) for key in MODELGARDEN])
def test_param_count_matches_plan_and_modelgarden(spec, variant):
    size = 384 if spec == "spinenet_mobile" else 640
    plan = specgraph.plan(specgraph.load(spec), variant=variant, input_size=(size, size))
    total, trainable = _keras_count(specgraph_torch.compile(plan))
    stats = specgraph.stats(plan)
    assert total == stats.params == MODELGARDEN[(spec, variant)]
    assert trainable == stats.trainable_params


def _autograd_saved_bytes(model: torch.nn.Module, images: torch.Tensor) -> int:
    """Bytes of the distinct tensors autograd keeps for the backward pass (weights left out)."""
    storages: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storages[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        model(images)
    weights = {p.untyped_storage().data_ptr() for p in model.parameters()}
    return sum(n for ptr, n in storages.items() if ptr not in weights)


@pytest.mark.parametrize(("spec", "variant"), [("spinenet", "49S"), ("spinenet_mobile", "49XS"), ("small", "tiny")])
def test_activation_estimate_is_close_to_what_autograd_keeps(spec, variant):
    """stats().activation_bytes is what the memory guard adds to the weights; torch's autograd is the reference."""
    source = specgraph.load(spec if spec != "small" else str(Path(__file__).parents[1] / "data" / "small.toml"))
    plan = specgraph.plan(source, variant, 192)
    model = specgraph_torch.compile(plan).train()
    measured = _autograd_saved_bytes(model, torch.randn(1, 3, 192, 192))
    estimate = specgraph.stats(plan)
    assert 0.8 <= estimate.activation_bytes / measured <= 1.25, (estimate.activation_bytes, measured)
    assert estimate.param_bytes == 4 * _keras_count(model)[0]


def test_compile_refuses_a_model_larger_than_memory_before_allocating():
    data = specgraph.load("spinenet").to_dict()
    data["variants"]["49"]["filter_size_scale"] = 16.0  # ~256x the parameters of SpineNet-49
    data["variants"]["49"]["block_repeats"] = 64
    plan = specgraph.plan(specgraph.load(data), "49", 640)
    with pytest.raises(specgraph.ResourceError, match="check_memory=False") as info:
        specgraph_torch.compile(plan)
    assert f"{specgraph.stats(plan).params:,} parameters" in str(info.value)
    with pytest.raises(specgraph.ResourceError):
        specgraph.compile(plan, "torch")
