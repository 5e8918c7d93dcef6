"""ResNet-50/101 as a spec (specs/resnet.toml): a stage chain with bare endpoints, equal to Model Garden's
``ResNet`` (official/vision/modeling/backbones/resnet.py) in parameters and, given its weights, outputs.

The expected counts are Model Garden's own ``count_params()``, measured on these machines
(../shared/reference/families-reference.md); the parity tests run Model Garden itself.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

import specgraph

# Model Garden ResNet(model_id) count_params(), BN moving statistics included.
MODELGARDEN_COUNTS = {"50": 23_561_152, "101": 42_605_504}
# Non-square, not a multiple of 32 (so SAME padding is asymmetric at strided convs), batch 2.
SIZE = (100, 150)


@pytest.mark.parametrize("variant", ["50", "101"])
def test_stats_equal_modelgarden(variant: str) -> None:
    assert specgraph.stats(specgraph.plan("resnet", variant, (640, 640))).params == MODELGARDEN_COUNTS[variant]


def test_plan_is_the_stage_table() -> None:
    """Hand-read from RESNET_SPECS[50]: stages of 3, 4, 6, 3 bottlenecks at levels 2..5, 64..512 filters,
    the first of each projecting (and striding, but at level 2); endpoints are the stages' outputs."""
    plan = specgraph.plan("resnet", "50", (640, 640))
    plan.lint()
    stages = [n for n in plan.nodes if n.kind == "stem_block"]
    assert [(n.name, n.level, len(n.units), n.channels) for n in stages] == [
        ("res2", 2, 3, 256), ("res3", 3, 4, 512), ("res4", 4, 6, 1024), ("res5", 5, 3, 2048)]
    for stage in stages:
        first, *rest = stage.units
        assert first.projection and first.stride == (1 if stage.level == 2 else 2)
        assert all(not u.projection and u.stride == 1 for u in rest)
    endpoints = {n.name: n for n in plan.nodes if n.kind == "endpoint"}
    assert [k for k, _ in plan.endpoints] == ["2", "3", "4", "5"]
    assert all(not n.ops for n in endpoints.values())  # no endpoint convs
    assert [endpoints[name].channels for _, name in plan.endpoints] == [256, 512, 1024, 2048]
    assert plan.endpoints_num_filters is None
    assert len(specgraph.plan("resnet", "101", (640, 640)).nodes[3].units) == 23  # res4 of ResNet-101


def test_drawn_with_its_stages() -> None:
    svg = specgraph.render_svg(specgraph.plan("resnet", "50", (256, 256)))
    for name in ("res2", "res3", "res4", "res5"):
        assert name in svg


@pytest.mark.parametrize(("edit", "path", "words"), [
    (lambda t: t.replace("repeats = { res4 = 23 }", "repeats = { res9 = 23 }"), 'variants."101".repeats.res9',
     "did you mean"),
    (lambda t: t.replace("conv = false", "conv = true"), 'variants."50".endpoints_num_filters', "conv = false"),
    (lambda t: t.replace("[filters]", 'blocks = [{ name = "top2", level = 2, type = "residual", inputs = ["res5"], '
                                      'output = true }]\n\n[filters]'), "blocks[0].output", "one output per level"),
    (lambda t: t.replace('name = "res5", level = 5', 'name = "res5", level = 7'), "stem.blocks[3].level",
     "one above"),
    (lambda t: t.replace("repeats = 6", "repeats = 0"), "stem.blocks[2].repeats", "greater than or equal to 1"),
])
def test_bad_edits_are_located(tmp_path: Any, edit: Any, path: str, words: str,
                               assert_bad_edit_is_located: Any) -> None:
    assert_bad_edit_is_located(tmp_path, "resnet", edit, path, words, "101" if "res9" in path else "50", (64, 64))


@pytest.mark.parametrize("fmt", ["toml", "yaml", "json"])
def test_spec_round_trips_through_text(fmt: str) -> None:
    """The new fields (stage repeats and outputs, bare endpoints, a variant's repeats table) survive writing."""
    spec = specgraph.load("resnet")
    again = specgraph.load(spec.dumps(fmt) + "\n")
    assert again == spec
    assert specgraph.plan(again, "101", (64, 64)).hash == specgraph.plan(spec, "101", (64, 64)).hash


# --- the backends against Model Garden itself ---

torch = pytest.importorskip("torch")  # torch before tensorflow: torchvision crashes when imported after it


@pytest.fixture(scope="module")
def modelgarden_resnet50() -> Any:
    """Model Garden's ResNet-50 at SIZE with random, non-trivial weights (BN statistics too)."""
    tf_keras = pytest.importorskip("tf_keras")
    resnet = pytest.importorskip("official.vision.modeling.backbones.resnet")
    model = resnet.ResNet(model_id=50, input_specs=tf_keras.layers.InputSpec(shape=[None, *SIZE, 3]))
    rng = np.random.default_rng(0)
    for w in model.weights:
        base = 1.0 if ("variance" in w.name or "gamma" in w.name) else 0.0
        w.assign(base + 0.1 * rng.standard_normal(w.shape).astype(np.float32))
    return model


