"""Specs beyond Model Garden's: weighted fusion, repeated blocks, a hand-written mini spec."""

from __future__ import annotations

import math

import pytest
import specgraph_torch
import torch
from specgraph_torch._model import _BlockNode, _OpChain

import specgraph


def _count(model: torch.nn.Module) -> int:
    return (sum(p.numel() for p in model.parameters())
            + sum(b.numel() for n, b in model.named_buffers() if not n.endswith("num_batches_tracked")))


@pytest.mark.parametrize("variant", ["S", "M"])
def test_spinenet_lite(variant):
    plan = specgraph.plan(specgraph.load("spinenet_lite"), variant=variant, input_size=(128, 128))
    model = specgraph_torch.compile(plan).eval()
    assert _count(model) == specgraph.stats(plan).params
    lite9 = plan.node("lite9")
    assert model.nodes["lite9"].fusion_weights.shape == (len(lite9.inputs),) == (3,)
    assert len(model.nodes["lite9"].units) == len(lite9.units)
    with torch.no_grad():
        out = model(torch.randn(1, 3, 96, 160))
    for level, t in out.items():
        n = 2 ** int(level)
        assert t.shape == (1, plan.endpoints_num_filters, math.ceil(96 / n), math.ceil(160 / n))


def test_weighted_fusion_by_hand():
    node = _BlockNode([_OpChain([]) for _ in range(3)], [], "weighted", None, weight_shape=(3,))  # as the builder
    with torch.no_grad():
        node.fusion_weights.copy_(torch.tensor([2.0, -1.0, 1.0]))
    xs = [torch.full((1, 1, 1, 1), v) for v in (1.0, 5.0, 4.0)]
    # relu(w) = [2, 0, 1]: (2*1 + 0*5 + 1*4) / (3 + 1e-4)
    assert node(xs, (1, 1)).item() == pytest.approx(6.0 / 3.0001)


def test_mini_spec(mini):
    spec = specgraph.load(mini())
    plan = specgraph.plan(spec, variant="A", input_size=(64, 64))
    model = specgraph_torch.compile(plan)
    assert _count(model) == specgraph.stats(plan).params
    out = model(torch.randn(2, 3, 64, 64))
    assert {k: tuple(v.shape) for k, v in out.items()} == {
        str(lv): (2, 16, 64 // 2**lv or 1, 64 // 2**lv or 1) for lv in range(3, 8)}
    sum(v.sum() for v in out.values()).backward()
    assert model.nodes["stem"].ops[0].conv.weight.grad is not None
