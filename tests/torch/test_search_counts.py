"""Samples and mutations of a search space compile in the torch backend to the parameter count stats gives."""

from __future__ import annotations

import random

import torch
from specgraph_torch import count_parameters

import specgraph

SIZE = (128, 128)


def test_twenty_random_samples_and_mutations_have_the_parameter_count_stats_gives() -> None:
    space = specgraph.load("spinenet_space")
    samples = specgraph.sample(space, 1000, seed=0)
    chosen = random.Random(0).sample(range(len(samples)), 10)
    specs = [samples[i] for i in chosen] + [specgraph.mutate(samples[i], i, space)[0] for i in chosen]
    for spec in specs:
        plan = specgraph.plan(spec, input_size=SIZE)
        model = specgraph.compile(plan, backend="torch").eval()
        assert count_parameters(model) == specgraph.stats(plan).params, spec.name
        with torch.no_grad():
            out = model(torch.zeros(1, 3, *SIZE))
        assert sorted(out) == ["3", "4", "5", "6", "7"]
        assert all(out[k].shape[1] == 64 for k in out)  # the proxy's endpoints_num_filters
