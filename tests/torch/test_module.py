"""The torch module against hand-computed values: padding, pooling, upsampling, options, contracts."""

from __future__ import annotations

import math

import pytest
import specgraph_torch
import torch
import torch.nn.functional as F
from specgraph_torch._blocks import StochasticDepth
from specgraph_torch._ops import (
    ConvNormAct,
    MaxPoolSame,
    SyncBatchNorm2d,
    UpsampleNearest,
    hard_sigmoid,
    same_padding,
)
from torch import nn

import specgraph


@pytest.fixture(scope="module")
def plan_49s() -> specgraph.Plan:
    return specgraph.plan(specgraph.load("spinenet"), variant="49S", input_size=(128, 128))


@pytest.fixture(scope="module")
def plan_mobile() -> specgraph.Plan:
    return specgraph.plan(specgraph.load("spinenet_mobile"), variant="49XS", input_size=(128, 128))


@pytest.mark.parametrize(("size", "kernel", "stride", "expected"), [
    (256, 3, 2, (0, 1)),  # TF pads after on even input, not before
    (255, 3, 2, (1, 1)),
    (640, 7, 2, (2, 3)),
    (64, 3, 1, (1, 1)),
    (4, 1, 2, (0, 0)),
    (5, 3, 2, (1, 1)),
])
def test_same_padding(size, kernel, stride, expected):
    assert same_padding(size, kernel, stride) == expected


def test_stride2_conv_pads_after():
    conv = ConvNormAct(1, 1, 3, 2)
    x = torch.randn(1, 1, 6, 6)
    expected = F.conv2d(F.pad(x, (0, 1, 0, 1)), conv.conv.weight, stride=2)
    assert torch.allclose(conv(x), expected)
    symmetric = F.conv2d(x, conv.conv.weight, stride=2, padding=1)
    assert not torch.allclose(conv(x), symmetric)


def test_maxpool_pads_with_minus_infinity():
    x = -torch.arange(1.0, 17.0).reshape(1, 1, 4, 4)  # all negative: zero padding would win
    out = MaxPoolSame(3, 2)(x)
    # windows rows/cols {0,1,2} and {2,3} (+ one padded row/col after)
    assert out.flatten().tolist() == [-1.0, -3.0, -9.0, -11.0]


