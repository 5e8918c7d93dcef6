"""The torch units built from the plan's unit ops: submodules are the ops' roles, the eager unit
against hand-written formulas, the fused unit against the eager one for every block shape, the Model
Garden names in Model Garden's order, and the emitted source made of the backend's own layers."""

from __future__ import annotations

import ast

import pytest
import torch
import torch.nn.functional as F
from specgraph_torch import onednn_available
from specgraph_torch._blocks import make_unit
from specgraph_torch._emit import _MODULE_NAMES, _layers_source
from specgraph_torch._fused import _Unit
from specgraph_torch._layers import BlockUnit, ConvNormAct, SqueezeExcite
from specgraph_torch._ops import make_activation
from specgraph_torch._weights import modelgarden_names
from torch import nn

import specgraph
from specgraph import BackendError, Unit
from specgraph._codegen import emit


def _norm(channels: int) -> nn.Module:
    return nn.BatchNorm2d(channels, eps=1e-3)


def _randomise(module: nn.Module, seed: int = 0) -> nn.Module:
    gen = torch.Generator().manual_seed(seed)
    for m in module.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=gen) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
            m.weight.data.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
            m.bias.data.copy_(torch.randn(m.num_features, generator=gen) * 0.1)
        if isinstance(m, nn.Conv2d) and m.bias is not None:
            m.bias.data.copy_(torch.randn(m.bias.shape, generator=gen) * 0.5)
    return module.eval()


def _unit(unit: Unit, activation: str = "relu", rate: float = 0.0) -> BlockUnit:
    return _randomise(make_unit(unit, _norm, lambda: make_activation(activation), rate))


# Every block shape the recipes make: projection or identity shortcut, stride 1 or 2, mbconv with
# and without expansion, squeeze-excitation and residual add.
UNITS = {
    "bottleneck projection s2": Unit("bottleneck", 16, 8, 32, 2, (15, 13), (8, 7), projection=True),
    "bottleneck identity": Unit("bottleneck", 32, 8, 32, 1, (15, 13), (15, 13)),
    "residual identity": Unit("residual", 16, 16, 16, 1, (15, 13), (15, 13)),
    "residual projection s2": Unit("residual", 8, 16, 16, 2, (15, 13), (8, 7), projection=True),
    "mbconv expand se residual": Unit("mbconv", 16, 16, 16, 1, (15, 13), (15, 13), expand=True,
                                      expand_channels=48, se_channels=4),
    "mbconv expand residual": Unit("mbconv", 16, 16, 16, 1, (15, 13), (15, 13), expand=True, expand_channels=32),
    "mbconv se s2": Unit("mbconv", 16, 16, 24, 2, (15, 13), (8, 7), se_channels=4, residual=False),
    "mbconv plain s2": Unit("mbconv", 16, 16, 24, 2, (15, 13), (8, 7), residual=False),
}


@pytest.mark.parametrize("name", list(UNITS))
def test_submodules_are_the_weighted_ops_roles(name: str) -> None:
    unit = UNITS[name]
    module = _unit(unit)
    weighted = [role for role, m in module.named_children() if isinstance(m, ConvNormAct | SqueezeExcite)]
    assert weighted == [step.role for step in unit.weighted_ops]
    prefixes = {key.split(".")[0] for key in module.state_dict()}
    assert prefixes == {step.role for step in unit.weighted_ops}
    joins = [step.op.op for step in unit.ops if step.path == "join"]
    assert [kind for kind, _ in module.joins] == joins
    assert hasattr(module, "act") == ("activation" in joins)


def test_every_unit_of_the_builtin_models_is_its_weighted_ops() -> None:
    for family, variant in (("spinenet", "49S"), ("spinenet_mobile", "49XS")):
        plan = specgraph.plan(specgraph.load(family), variant, 128)
        model = specgraph.compile(plan, backend="torch")
        for node in plan.nodes:
            for k, unit in enumerate(node.units):
                module = model.nodes[node.name].units[k]
                assert [r for r, m in module.named_children() if isinstance(m, ConvNormAct | SqueezeExcite)] \
                    == [step.role for step in unit.weighted_ops], (node.name, k)


