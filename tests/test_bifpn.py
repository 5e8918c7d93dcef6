"""ResNet-50 + BiFPN as a spec (specs/resnet_bifpn.toml): EfficientDet's repeated weighted cell, equal to the
``effdet`` package's ``BiFpn`` (a PyTorch port of google/automl's) for tf_efficientdet_d0..d3 in parameters on the
same input levels, and, with effdet's weights mapped from its state dict, in outputs; torch <-> TF agreement.

The reference is effdet itself, built here; the EfficientNet-input counts are the figures measured on these
machines (../shared/reference/families-reference.md).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

import specgraph

VARIANTS = ["d0", "d1", "d2", "d3"]
# effdet's BiFpn parameters + BN running statistics, on EfficientNet-B0..B3's levels 3..5 (measured).
EFFICIENTNET_INPUTS = {"d0": ((40, 112, 320), 196_281 + 3_840), "d1": ((40, 112, 320), 390_972 + 6_688),
                       "d2": ((48, 120, 352), 708_159 + 10_304), "d3": ((48, 136, 384), 1_559_474 + 17_280)}
SIZE = (128, 256)  # non-square; effdet's feature sizes halve exactly (its upsampling is by a scale factor)


def _decoder_params(plan: specgraph.Plan) -> int:
    blocks = {n.name for n in plan.nodes if n.kind == "block"}
    return sum(r.params for r in specgraph.stats(plan).nodes if r.name in blocks)


@pytest.mark.parametrize("variant", VARIANTS)
def test_counts_on_efficientnet_levels_equal_the_reference(variant: str) -> None:
    """The same decoder on a stand-in stage chain whose levels 3..5 have EfficientNet-B0..B3's channels (residual
    stages, so a stage's width is its filters): its blocks' parameters are effdet's measured figures."""
    channels, want = EFFICIENTNET_INPUTS[variant]
    data = specgraph.load("resnet_bifpn").to_dict()
    data["filters"] = {2: 16, **dict(zip((3, 4, 5), channels, strict=True))}
    for block in data["stem"]["blocks"]:
        block["type"] = "residual"
    plan = specgraph.plan(specgraph.load(data), variant, (512, 512))
    assert _decoder_params(plan) == want


def test_plan_is_the_bifpn_cell() -> None:
    """Hand-read from effdet's "bifpn_fa" nodes (feat_level, inputs_offsets): offsets 0..4 are P3..P7, 5.. the
    nodes; fast normalised fusion, swish -> separable 3x3 conv (bias) -> norm; P6 from a projected, pooled P5."""
    plan = specgraph.plan("resnet_bifpn", "d0", (256, 512))
    plan.lint()
    node = plan.node
    want = {"n5": (6, ["p6", "p7"]), "n6": (5, ["res5", "n5"]), "n7": (4, ["res4", "n6"]), "n8": (3, ["res3", "n7"]),
            "n9": (4, ["res4", "n7", "n8"]), "n10": (5, ["res5", "n6", "n9"]), "n11": (6, ["p6", "n5", "n10"]),
            "n12": (7, ["p7", "n11"])}
    for name, (level, sources) in want.items():
        n = node(f"bifpn_1/{name}")
        own = {"n5", "n6", "n7", "n8", "n9", "n10", "n11"}
        assert n.level == level and n.fusion == "weighted"
        assert [e.source for e in n.inputs] == [f"bifpn_1/{s}" if s in own else s for s in sources]
        assert [op.describe() for op in n.ops] == ["act swish", "sepconv 3x3 64->64", "norm"]
    assert [op.describe() for op in node("bifpn_1/n9").inputs[0].ops] == ["conv 1x1 1024->64"]  # projected
    assert [op.describe() for op in node("bifpn_1/n9").inputs[2].ops] == ["maxpool 3x3/s2"]  # kernel = stride + 1
    assert [op.describe() for op in node("bifpn_2/n9").inputs[0].ops] == []  # later repetitions: 64 already
    assert [op.describe() for op in node("p6").ops] == ["conv 1x1 2048->64", "norm", "maxpool 3x3/s2"]
    assert node("p6").fused_level == 5 and node("p7").fused_level == 6
    assert len([n for n in plan.nodes if n.name.startswith("bifpn_")]) == 3 * 8
    assert {level: node(name).inputs[0].source for level, name in plan.endpoints} == {
        "3": "bifpn_3/n8", "4": "bifpn_3/n9", "5": "bifpn_3/n10", "6": "bifpn_3/n11", "7": "bifpn_3/n12"}