@pytest.mark.slow
@pytest.mark.modelgarden
@pytest.mark.parametrize("backend", ["torch", "tensorflow"])
def test_outputs_equal_modelgarden(modelgarden_resnet50: Any, backend: str) -> None:
    plugin = specgraph.get_backend(backend)
    mg = modelgarden_resnet50
    assert mg.count_params() == MODELGARDEN_COUNTS["50"]
    images = np.random.default_rng(1).standard_normal((2, *SIZE, 3)).astype(np.float32)
    reference = {k: v.numpy() for k, v in mg(images, training=False).items()}
    model = plugin.compile(specgraph.plan("resnet", "50", SIZE))
    assert plugin.count_parameters(model) == MODELGARDEN_COUNTS["50"]
    before = plugin.predict(model, images.transpose(0, 3, 1, 2))
    plugin.load_modelgarden_weights(model, mg)
    after = plugin.predict(model, images.transpose(0, 3, 1, 2))
    assert sorted(after) == sorted(reference) == ["2", "3", "4", "5"]
    for level, ref in reference.items():
        got = after[level].transpose(0, 2, 3, 1)
        scale = float(np.abs(ref).max())
        assert float(np.abs(before[level].transpose(0, 2, 3, 1) - ref).max()) / scale > 1e-2  # not equal by chance
        assert float(np.abs(got - ref).max()) / scale <= 1e-4, (backend, level)


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["torch", "tensorflow"])
def test_resnet101_parameters_in_both_backends(backend: str) -> None:
    plugin = specgraph.get_backend(backend)
    model = plugin.compile(specgraph.plan("resnet", "101", (64, 64)))
    assert plugin.count_parameters(model) == MODELGARDEN_COUNTS["101"]


def test_torchvision_adapter_refuses_mixed_widths() -> None:
    """torchvision detectors take one ``out_channels``; ResNet's bare endpoints have four."""
    pytest.importorskip("specgraph_torch")
    from specgraph_torch.detection import TorchvisionBackbone

    model = specgraph.compile(specgraph.plan("resnet", "50", (64, 64)), backend="torch")
    assert model.out_channels is None
    # detectron2 / timm read the widths per level instead: stride 4..32, ResNet's 256..2048 channels
    assert model.feature_info.channels() == [256, 512, 1024, 2048]
    assert model.feature_info.reduction() == [4, 8, 16, 32]
    with pytest.raises(specgraph.BackendError) as info:
        TorchvisionBackbone(model)
    assert info.value.problems[0].path == "model"
    assert "2: 256, 3: 512, 4: 1024, 5: 2048" in str(info.value)


def _max_rel(out: dict[str, Any], ref: dict[str, Any]) -> float:
    return max(float(np.abs(np.asarray(out[k]) - ref[k]).max()) / float(np.abs(ref[k]).max()) for k in ref)


@pytest.mark.slow
def test_onnx_export_runs_at_another_size(tmp_path: Any) -> None:
    """The torch export path for a stage-style spec: one ONNX graph, named level_2..level_5, any size."""
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    import specgraph_torch

    model = specgraph.compile(specgraph.plan("resnet", "50", (64, 64)), backend="torch").eval()
    path = specgraph_torch.to_onnx(model, tmp_path / "resnet.onnx", torch.randn(1, 3, 64, 64))
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [o.name for o in session.get_outputs()] == [f"level_{k}" for k in range(2, 6)]
    x = torch.randn(2, 3, 100, 150)
    with torch.no_grad():
        ref = {k: v.numpy() for k, v in model(x).items()}
    out = dict(zip([str(k) for k in range(2, 6)], session.run(None, {"images": x.numpy()}), strict=True))
    assert _max_rel(out, ref) <= 1e-4


@pytest.mark.slow
def test_savedmodel_export(tmp_path: Any) -> None:
    tf = pytest.importorskip("tensorflow")
    import specgraph_tensorflow as sgt

    model = sgt.compile(specgraph.plan("resnet", "50", (64, 64)))
    sgt.export_saved_model(model, str(tmp_path / "saved"))
    x = np.random.default_rng(3).standard_normal((2, 100, 150, 3)).astype(np.float32)
    ref = {k: v.numpy() for k, v in model(x, training=False).items()}
    out = tf.saved_model.load(str(tmp_path / "saved")).signatures["serving_default"](images=tf.constant(x))
    assert sorted(out) == [f"level_{k}" for k in range(2, 6)]
    assert _max_rel({k: out[f"level_{k}"].numpy() for k in ref}, ref) <= 1e-5