def _bn(y: torch.Tensor, conv_norm: ConvNormAct) -> torch.Tensor:
    n = conv_norm.norm
    return F.batch_norm(y, n.running_mean, n.running_var, n.weight, n.bias, False, 0.0, n.eps)


def test_residual_unit_against_its_formula() -> None:
    u = _unit(UNITS["residual identity"])
    x = torch.randn(2, 16, 15, 13)
    y = F.relu(_bn(F.conv2d(x, u.conv1.conv.weight, padding=1), u.conv1))
    want = F.relu(_bn(F.conv2d(y, u.conv2.conv.weight, padding=1), u.conv2) + x)
    with torch.no_grad():
        assert torch.allclose(u(x), want, atol=1e-5)


def test_mbconv_with_squeeze_excitation_against_its_formula() -> None:
    u = _unit(UNITS["mbconv se s2"])
    x = torch.randn(2, 16, 15, 13)
    # Depthwise 3x3 stride 2, TF SAME: 15 rows pad (1, 1), 13 columns (1, 1); no expansion.
    y = F.relu(_bn(F.conv2d(F.pad(x, (1, 1, 1, 1)), u.depthwise.conv.weight, stride=2, groups=16), u.depthwise))
    s = F.relu(F.conv2d(y.mean(dim=(2, 3), keepdim=True), u.se.reduce.weight, u.se.reduce.bias))
    gate = F.relu6(F.conv2d(s, u.se.expand.weight, u.se.expand.bias) + 3.0) * 0.16667
    want = _bn(F.conv2d(y * gate, u.project.conv.weight), u.project)  # linear bottleneck: no add, no act
    with torch.no_grad():
        got = u(x)
    assert got.shape == (2, 24, 8, 7)
    assert torch.allclose(got, want, atol=1e-5)


def test_stochastic_depth_only_where_the_unit_adds() -> None:
    assert _unit(UNITS["mbconv expand residual"], rate=0.3).drop.rate == 0.3
    assert _unit(UNITS["mbconv plain s2"], rate=0.3).drop.rate == 0.0
    torch.manual_seed(0)
    u = _unit(UNITS["residual identity"], rate=0.5).train()
    x = torch.randn(64, 16, 5, 5)
    with torch.no_grad():
        out = u(x)
    # A dropped sample is relu(0 + x): its branch is gone.
    assert any(torch.equal(out[i], F.relu(x[i])) for i in range(64))


@pytest.mark.parametrize("onednn", [False, True] if onednn_available() else [False])
@pytest.mark.parametrize("activation", ["relu", "swish"])
@pytest.mark.parametrize("name", list(UNITS))
def test_fused_unit_equals_the_eager_unit(name: str, activation: str, onednn: bool) -> None:
    eager = _unit(UNITS[name], activation)
    fused = _Unit(eager, onednn)
    assert set(dict(fused.named_children())) == {step.role for step in UNITS[name].weighted_ops}
    for batch in (1, 3):  # batch 1: a squeeze-excitation gate scales the next kernel instead of the map
        for layout in (torch.contiguous_format, torch.channels_last):
            x = torch.randn(batch, UNITS[name].in_channels, 15, 13).contiguous(memory_format=layout)
            with torch.no_grad():
                want = eager(x)
                got = fused(x)
                got_in_place = fused(x.clone(), True)  # the unit may write into its own input
            assert torch.allclose(got, want, atol=1e-4, rtol=1e-4), (batch, layout)
            assert torch.allclose(got_in_place, want, atol=1e-4, rtol=1e-4), (batch, layout)


@pytest.mark.parametrize("onednn", [False, True] if onednn_available() else [False])
def test_fused_unit_runs_joins_its_last_op_cannot_host(onednn: bool) -> None:
    """Op lists no recipe makes: a last conv with its own activation before the add, and a
    squeeze-excitation last; the fused unit then adds and activates on its own."""
    from specgraph_torch._ops import ACTIVATIONS

    conv_act_last = [("conv1", "branch", "conv", 8, 8, 3, 1, 1, True, True, False), ("add", "join", "add"),
                     ("act", "join", "activation")]
    se_last = [("shortcut", "shortcut", "conv", 8, 8, 1, 1, 1, True, False, False),
               ("conv1", "branch", "conv", 8, 8, 1, 1, 1, True, True, False),
               ("se", "branch", "squeeze_excite", 8, 2, "relu", "sigmoid"), ("add", "join", "add")]
    for ops in (conv_act_last, se_last):
        eager = _randomise(BlockUnit(ops, _norm, lambda: make_activation("swish"), ACTIVATIONS))
        fused = _Unit(eager, onednn)
        assert fused._host == -1 and len(fused._joins) == len(eager.joins)
        x = torch.randn(2, 8, 9, 9)
        with torch.no_grad():
            assert torch.allclose(fused(x), eager(x), atol=1e-4, rtol=1e-4)


