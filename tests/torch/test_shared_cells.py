"""Shared cell weights in the torch backend: one module per shared block, run by every repetition."""

from __future__ import annotations

import copy
from pathlib import Path

import tomllib
import torch
from specgraph_torch import count_parameters, emitted_model, optimize_for_inference

import specgraph
from specgraph._codegen import emit

DATA = Path(__file__).parents[1] / "data"
SIZE = (64, 96)


def _plans() -> tuple[specgraph.Plan, specgraph.Plan]:
    data = tomllib.loads((DATA / "shared_cells.toml").read_text(encoding="utf-8"))
    unshared = copy.deepcopy(data)
    for cell in unshared["cells"]:
        cell["shared"] = False
    return (specgraph.plan(specgraph.load(data), input_size=SIZE),
            specgraph.plan(specgraph.load(unshared), input_size=SIZE))


def _randomised(plan: specgraph.Plan) -> torch.nn.Module:
    torch.manual_seed(0)
    model = specgraph.compile(plan, backend="torch")
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)  # fusion weights and norms away from their initial values
    return model


def test_the_shared_model_is_the_unshared_one_with_the_first_repetitions_weights_everywhere() -> None:
    shared_plan, unshared_plan = _plans()
    shared = _randomised(shared_plan)
    assert count_parameters(shared) == specgraph.stats(shared_plan).params
    assert shared.nodes["pyramid_3/u4"] is shared.nodes["pyramid_1/u4"]
    unshared = specgraph.compile(unshared_plan, backend="torch")
    unshared.load_state_dict(shared.state_dict())  # every repetition's keys hold the first repetition's tensors
    assert count_parameters(unshared) == specgraph.stats(unshared_plan).params > count_parameters(shared)
    images = torch.randn(2, 3, *SIZE)
    shared.eval(), unshared.eval()
    with torch.no_grad():
        ours, theirs = shared(images), unshared(images)
    for level in ours:
        torch.testing.assert_close(ours[level], theirs[level], rtol=0, atol=0)


def test_a_shared_weight_trains_on_the_sum_of_its_repetitions_gradients() -> None:
    shared_plan, unshared_plan = _plans()
    shared = _randomised(shared_plan)
    unshared = specgraph.compile(unshared_plan, backend="torch")
    unshared.load_state_dict(shared.state_dict())
    images = torch.randn(2, 3, *SIZE)
    for model in (shared, unshared):
        model.train()
        sum(out.square().mean() for out in model(images).values()).backward()
    grads = dict(unshared.named_parameters())
    for name, param in shared.named_parameters():  # each once, under its owner's (first repetition's) name
        node = name.split(".")[1]
        cell, _, block = node.partition("/")
        if cell.startswith(("recur_", "pyramid_")):
            family, repeats = cell.rsplit("_", 1)[0], 2 if cell.startswith("recur_") else 3
            expected = sum(grads[name.replace(node, f"{family}_{r}/{block}")].grad for r in range(1, repeats + 1))
        else:
            expected = grads[name].grad
        torch.testing.assert_close(param.grad, expected, rtol=1e-4, atol=1e-6, msg=name)


def test_the_emitted_source_and_the_fused_path_run_the_shared_weights() -> None:
    plan, _ = _plans()
    model = _randomised(plan).eval()
    source = emit(plan, "torch")
    assert "self.nodes['pyramid_2/t4'] = self.nodes['pyramid_1/t4']" in source
    emitted = emitted_model(source, model)
    assert count_parameters(emitted) == count_parameters(model)
    images = torch.randn(2, 3, *SIZE)
    with torch.no_grad():
        expected, got, fused = model(images), emitted(images), optimize_for_inference(model)(images)
    for level in expected:
        torch.testing.assert_close(got[level], expected[level], rtol=0, atol=0)
        torch.testing.assert_close(fused[level], expected[level], rtol=1e-4, atol=1e-4)