@pytest.mark.parametrize(("edit", "path", "words"), [
    (lambda t: t.replace("widths = { fpn = 112 }", "widths = { fp = 112 }"), "cells[0].blocks[0].filters",
     "not in the `widths` of variant(s) d2"),
    (lambda t: t.replace("widths = { fpn = 112 }", "widths = { fp = 112 }"), "blocks[0].filters",
     "add `widths = { fpn = ... }` to each"),
    (lambda t: t.replace('{ op = "norm" }, { op = "maxpool"', '{ op = "norm", activation = "swish" }, { op = '
                         '"maxpool"'), "blocks[0].ops[1]", "op 'norm' takes no activation"),
    (lambda t: t.replace('{ op = "act" }', '{ op = "act", activation = "swisher" }', 1),
     "cells[0].blocks[0].ops[0].activation", "unknown activation 'swisher'"),
    (lambda t: t.replace('pool_kernel = "stride+1"', 'pool_kernel = "stride+2"'), "resample.pool_kernel",
     "'stride+1'"),
])
def test_bad_edits_are_located(tmp_path: Any, edit: Any, path: str, words: str,
                               assert_bad_edit_is_located: Any) -> None:
    assert_bad_edit_is_located(tmp_path, "bifpn", edit, path, words, "d0", (128, 128), backbone="resnet")


@pytest.mark.parametrize("fmt", ["toml", "yaml", "json"])
def test_spec_round_trips_through_text(fmt: str) -> None:
    """Named widths, op activations and the pool kernel survive writing."""
    spec = specgraph.load("resnet_bifpn")
    again = specgraph.load(spec.dumps(fmt) + "\n")
    assert again == spec
    assert specgraph.plan(again, "d3", (128, 128)).hash == specgraph.plan(spec, "d3", (128, 128)).hash


# --- the torch backend against effdet itself ---

torch = pytest.importorskip("torch")


def _effdet(variant: str) -> tuple[Any, Any]:
    """effdet's BiFpn with tf_efficientdet_<variant>'s settings on ResNet-50's levels 3..5, and its fpn config."""
    efficientdet = pytest.importorskip("effdet.efficientdet")
    from effdet import get_efficientdet_config
    from effdet.config.fpn_config import get_fpn_config

    config = get_efficientdet_config(f"tf_efficientdet_{variant}")
    config.image_size = SIZE
    levels = [{"num_chs": c, "reduction": r} for c, r in ((512, 8), (1024, 16), (2048, 32))]
    return efficientdet.BiFpn(config, levels).eval(), get_fpn_config(config.fpn_name, min_level=3, max_level=7)


def _from_effdet(plan: specgraph.Plan, state: dict[str, Any], fpn_config: Any) -> dict[str, Any]:
    """effdet's BiFpn state dict as our torch state-dict keys, by structure: p6 is effdet's ``resample.3``
    (projection conv + bn); repetition r's k-th cell node is ``cell.<r-1>.fnode.<k>``, its j-th input's
    projection ``combine.resample.<inputs_offsets[j]>``, its fusion weights ``combine.edge_weights``, its
    separable conv and norm ``after_combine.conv.{conv_dw, conv_pw, bn}``."""
    out: dict[str, Any] = {}

    def norm(ours: str, theirs: str) -> None:
        for attr in ("weight", "bias", "running_mean", "running_var"):
            out[f"{ours}.{attr}"] = state[f"{theirs}.{attr}"]

    out["nodes.p6.ops.0.conv.weight"] = state["resample.3.conv.conv.weight"]
    out["nodes.p6.ops.0.conv.bias"] = state["resample.3.conv.conv.bias"]
    norm("nodes.p6.ops.1", "resample.3.conv.bn")
    cells = [n for n in plan.nodes if n.name.startswith("bifpn_")]
    per_cell = len(fpn_config.nodes)
    assert len(cells) % per_cell == 0
    for i, node in enumerate(cells):
        rep, k = divmod(i, per_cell)
        theirs = f"cell.{rep}.fnode.{k}"
        offsets = fpn_config.nodes[k]["inputs_offsets"]
        assert len(offsets) == len(node.inputs)
        for j, (edge, offset) in enumerate(zip(node.inputs, offsets, strict=True)):
            if edge.ops and edge.ops[0].op == "conv":
                resample = f"{theirs}.combine.resample.{offset}.conv"
                out[f"nodes.{node.name}.inputs.{j}.ops.0.conv.weight"] = state[f"{resample}.conv.weight"]
                out[f"nodes.{node.name}.inputs.{j}.ops.0.conv.bias"] = state[f"{resample}.conv.bias"]
                norm(f"nodes.{node.name}.inputs.{j}.ops.0.norm", f"{resample}.bn")
        out[f"nodes.{node.name}.fusion_weights"] = state[f"{theirs}.combine.edge_weights"]
        out[f"nodes.{node.name}.ops.1.depthwise.conv.weight"] = state[f"{theirs}.after_combine.conv.conv_dw.weight"]
        out[f"nodes.{node.name}.ops.1.pointwise.conv.weight"] = state[f"{theirs}.after_combine.conv.conv_pw.weight"]
        out[f"nodes.{node.name}.ops.1.pointwise.conv.bias"] = state[f"{theirs}.after_combine.conv.conv_pw.bias"]
        norm(f"nodes.{node.name}.ops.2", f"{theirs}.after_combine.conv.bn")
    return out