def test_unknown_unit_type_is_a_backend_error() -> None:
    with pytest.raises(BackendError, match="no unit type 'nonesuch'"):
        make_unit(Unit("nonesuch", 8, 8, 8, 1, (4, 4), (4, 4)), _norm, nn.Identity, 0.0)  # type: ignore[arg-type]
    with pytest.raises(BackendError, match="stochastic depth rate"):
        make_unit(UNITS["residual identity"], _norm, nn.Identity, 1.0)


def test_model_garden_names_follow_model_garden_creation_order() -> None:
    """Within a block, Keras numbers convs and norms in creation order; the squeeze-excitation's
    convs are created last (written out by hand from Model Garden's nn_blocks)."""
    plan = specgraph.plan(specgraph.load("spinenet"), "49S", 128)
    first = [(e.inner, e.var, e.torch_key.removeprefix("nodes.stem1.units.0."))
             for e in modelgarden_names(plan) if e.torch_key.startswith("nodes.stem1.units.0.")]
    assert [(inner, key) for inner, var, key in first if var in ("kernel", "gamma")] == [
        ("conv2d", "shortcut.conv.weight"), ("batch_normalization", "shortcut.norm.weight"),
        ("conv2d_1", "conv1.conv.weight"), ("batch_normalization_1", "conv1.norm.weight"),
        ("conv2d_2", "conv2.conv.weight"), ("batch_normalization_2", "conv2.norm.weight"),
        ("conv2d_3", "conv3.conv.weight"), ("batch_normalization_3", "conv3.norm.weight")]
    mobile = specgraph.plan(specgraph.load("spinenet_mobile"), "49XS", 128)
    unit = [(e.inner, e.var, e.torch_key.removeprefix("nodes.stem1.units.0."))
            for e in modelgarden_names(mobile) if e.torch_key.startswith("nodes.stem1.units.0.")]
    assert [(inner, key) for inner, var, key in unit if var in ("kernel", "depthwise_kernel", "gamma")] == [
        ("conv2d", "expand.conv.weight"), ("batch_normalization", "expand.norm.weight"),
        ("depthwise_conv2d", "depthwise.conv.weight"), ("batch_normalization_1", "depthwise.norm.weight"),
        ("conv2d_1", "project.conv.weight"), ("batch_normalization_2", "project.norm.weight"),
        ("squeeze_excitation/conv2d_2", "se.reduce.weight"), ("squeeze_excitation/conv2d_3", "se.expand.weight")]


@pytest.mark.parametrize(("family", "variant"), [("spinenet", "49S"), ("spinenet_mobile", "49XS")])
def test_emitted_source_is_the_backends_layers_and_the_wiring(family: str, variant: str) -> None:
    source = emit(specgraph.plan(specgraph.load(family), variant, 128), "torch")
    assert _layers_source() in source  # the layers verbatim, not a copy kept by hand
    tree = ast.parse(source)
    defined = set()
    for stmt in tree.body:
        if isinstance(stmt, ast.FunctionDef | ast.ClassDef):
            defined.add(stmt.name)
        elif isinstance(stmt, ast.Assign):
            defined.update(t.id for t in stmt.targets if isinstance(t, ast.Name))
    network = [n.name for n in tree.body if isinstance(n, ast.ClassDef)][-1]
    assert defined - {network} <= _MODULE_NAMES
    # The units are the plan's ops as literals: one BlockUnit per unit, no unit class per block type.
    calls = {n.func.id for n in ast.walk(tree) if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)}
    assert "BlockUnit" in calls and not calls & {"Bottleneck", "Residual", "MBConv"}
