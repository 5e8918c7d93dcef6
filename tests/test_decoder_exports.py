"""The export paths for a spec with a decoder: op blocks of every kind, a repeated cell, attention and weighted
fusion, a named width, an op's own activation. ONNX (run by onnxruntime) and torch.export against the torch
model; SavedModel and the Keras config round trip against the Keras model; at a size other than the planned one."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

import specgraph

SPEC: dict[str, Any] = {
    "name": "small_decoder",
    "activation": "relu",
    "filters": {2: 8, 3: 16, 4: 16, 5: 24},
    "stem": {"conv": {"filters": 8, "kernel": 3, "stride": 2}, "pool": {"kernel": 3, "stride": 2},
             "blocks": [{"name": "r2", "level": 2, "type": "bottleneck"},
                        {"name": "r3", "level": 3, "type": "residual"},
                        {"name": "r4", "level": 4, "type": "mbconv"},
                        {"name": "r5", "level": 5, "type": "residual"}]},
    "blocks": [
        {"name": "p6", "level": 6, "inputs": ["r5"], "filters": "fpn", "fusion": "sum",
         "ops": [{"op": "conv", "kernel": 1, "bias": True}, {"op": "norm"}, {"op": "maxpool"}]},
    ],
    "cells": [{
        "name": "cell", "repeats": 2, "inputs": ["r3", "r4", "r5", "p6"], "outputs": ["c3", "c4", "c5", "c6"],
        "blocks": [
            {"name": "c5", "level": 5, "inputs": ["p6", "r5"], "fusion": "attention", "filters": "fpn",
             "ops": [{"op": "act", "activation": "swish"}, {"op": "separable_conv", "bias": True}, {"op": "norm"}],
             "output": True},
            {"name": "c4", "level": 4, "inputs": ["r4", "c5"], "filters": "fpn",
             "ops": [{"op": "act"}, {"op": "conv", "bias": True}, {"op": "norm"}], "output": True},
            {"name": "c3", "level": 3, "inputs": ["r3", "c4"], "filters": "fpn",
             "ops": [{"op": "act", "activation": "swish"}, {"op": "separable_conv"}, {"op": "norm"}], "output": True},
            {"name": "c6", "level": 6, "inputs": ["p6", "c3", "c5"], "filters": "fpn",
             "ops": [{"op": "act"}, {"op": "conv", "kernel": 3, "bias": True}], "output": True},
        ],
    }],
    "fusion": {"method": "weighted"},
    "resample": {"pool_kernel": "stride+1"},
    "endpoints": {"min_level": 3, "max_level": 6, "conv": False},
    "variants": {"v": {"widths": {"fpn": 12}}},
}
OTHER = (80, 112)  # not the planned size


@pytest.fixture(scope="module")
def plan() -> specgraph.Plan:
    return specgraph.plan(SPEC, None, (64, 96))


def _rel(a: Any, b: Any) -> float:
    return float(np.abs(np.asarray(a) - np.asarray(b)).max() / (np.abs(np.asarray(b)).max() or 1.0))


torch = pytest.importorskip("torch")


@pytest.fixture(scope="module")
def torch_model(plan: specgraph.Plan) -> Any:
    model = specgraph.compile(plan, backend="torch").eval()
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, t in model.state_dict().items():
            if name.endswith("running_var"):
                t.copy_(0.5 + torch.rand(t.shape, generator=generator))
            elif name.endswith(("running_mean", "bias", "fusion_weights")):
                t.copy_(torch.rand(t.shape, generator=generator))
    return model


def test_bilinear_upsampling_by_hand() -> None:
    """Both backends' bilinear upsampling of [[0, 1], [2, 3]] to 4x4 with half-pixel centres: source coordinate
    (i + 0.5) / 2 - 0.5, clamped, so each axis reads [0, 0.25, 0.75, 1] of the way and out = 2 * row + column."""
    from specgraph_torch._layers import UpsampleBilinear

    axis = np.array([0.0, 0.25, 0.75, 1.0], np.float32)
    want = 2 * axis[:, None] + axis[None, :]
    x = np.array([[0.0, 1.0], [2.0, 3.0]], np.float32)
    got = UpsampleBilinear(2, 2)(torch.from_numpy(x)[None, None], (16, 16))[0, 0].numpy()  # level 2 of 16: 4
    np.testing.assert_allclose(got, want, atol=1e-6)
    tf = pytest.importorskip("tensorflow")
    from specgraph_tensorflow._runtime import Upsample

    got = Upsample(2, 2, "bilinear")([tf.constant(x[None, :, :, None]), tf.zeros((1, 16, 16, 3))])
    np.testing.assert_allclose(got.numpy()[0, :, :, 0], want, atol=1e-6)


@pytest.mark.parametrize("up", ["nearest", "bilinear"])
def test_onnx_runs_in_onnxruntime_at_another_size(torch_model: Any, tmp_path: Any, up: str) -> None:
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    import specgraph_torch

    if up == "bilinear":
        source = torch_model
        torch_model = specgraph.compile(specgraph.plan({**SPEC, "resample": {**SPEC["resample"], "up": up}}, None,
                                                       (64, 96)), backend="torch").eval()
        torch_model.load_state_dict(source.state_dict())
    path = specgraph_torch.to_onnx(torch_model, tmp_path / "decoder.onnx", torch.randn(1, 3, 64, 96))
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x = torch.randn(2, 3, *OTHER)
    with torch.no_grad():
        want = {k: v.numpy() for k, v in torch_model(x).items()}
    got = dict(zip([o.name for o in session.get_outputs()], session.run(None, {"images": x.numpy()}), strict=True))
    assert sorted(got) == [f"level_{k}" for k in sorted(want)]
    assert max(_rel(got[f"level_{k}"], want[k]) for k in want) <= 1e-4


def test_torch_export_at_another_size(torch_model: Any) -> None:
    import specgraph_torch

    program = specgraph_torch.export(torch_model, torch.randn(1, 3, 160, 192))
    x = torch.randn(2, 3, 161, 193)
    with torch.no_grad():
        want = torch_model(x)
    got = program.module()(x)
    assert max(_rel(got[k].detach().numpy(), want[k].numpy()) for k in want) <= 1e-5


@pytest.mark.slow
def test_savedmodel_and_keras_config(plan: specgraph.Plan, torch_model: Any, tmp_path: Any) -> None:
    tf = pytest.importorskip("tensorflow")
    import specgraph_tensorflow as sgt
    import specgraph_torch

    model = sgt.compile(plan)
    sgt.load_structural(model, specgraph_torch.to_structural(torch_model))
    x = np.random.default_rng(1).standard_normal((2, *OTHER, 3)).astype(np.float32)
    want = {k: v.numpy() for k, v in model(x, training=False).items()}
    with torch.no_grad():
        out = torch_model(torch.from_numpy(x).permute(0, 3, 1, 2))
    from_torch = {k: v.permute(0, 2, 3, 1).numpy() for k, v in out.items()}
    assert max(_rel(want[k], from_torch[k]) for k in want) <= 1e-4
    rebuilt = sgt.SpecgraphModel.from_config(model.get_config())
    assert rebuilt.plan.hash == model.plan.hash
    rebuilt.set_weights(model.get_weights())
    assert max(_rel(rebuilt(x, training=False)[k].numpy(), want[k]) for k in want) == 0.0
    sgt.export_saved_model(model, str(tmp_path / "saved"))
    out = tf.saved_model.load(str(tmp_path / "saved")).signatures["serving_default"](images=tf.constant(x))
    assert max(_rel(out[f"level_{k}"].numpy(), want[k]) for k in want) <= 1e-5
