"""Every public function of specgraph_torch names a bad argument (ArgumentError), never a framework error."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import specgraph_torch as st
import torch

import specgraph


@pytest.fixture(scope="module")
def model() -> st.SpecgraphModel:
    return st.compile(specgraph.plan("spinenet_mobile", "49XS", 64))


CASES: list[tuple[str, Callable[[Any], Any], str]] = [
    ("compile", lambda m: st.compile(None), "compile(plan)"),
    ("compile-option", lambda m: st.compile(m.plan, norm_epsilon=float("inf")), "norm_epsilon"),
    ("fold_batch_norm", lambda m: st.fold_batch_norm(None), "unit"),
    ("optimize_for_inference", lambda m: st.optimize_for_inference("model"), "model"),
    ("export-model", lambda m: st.export(None, torch.zeros(1, 3, 64, 64)), "model"),
    ("export-example", lambda m: st.export(m, [[0.0]]), "example"),
    ("to_onnx-path", lambda m: st.to_onnx(m, None, torch.zeros(1, 3, 64, 64)), "path"),
    ("to_structural", lambda m: st.to_structural(None), "model"),
    ("structural_name", lambda m: st.structural_name(3), "key"),
    ("load_structural", lambda m: st.load_structural(m, 3), "arrays"),
    ("load_modelgarden_weights", lambda m: st.load_modelgarden_weights(m, None), "source"),
    ("modelgarden_names", lambda m: st.modelgarden_names(None), "plan"),
    ("modelgarden_kwargs", lambda m: st.modelgarden_kwargs("spinenet"), "plan"),
    ("reuse_freed_memory", lambda m: st.reuse_freed_memory("1GB"), "limit_bytes"),
    ("emit", lambda m: st.emit(None, {}), "plan"),
]


@pytest.mark.parametrize(("case", "call", "argument"), CASES, ids=[c[0] for c in CASES])
def test_bad_argument_is_named(model: st.SpecgraphModel, case: str, call: Callable[[Any], Any], argument: str) -> None:
    with pytest.raises(specgraph.ArgumentError) as info:
        call(model)
    assert argument in str(info.value), str(info.value)
    assert isinstance(info.value.problems[0], specgraph.Problem)