@pytest.mark.parametrize("variant", VARIANTS)
def test_counts_equal_effdet(variant: str) -> None:
    reference, _ = _effdet(variant)
    want = sum(p.numel() for p in reference.parameters()) + sum(
        b.numel() for name, b in reference.named_buffers() if not name.endswith("num_batches_tracked"))
    plan = specgraph.plan("resnet_bifpn", variant, SIZE)
    assert _decoder_params(plan) == want
    model = specgraph.compile(plan, backend="torch")
    decoder = {n.name for n in plan.nodes if n.kind == "block"}
    assert sum(t.numel() for key, t in model.state_dict().items()
               if key.split(".")[1] in decoder and not key.endswith("num_batches_tracked")) == want


@pytest.mark.parametrize("variant", ["d0", "d2"])
def test_outputs_equal_effdet(variant: str) -> None:
    """effdet's weights (random, BN statistics too) mapped into our model; effdet's BiFpn run on our model's own
    ResNet stage outputs gives our outputs at every level."""
    reference, fpn_config = _effdet(variant)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, t in reference.state_dict().items():
            if t.dtype.is_floating_point:
                base = 1.0 if name.endswith(("running_var", "bn.weight")) else 0.0
                t.copy_(base + 0.1 * torch.randn(t.shape, generator=generator))
                if name.endswith("running_var"):
                    t.abs_()
    plan = specgraph.plan("resnet_bifpn", variant, SIZE)
    model = specgraph.compile(plan, backend="torch").eval()
    mapped = _from_effdet(plan, reference.state_dict(), fpn_config)
    decoder = {n.name for n in plan.nodes if n.kind == "block"}
    assert set(mapped) == {k for k in model.state_dict() if k.split(".")[1] in decoder
                           and not k.endswith("num_batches_tracked")}
    model.load_state_dict(mapped, strict=False)
    stages: dict[int, Any] = {}
    for level in (3, 4, 5):
        model.nodes[f"res{level}"].register_forward_hook(lambda m, i, o, level=level: stages.__setitem__(level, o))
    images = torch.randn(2, 3, *SIZE, generator=generator)
    with torch.no_grad():
        ours = model(images)
        theirs = reference([stages[3], stages[4], stages[5]])
    assert len(theirs) == 5
    for level, want in zip(range(3, 8), theirs, strict=True):
        got = ours[str(level)]
        assert got.shape == want.shape
        assert float((got - want).abs().max() / want.abs().max()) <= 1e-4, level


@pytest.mark.slow
def test_torch_and_tensorflow_agree() -> None:
    """The TF backend with the torch model's weights (shared names): swish decoder on a relu backbone, separable
    convs, weighted fusion, pooled inputs, all within 1e-4."""
    pytest.importorskip("specgraph_tensorflow")
    plan = specgraph.plan("resnet_bifpn", "d1", SIZE)
    torch_backend, tf_backend = specgraph.get_backend("torch"), specgraph.get_backend("tensorflow")
    model = torch_backend.compile(plan).eval()
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, t in model.state_dict().items():
            if name.endswith("running_var"):
                t.copy_(0.5 + torch.rand(t.shape, generator=generator))
            elif name.endswith(("running_mean", "fusion_weights")) or name.endswith(".bias"):
                t.copy_(torch.rand(t.shape, generator=generator))
    keras = tf_backend.compile(plan)
    tf_backend.load_structural(keras, torch_backend.to_structural(model))
    images = np.random.default_rng(2).standard_normal((2, 3, *SIZE)).astype(np.float32)
    a, b = torch_backend.predict(model, images), tf_backend.predict(keras, images)
    assert sorted(a) == sorted(b) == ["3", "4", "5", "6", "7"]
    for level in a:
        assert float(np.abs(a[level] - b[level]).max() / np.abs(b[level]).max()) <= 1e-4, level
