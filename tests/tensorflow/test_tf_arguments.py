"""Every public function of specgraph_tensorflow names a bad argument (ArgumentError), never a framework error."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import specgraph_tensorflow as sgt

import specgraph

PLAN = specgraph.plan("spinenet_mobile", "49XS", 64)

CASES: list[tuple[str, Callable[[], Any], str]] = [
    ("compile", lambda: sgt.compile(None), "compile(plan)"),
    ("compile-option", lambda: sgt.compile(PLAN, use_sync_bn="no"), "use_sync_bn"),
    ("serving_function", lambda: sgt.serving_function(None), "model"),
    ("export_saved_model", lambda: sgt.export_saved_model("model", "/tmp/x"), "model"),
    ("to_tflite", lambda: sgt.to_tflite(None, (64, 64)), "model"),
    ("weights_dict", lambda: sgt.weights_dict(None), "model"),
    ("export_npz", lambda: sgt.export_npz(None, "/tmp/x.npz"), "model"),
    ("load_weights", lambda: sgt.load_weights(None, {}), "model"),
    ("xla_function", lambda: sgt.xla_function(None), "model"),
    ("emit", lambda: sgt.emit("plan", {}), "plan"),
]


@pytest.mark.parametrize(("case", "call", "argument"), CASES, ids=[c[0] for c in CASES])
def test_bad_argument_is_named(case: str, call: Callable[[], Any], argument: str) -> None:
    with pytest.raises(specgraph.ArgumentError) as info:
        call()
    assert argument in str(info.value), str(info.value)
    assert isinstance(info.value.problems[0], specgraph.Problem)