def test_upsample_repeats_then_crops_to_the_level_size():
    x = torch.arange(6.0).reshape(1, 1, 2, 3)
    # level 1 of a 3x5 image is 2x3 -> crop the x2 upsample (4x6) to 2x3 ... use level 0: 3x5
    out = UpsampleNearest(2, 0)(x, (3, 5))
    assert out.shape == (1, 1, 3, 5)
    expected = [[x[0, 0, i // 2, j // 2].item() for j in range(5)] for i in range(3)]
    assert out[0, 0].tolist() == expected


def test_hard_sigmoid_uses_model_garden_constant():
    assert hard_sigmoid(torch.tensor([0.0])).item() == pytest.approx(3 * 0.16667, abs=1e-7)
    assert hard_sigmoid(torch.tensor([10.0])).item() == pytest.approx(6 * 0.16667, abs=1e-6)


def test_outputs_for_any_input_size(plan_49s):
    model = specgraph_torch.compile(plan_49s).eval()
    with torch.no_grad():
        out = model(torch.randn(1, 3, 100, 150))
    assert list(out) == ["3", "4", "5", "6", "7"]
    for level, t in out.items():
        n = 2 ** int(level)
        assert t.shape == (1, 128, math.ceil(100 / n), math.ceil(150 / n))


def test_contracts(plan_49s, plan_mobile):
    model = specgraph_torch.compile(plan_49s)
    assert [(f.level, f.channels, f.stride) for f in model.feature_info] == [
        ("3", 128, 8), ("4", 128, 16), ("5", 128, 32), ("6", 128, 64), ("7", 128, 128)]
    shapes = model.output_shape()
    assert shapes["5"].channels == 128 and shapes["5"].stride == 32
    assert model.size_divisibility == 128
    assert model.out_channels == 128
    assert specgraph_torch.compile(plan_mobile).out_channels == 24


def test_entry_point_and_state_dict_names(plan_49s):
    assert "torch" in specgraph.available_backends()
    model = specgraph.compile(plan_49s, backend="torch")
    assert isinstance(model, specgraph_torch.SpecgraphModel)
    keys = set(model.state_dict())
    assert "nodes.stem.ops.0.conv.weight" in keys
    assert "nodes.sp13.inputs.0.ops.0.conv.weight" in keys
    assert "nodes.sp13.units.0.conv2.conv.weight" in keys
    assert "nodes.endpoint_3.ops.0.norm.running_var" in keys
    assert not any(k.startswith("nodes.sp16.") for k in keys)  # pruned
    assert not any(k.endswith(".conv.bias") for k in keys)  # no conv biases in SpineNet


def test_levels_replan_a_spec_and_must_match_a_plan(plan_49s):
    model = specgraph_torch.compile("spinenet", variant="49S", input_size=(128, 128), min_level=4)
    assert model.plan.min_level == 4 and [f.level for f in model.feature_info] == ["4", "5", "6", "7"]
    with pytest.raises(specgraph.BackendError, match="min_level"):
        specgraph_torch.compile(plan_49s, min_level=4)
    specgraph_torch.compile(plan_49s, min_level=3, max_level=7)  # agreeing is fine
    with pytest.raises(specgraph.BackendError, match="max_level"):
        specgraph.compile(plan_49s, backend="torch", max_level=6)


def test_bad_options(plan_49s):
    with pytest.raises(specgraph.BackendError, match="unknown torch backend option"):
        specgraph.compile(plan_49s, backend="torch", stochastic_depth=0.1)
    with pytest.raises(specgraph.BackendError, match="unknown activation"):
        specgraph_torch.compile(plan_49s, activation="nope")


def test_activation_and_norm_options(plan_49s):
    model = specgraph_torch.compile(plan_49s, activation="swish", norm_momentum=0.9, norm_epsilon=1e-5)
    norms = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    assert norms and all(m.momentum == pytest.approx(0.1) and m.eps == 1e-5 for m in norms)
    default = specgraph_torch.compile(plan_49s)
    assert all(m.momentum == pytest.approx(0.01) and m.eps == 1e-3 for m in default.modules()
               if isinstance(m, nn.BatchNorm2d))
    stem = model.nodes["stem"].ops[0].eval()
    x = torch.randn(1, 3, 64, 64)
    manual = F.silu(stem.norm(F.conv2d(F.pad(x, (2, 3, 2, 3)), stem.conv.weight, stride=2)))
    assert torch.allclose(stem(x), manual, atol=1e-6)


def test_sync_bn_option(plan_mobile):
    model = specgraph_torch.compile(plan_mobile, use_sync_bn=True)
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    # specgraph's own synchronized batch norm: torch's nn.SyncBatchNorm refuses CPU tensors (and DDP a CPU
    # module holding one); tests/torch/test_distributed.py checks it synchronises under DDP over gloo.
    assert norms and all(isinstance(m, SyncBatchNorm2d) for m in norms)


def test_stochastic_depth_schedule(plan_49s, plan_mobile):
    for plan in (plan_49s, plan_mobile):
        model = specgraph_torch.compile(plan, stochastic_depth_drop_rate=0.2)
        for node in plan.nodes:
            if node.kind not in ("block", "stem_block"):
                continue
            # Model Garden: block i (0-based) of 16 gets init_rate * (i + 1) / 16; stem blocks none.
            k = int(node.name[2:]) if node.kind == "block" else 0
            for unit, spec in zip(model.nodes[node.name].units, node.units, strict=True):
                expected = 0.2 * k / 16 if spec.residual else 0.0
                assert unit.drop.rate == pytest.approx(expected), node.name


def test_stochastic_depth_drops_whole_samples_in_training_only():
    torch.manual_seed(0)
    drop = StochasticDepth(0.5)
    x = torch.ones(200, 2, 3, 3)
    y = drop.train()(x)
    per_sample = y.flatten(1)
    kept = (per_sample == 2.0).all(dim=1)
    dropped = (per_sample == 0.0).all(dim=1)
    assert bool((kept | dropped).all())
    assert 60 < int(dropped.sum()) < 140
    assert torch.equal(drop.eval()(x), x)


def test_stochastic_depth_is_identity_in_eval(plan_mobile):
    plain = specgraph_torch.compile(plan_mobile).eval()
    dropping = specgraph_torch.compile(plan_mobile, stochastic_depth_drop_rate=0.9).eval()
    dropping.load_state_dict(plain.state_dict())
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        a, b = plain(x), dropping(x)
        torch.manual_seed(0)
        c = dropping.train()(x)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert any(not torch.allclose(a[k], c[k]) for k in a)


def _fan_in_std(fan_in: int) -> float:
    return math.sqrt(1.0 / fan_in)  # the std Keras VarianceScaling(fan_in, truncated) ends up with


def test_initialisers(plan_49s, plan_mobile):
    torch.manual_seed(0)
    model = specgraph_torch.compile(plan_49s)
    w = model.nodes["sp4"].units[0].conv2.conv.weight  # 3x3, 166 -> 166
    assert w.std().item() == pytest.approx(_fan_in_std(9 * 166), rel=0.02)
    assert w.abs().max().item() <= 2 * _fan_in_std(9 * 166) / 0.87962566103423978 + 1e-7
    bn = model.nodes["sp4"].units[0].conv2.norm
    assert torch.equal(bn.weight, torch.ones_like(bn.weight)) and torch.equal(bn.bias, torch.zeros_like(bn.bias))

    mobile = specgraph_torch.compile(plan_mobile)
    resample = mobile.nodes["sp3"].inputs[0].ops[0].conv.weight  # resampling depthwise, 14 channels
    limit = math.sqrt(6.0 / (9 * 14 + 9))  # Keras glorot on [3, 3, 14, 1]
    assert resample.abs().max().item() <= limit and resample.abs().max().item() > 0.8 * limit
    unit = mobile.nodes["sp6"].units[0]
    dw = unit.depthwise.conv.weight  # in-block depthwise: VarianceScaling with Keras fan_in 9*C
    assert dw.std().item() == pytest.approx(_fan_in_std(9 * dw.shape[0]), rel=0.1)
    assert torch.equal(unit.se.reduce.bias, torch.zeros_like(unit.se.reduce.bias))


def test_variance_scaling_draws_a_normal_truncated_at_two_std():
    """Against the truncated normal's tail masses, P(|z| > a given |z| <= 2), from the error function."""
    from specgraph_torch._ops import _TRUNC_STD, init_variance_scaling

    torch.manual_seed(3)
    weight = torch.empty(256, 256, 3, 3)  # ~590k draws
    init_variance_scaling(weight)
    sigma = math.sqrt(1.0 / (9 * 256)) / _TRUNC_STD  # the normal's std before truncation
    z = (weight / sigma).flatten()
    assert z.abs().max().item() <= 2.0 + 1e-6
    assert z.mean().item() == pytest.approx(0.0, abs=0.005)
    inside = math.erf(2.0 / math.sqrt(2.0))
    for a, tol in ((1.0, 0.003), (1.9, 0.001)):
        expected = (inside - math.erf(a / math.sqrt(2.0))) / inside  # 0.2848, 0.0125
        assert (z.abs() > a).float().mean().item() == pytest.approx(expected, abs=tol)
    assert weight.std().item() == pytest.approx(_fan_in_std(9 * 256), rel=0.005)


@pytest.mark.parametrize("activation", [None, "gelu", "leaky_relu", "linear"])
def test_pickle_save_load_and_deepcopy_round_trips_are_exact(plan_mobile, activation, tmp_path):
    """torch.save(model), multiprocessing and copy.deepcopy need a module without closures or lambdas."""
    import copy
    import pickle

    model = specgraph_torch.compile(plan_mobile, activation=activation).eval()
    fused = specgraph_torch.optimize_for_inference(model)
    x = torch.randn(1, 3, *plan_mobile.input_size)
    for net in (model, fused):
        expected = net(x)
        torch.save(net, tmp_path / "model.pt")
        copies = (torch.load(tmp_path / "model.pt", weights_only=False), copy.deepcopy(net),
                  pickle.loads(pickle.dumps(net)))
        for again in copies:
            got = again(x)
            assert all(torch.equal(got[k], expected[k]) for k in expected)
