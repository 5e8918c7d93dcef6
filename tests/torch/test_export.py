"""torch.export, ONNX (run in onnxruntime) and BN folding reproduce the eager model (fusion: test_fused.py)."""

from __future__ import annotations

import pytest
import specgraph_torch
import torch
from torch import nn

import specgraph


def _model(spec: str, variant: str, size: int = 128, seed: int = 0) -> specgraph_torch.SpecgraphModel:
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


# Three shapes for one artefact: batch 1 and 3, sides that are not multiples of 128 (nor even), one
# at the smallest side a dynamic export admits (2**7 + 1).
SIZES = [(1, 200, 333), (3, 256, 256), (2, 129, 511)]


@pytest.fixture(scope="module")
def model_49s() -> specgraph_torch.SpecgraphModel:
    return _model("spinenet", "49S")


@pytest.fixture(scope="module")
def program_49s(model_49s) -> torch.export.ExportedProgram:
    return specgraph_torch.export(model_49s, torch.randn(1, 3, 128, 128))


@pytest.mark.slow
def test_torch_export_is_one_program_for_any_batch_and_size(model_49s, program_49s):
    """Traced once (from a 1x128x128 example, raised to the dynamic minimum); equal to eager at 3 shapes
    (49S: 128 channels per level, Model Garden's endpoints_num_filters)."""
    assert isinstance(program_49s, torch.export.ExportedProgram)
    (images,) = [n for n in program_49s.graph.nodes if n.op == "placeholder" and n.name == "images"]
    assert all(isinstance(d, torch.SymInt) for i, d in enumerate(images.meta["val"].shape) if i != 1)
    module = program_49s.module()
    for n, h, w in SIZES:
        x = torch.randn(n, 3, h, w)
        with torch.no_grad():
            ref, out = model_49s(x), module(x)
        assert list(out) == list(ref)
        assert [tuple(t.shape) for t in out.values()] == [(n, 128, -(-h // 2**k), -(-w // 2**k)) for k in range(3, 8)]
        assert _max_rel(out, ref) <= 1e-6, (n, h, w)


@pytest.mark.slow
def test_torch_export_refuses_shapes_outside_its_range(program_49s):
    with pytest.raises(Exception, match=r"height|width|128|129"):  # torch's own input check
        program_49s.module()(torch.randn(1, 3, 128, 200))


@pytest.mark.slow
def test_static_torch_export_is_fixed_to_the_example(model_49s):
    x = torch.randn(2, 3, 128, 160)
    program = specgraph_torch.export(model_49s, x, dynamic=False)
    with torch.no_grad():
        assert _max_rel(program.module()(x), model_49s(x)) <= 1e-6
    with pytest.raises(Exception, match=r"160|expected"):
        program.module()(torch.randn(2, 3, 128, 192))


def test_dynamic_shapes_bounds(model_49s):
    assert specgraph_torch.min_dynamic_side(model_49s) == 129  # P7: 2**7 + 1, every level >= 2 pixels
    (dims,) = specgraph_torch.dynamic_shapes(model_49s)
    assert sorted(dims) == [0, 2, 3]


def test_jit_trace_is_the_torchscript_path(model_49s, tmp_path):
    """TorchScript: ``torch.jit.script`` does not compile the module (see backends/torch/README.md);
    a trace does, fixed to the traced shape, and survives ``torch.jit.save`` / ``load`` exactly."""
    x = torch.randn(1, 3, 160, 192)
    with torch.no_grad():
        traced = torch.jit.trace(model_49s, x, strict=False)
        torch.jit.save(traced, tmp_path / "model.pt")
        loaded = torch.jit.load(tmp_path / "model.pt")
        ref, out = model_49s(x), loaded(x)
    assert list(out) == list(ref)
    assert all(torch.equal(out[k], ref[k]) for k in ref)


@pytest.mark.slow
@pytest.mark.parametrize(("spec", "variant"), [("spinenet", "49S"), ("spinenet_mobile", "49XS")])
def test_onnx_runs_in_onnxruntime_at_any_size(tmp_path, spec, variant):
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    model = _model(spec, variant)
    path = specgraph_torch.to_onnx(model, tmp_path / "model.onnx", torch.randn(1, 3, 128, 128))
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [o.name for o in session.get_outputs()] == [f"level_{k}" for k in range(3, 8)]
    assert session.get_inputs()[0].shape == ["batch", 3, "height", "width"]
    for n, h, w in SIZES:
        x = torch.randn(n, 3, h, w)
        with torch.no_grad():
            ref = model(x)
        out = session.run(None, {"images": x.numpy()})
        assert [o.shape for o in out] == [tuple(t.shape) for t in ref.values()]
        assert _max_rel(out, ref) <= 1e-4, (n, h, w)


@pytest.mark.parametrize(("spec", "variant"), [("spinenet", "49S"), ("spinenet_mobile", "49XS")])
def test_optimize_for_inference_folds_bn(spec, variant):
    model = _model(spec, variant)
    fast = specgraph_torch.optimize_for_inference(model, fuse=False)
    assert isinstance(fast, specgraph_torch.SpecgraphModel)
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in fast.modules())
    assert any(isinstance(m, nn.BatchNorm2d) for m in model.modules())  # the original is untouched
    weight = fast.nodes["stem"].ops[0].conv.weight
    assert weight.is_contiguous(memory_format=torch.channels_last)
    x = torch.randn(2, 3, 128, 192)
    with torch.no_grad():
        ref, out = model(x), fast(x)
    assert _max_rel(out, ref) <= 1e-4
