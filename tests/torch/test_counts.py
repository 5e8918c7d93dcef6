"""Parameter counts (parameters + BN moving statistics, Keras's count_params()) for every variant."""

from __future__ import annotations

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
