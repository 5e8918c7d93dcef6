"""torch.export, ONNX (run in onnxruntime) and BN folding reproduce the eager model (fusion: test_fused.py)."""

from __future__ import annotations

import pytest
import specgraph_torch
import torch
from torch import nn

import specgraph


def _model(spec: str, variant: str, size: int = 128, seed: int = 0) -> specgraph_torch.SpecgraphNet:
    """A model with non-trivial BN statistics, so that folding them is a real test."""
    torch.manual_seed(seed)
    plan = specgraph.plan(specgraph.load(spec), variant=variant, input_size=(size, size))
    model = specgraph_torch.compile(plan).eval()
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            with torch.no_grad():
                m.running_mean.normal_(0.0, 0.1)
                m.running_var.uniform_(0.5, 1.5)
                m.weight.uniform_(0.5, 1.5)
                m.bias.normal_(0.0, 0.1)
    return model


def _max_rel(out: dict[str, torch.Tensor] | list, ref: dict[str, torch.Tensor]) -> float:
    values = [o if isinstance(o, torch.Tensor) else torch.from_numpy(o)
              for o in (out.values() if isinstance(out, dict) else out)]
    return max(float((o - r).abs().max() / r.abs().max()) for o, r in zip(values, ref.values(), strict=True))


@pytest.mark.slow
def test_torch_export_matches_eager():
    model = _model("spinenet", "49S")
    x = torch.randn(2, 3, 128, 128)
    with torch.no_grad():
        ref = model(x)
    program = specgraph_torch.export(model, x)
    assert isinstance(program, torch.export.ExportedProgram)
    with torch.no_grad():
        out = program.module()(x)
    assert list(out) == list(ref)
    assert _max_rel(out, ref) <= 1e-6


@pytest.mark.slow
@pytest.mark.parametrize(("spec", "variant"), [("spinenet", "49S"), ("spinenet_mobile", "49XS")])
def test_onnx_runs_in_onnxruntime(tmp_path, spec, variant):
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    model = _model(spec, variant)
    x = torch.randn(2, 3, 128, 128)
    with torch.no_grad():
        ref = model(x)
    path = specgraph_torch.to_onnx(model, tmp_path / "model.onnx", x)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [o.name for o in session.get_outputs()] == [f"level_{k}" for k in ref]
    out = session.run(None, {"images": x.numpy()})
    assert _max_rel(out, ref) <= 1e-4


@pytest.mark.parametrize(("spec", "variant"), [("spinenet", "49S"), ("spinenet_mobile", "49XS")])
def test_optimize_for_inference_folds_bn(spec, variant):
    model = _model(spec, variant)
    fast = specgraph_torch.optimize_for_inference(model, fuse=False)
    assert isinstance(fast, specgraph_torch.SpecgraphNet)
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in fast.modules())
    assert any(isinstance(m, nn.BatchNorm2d) for m in model.modules())  # the original is untouched
    weight = fast.nodes["stem"].ops[0].conv.weight
    assert weight.is_contiguous(memory_format=torch.channels_last)
    x = torch.randn(2, 3, 128, 192)
    with torch.no_grad():
        ref, out = model(x), fast(x)
    assert _max_rel(out, ref) <= 1e-4
