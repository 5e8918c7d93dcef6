"""The fused inference lowering (``optimize_for_inference`` / ``InferenceNet``) computes what the plain model does.

Every fast path is checked against the plain eval-mode ``SpecgraphModel`` (≤ 1e-4 relative):
oneDNN post-op activations, residual / block sums inside convs, copy-free SAME padding for
depthwise convs and max-pools (even sizes: asymmetric; odd sizes: symmetric), 1x1 convs moved
in front of upsamples (crop sizes included), squeeze-excitation folded into the projection
kernel at batch 1, and the plain-PyTorch fallback used off CPU.
"""

from __future__ import annotations

import copy
import io
import subprocess
import sys

import pytest
import specgraph_torch
import torch
import torch.nn.functional as F
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from specgraph_torch import InferenceNet
from specgraph_torch._fused import FusedConv, _Block, _MaxPool
from specgraph_torch._ops import ACTIVATIONS, ConvNormAct, MaxPoolSame, make_activation
from torch import nn

import specgraph
from specgraph.testing import valid_specs

TOL = 1e-4


def _randomize_bn(model: nn.Module, seed: int) -> None:
    """Non-trivial BN statistics and fusion weights, so folding and fusing are real tests."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn(m.num_features, generator=gen) * 0.1)
                m.running_var.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
                m.weight.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
                m.bias.copy_(torch.randn(m.num_features, generator=gen) * 0.1)
            elif hasattr(m, "fusion_weights"):
                m.fusion_weights.copy_(torch.rand(m.fusion_weights.shape, generator=gen) * 2 - 0.5)


def _model(spec: str | dict, variant: str | None, size: tuple[int, int], seed: int = 0,
           **options: object) -> specgraph_torch.SpecgraphModel:
    torch.manual_seed(seed)
    plan = specgraph.plan(specgraph.load(spec), variant=variant, input_size=size)
    model = specgraph_torch.compile(plan, **options).eval()
    _randomize_bn(model, seed)
    return model


def _max_rel(out: dict[str, torch.Tensor], ref: dict[str, torch.Tensor]) -> float:
    assert list(out) == list(ref)
    return max(float((out[k] - ref[k]).abs().max() / ref[k].abs().max().clamp_min(1e-12)) for k in ref)


def _check(model: specgraph_torch.SpecgraphModel, x: torch.Tensor, **kwargs: object) -> InferenceNet:
    fast = InferenceNet(model, **kwargs)
    with torch.no_grad():
        ref = model(x)
        out = fast(x)
    for level in ref:
        assert out[level].shape == ref[level].shape
    assert _max_rel(out, ref) <= TOL
    return fast


@pytest.mark.parametrize(("spec", "variant", "size", "batch"), [
    ("spinenet", "49S", (128, 192), 2),       # even: asymmetric SAME everywhere
    ("spinenet", "49S", (129, 191), 1),       # odd: symmetric SAME, crops after upsampling
    ("spinenet_mobile", "49XS", (128, 128), 1),  # batch 1: SE folded into the projection kernel
    ("spinenet_mobile", "49XS", (130, 97), 2),   # batch 2: SE gate multiplied; mixed parities
    ("spinenet_lite", None, (96, 160), 1),       # weighted fusion, swish
])
def test_inference_net_matches_plain_model(spec, variant, size, batch):
    model = _model(spec, variant, size)
    fast = _check(model, torch.randn(batch, 3, *size))
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in fast.modules())
    assert any(isinstance(m, nn.BatchNorm2d) for m in model.modules())  # the source is untouched


def test_optimize_for_inference_is_the_fused_path():
    model = _model("spinenet_mobile", "49XS", (96, 96))
    fast = specgraph_torch.optimize_for_inference(model)
    assert isinstance(fast, InferenceNet)
    assert fast.onednn == specgraph_torch.onednn_available()
    assert fast.nodes["stem"].ops[0].weight.is_contiguous(memory_format=torch.channels_last)
    with pytest.raises(RuntimeError, match="inference-only"):
        fast.train()


@pytest.mark.parametrize("onednn", [True, False])
@pytest.mark.parametrize("channels_last", [True, False])
def test_both_kernels_and_layouts(onednn, channels_last):
    if onednn and not specgraph_torch.onednn_available():
        pytest.skip("this torch build has no oneDNN")  # CI's CPU wheel has it
    model = _model("spinenet", "49S", (64, 96), seed=1)
    fast = _check(model, torch.randn(1, 3, 64, 96), onednn=onednn, channels_last=channels_last)
    assert fast.onednn is onednn


@pytest.mark.parametrize("activation", sorted(set(ACTIVATIONS) - {"linear", "identity"}))
def test_every_activation(activation):
    model = _model("spinenet_mobile", "49XS", (64, 64), activation=activation)
    _check(model, torch.randn(1, 3, 64, 64))


def test_float64_after_the_copy_moves():
    """``.double()`` drops cached kernels; off float32 the fallback kernels run."""
    model = _model("spinenet_mobile", "49XS", (64, 64))
    fast = InferenceNet(model)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        fast(x.float())  # fills the per-size kernel cache in float32
        fast = fast.double()
        out, ref = fast(x.double()), model.double()(x.double())
    assert out["3"].dtype == torch.float64
    assert _max_rel(out, ref) <= 1e-6  # BN was folded in float32


@pytest.mark.parametrize("depthwise", [True, False])
@pytest.mark.parametrize(("kernel", "stride"), [(1, 1), (1, 2), (3, 1), (3, 2), (5, 2), (7, 2)])
@pytest.mark.parametrize("act", ["relu", "elu", None])
def test_fused_conv_matches_conv_norm_act_at_every_size(depthwise, kernel, stride, act):
    """Sizes 1..11 cover every (before, after) SAME split, with and without a post-sum."""
    torch.manual_seed(kernel * 10 + stride)
    channels = 6
    norm = nn.BatchNorm2d(channels).eval()
    _randomize_bn(norm, 3)
    unit = ConvNormAct(channels, channels, kernel, stride, groups=channels if depthwise else 1, norm=norm).eval()
    fused = FusedConv.fold(unit, act, specgraph_torch.onednn_available())
    post = make_activation(act) if act else nn.Identity()
    for height in range(1, 12):
        for width in (height, 12 - height):
            x = torch.randn(1, channels, height, width).contiguous(memory_format=torch.channels_last)
            with torch.no_grad():
                ref = unit(x)
                add = torch.randn_like(ref)
                torch.testing.assert_close(fused(x), post(ref), rtol=1e-5, atol=1e-5)
                torch.testing.assert_close(fused(x, add), post(ref + add), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("act", ["relu", "hard_swish", None])
@pytest.mark.parametrize("layout", ["channels_last", "contiguous"])
def test_small_pointwise_convs_run_as_one_matrix_product(act, layout, monkeypatch):
    """1x1 convs up to _GEMM_MAX_MACS are ``rows @ kernel + bias`` on the channels-last memory."""
    if not specgraph_torch.onednn_available():
        pytest.skip("this torch build has no oneDNN")
    torch.manual_seed(5)
    unit = ConvNormAct(48, 40, 1, 1, norm=nn.BatchNorm2d(40)).eval()
    _randomize_bn(unit, 5)
    fused = FusedConv.fold(unit, act, onednn=True)
    post = make_activation(act) if act else nn.Identity()
    products = []
    monkeypatch.setattr(torch, "addmm", lambda *a, _mm=torch.addmm: products.append(1) or _mm(*a))
    fmt = torch.channels_last if layout == "channels_last" else torch.contiguous_format
    for batch, size in ((1, 3), (2, 7), (1, 45)):  # 45x45: 3.9 M MACs, just under the limit
        x = torch.randn(batch, 48, size, size).contiguous(memory_format=fmt)
        with torch.no_grad():
            ref = unit(x)
            add = torch.randn_like(ref).contiguous(memory_format=fmt)
            gate = torch.rand(40)
            scaled = fused.weight * gate.reshape(-1, 1, 1, 1)  # a per-call kernel, as squeeze-excitation passes
            y = fused(x)
            assert y.is_contiguous(memory_format=torch.channels_last) or layout == "contiguous"
            torch.testing.assert_close(y, post(ref), rtol=1e-5, atol=1e-5)
            torch.testing.assert_close(fused(x, add), post(ref + add), rtol=1e-5, atol=1e-5)
            torch.testing.assert_close(fused(x, add, weight=scaled), post(
                F.conv2d(x, scaled, fused.bias) + add), rtol=1e-5, atol=1e-5)
    assert len(products) == (9 if layout == "channels_last" else 0)
    x = torch.randn(1, 48, 46, 46).contiguous(memory_format=torch.channels_last)  # 4.06 M MACs: oneDNN
    products.clear()
    with torch.no_grad():
        torch.testing.assert_close(fused(x), post(unit(x)), rtol=1e-5, atol=1e-5)
    assert not products


@pytest.mark.parametrize(("kernel", "stride"), [(3, 2), (3, 1), (2, 2), (5, 2), (5, 3)])
def test_max_pool_without_padding_copies(kernel, stride):
    ref_pool, pool = MaxPoolSame(kernel, stride), _MaxPool(kernel, stride)
    for height in range(1, 14):
        for width in (height, 14 - height):
            x = torch.randn(2, 3, height, width)
            torch.testing.assert_close(pool(x), ref_pool(x), rtol=0, atol=0)


def test_squeeze_excitation_folding_is_batch_one_only():
    """Batch 1 scales the kernel; a batch of 2 where each sample differs must not share a gate."""
    model = _model("spinenet_mobile", "49XS", (64, 64), seed=2)
    fast = InferenceNet(model)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        both = fast(x)
        singles = [fast(x[i:i + 1]) for i in range(2)]
        ref = model(x)
    for level in ref:
        torch.testing.assert_close(torch.cat([s[level] for s in singles]), ref[level], rtol=TOL, atol=TOL)
        torch.testing.assert_close(both[level], ref[level], rtol=TOL, atol=TOL)


def test_pointwise_convs_run_before_upsampling():
    """SpineNet-49S has ``1x1 -> up -> 1x1`` edges; the lowering runs both 1x1 convs first."""
    fast = InferenceNet(_model("spinenet", "49S", (64, 64)))
    chains = [c for node in fast.nodes.values() for c in getattr(node, "inputs", [])]
    ups = [c for c in chains if any(type(op).__name__ == "UpsampleNearest" for op in c.ops)]
    assert ups
    for chain in ups:
        kinds = [type(op).__name__ for op in chain.ops]
        assert kinds[-1] == "UpsampleNearest", kinds


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(valid_specs(), st.tuples(st.integers(20, 72), st.integers(20, 72)), st.integers(1, 2), st.integers(0, 99))
def test_random_specs(data, size, batch, seed):
    model = _model(data, "v", size, seed=seed)
    with pytest.MonkeyPatch.context() as monkeypatch:
        _watch_parents(monkeypatch)
        _check(model, torch.randn(batch, 3, *size))


def _watch_parents(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Make every block check that it leaves its parents' feature maps as it found them."""
    checked = []
    forward = _Block.forward

    def guarded(self, parents, image_hw):
        before = [p.clone() for p in parents]
        out = forward(self, parents, image_hw)
        for i, (p, b) in enumerate(zip(parents, before, strict=True)):
            assert torch.equal(p, b), f"a block overwrote its parent feature map {i}"
        checked.append(len(parents))
        return out

    monkeypatch.setattr(_Block, "forward", guarded)
    return checked


@pytest.mark.parametrize(("spec", "variant", "size"), [
    ("spinenet", "49S", (128, 192)), ("spinenet_mobile", "49XS", (384, 384)), ("spinenet_lite", None, (128, 128))])
def test_in_place_sums_never_touch_a_feature_map_another_block_reads(spec, variant, size, monkeypatch):
    """Residual and block sums are written into the addend only where it is the block's own scratch."""
    if not specgraph_torch.onednn_available():
        pytest.skip("this torch build has no oneDNN")
    model = _model(spec, variant, size, seed=3)
    calls = {"in place": 0, "copy": 0}
    for name, key in (("_convolution_pointwise_", "in place"), ("_convolution_pointwise", "copy")):
        packet = getattr(torch.ops.mkldnn, name)
        def counted(*args, _op=packet.binary, _key=key):
            calls[_key] += 1
            return _op(*args)
        monkeypatch.setattr(packet, "binary", counted)
    checked = _watch_parents(monkeypatch)
    _check(model, torch.randn(1, 3, *size))
    assert checked and calls["in place"] > 0  # the fast path is taken ...
    if spec == "spinenet":  # ... and not where the addend is a parent (a stem block reads the one before as is)
        assert calls["copy"] > 0


def test_fused_conv_writes_into_the_addend_only_when_told_it_is_scratch():
    if not specgraph_torch.onednn_available():
        pytest.skip("this torch build has no oneDNN")
    torch.manual_seed(0)
    conv = FusedConv(torch.randn(8, 4, 3, 3), torch.randn(8), 1, 1, "relu", onednn=True)  # 3x3: no GEMM
    x = torch.randn(1, 4, 6, 6).contiguous(memory_format=torch.channels_last)
    add = torch.randn(1, 8, 6, 6).contiguous(memory_format=torch.channels_last)
    expected = torch.relu(F.conv2d(x, conv.weight, conv.bias, padding=1) + add)
    kept = add.clone()
    y = conv(x, add)
    assert torch.equal(add, kept) and y.data_ptr() != add.data_ptr()
    torch.testing.assert_close(y, expected, rtol=1e-5, atol=1e-5)
    y = conv(x, add, add_is_scratch=True)
    assert y.data_ptr() == add.data_ptr()
    torch.testing.assert_close(y, expected, rtol=1e-5, atol=1e-5)
    plain = torch.randn(1, 8, 6, 6)  # not channels-last: summed from a copy, the addend stays
    kept = plain.clone()
    torch.testing.assert_close(conv(x, plain, add_is_scratch=True),
                               torch.relu(F.conv2d(x, conv.weight, conv.bias, padding=1) + kept),
                               rtol=1e-5, atol=1e-5)
    assert torch.equal(plain, kept)


def test_fallback_without_onednn_post_ops_matches():
    """The plain-PyTorch program (what runs on GPUs) is the same function."""
    model = _model("spinenet_lite", None, (64, 64), seed=4)
    x = torch.randn(1, 3, 64, 64)
    a, b = InferenceNet(model, onednn=False), InferenceNet(model)
    with torch.no_grad():
        assert _max_rel(a(x), b(x)) <= TOL


_RSS_PROBE = """
import sys, torch, specgraph_torch
if sys.argv[1] == "reuse":
    assert specgraph_torch.reuse_freed_memory()
def rss_mb():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096 / 2**20
before = rss_mb()
x = torch.ones(64 * 2**20 // 4)  # 64 MB, touched
del x
print(rss_mb() - before)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc allocator setting")
def test_reuse_freed_memory_keeps_freed_tensors_mapped():
    """Without it glibc unmaps a freed 64 MB tensor at once; with it the memory stays for reuse."""
    kept = {mode: float(subprocess.run([sys.executable, "-c", _RSS_PROBE, mode], capture_output=True, text=True,
                                       check=True).stdout.split()[-1]) for mode in ("default", "reuse")}
    assert kept["default"] < 16
    assert kept["reuse"] > 48


def test_loading_a_state_dict_refreshes_cached_kernels():
    """Grown depthwise kernels are cached per input size; new weights must not meet stale copies."""
    size = (64, 64)  # even: the depthwise resampling convs use grown kernels
    a, b = _model("spinenet_mobile", "49XS", size, seed=5), _model("spinenet_mobile", "49XS", size, seed=6)
    fast = InferenceNet(a)
    x = torch.randn(1, 3, *size)
    with torch.no_grad():
        fast(x)  # fills the cache with a's kernels
        fast.load_state_dict(InferenceNet(b).state_dict())
        assert _max_rel(fast(x), b(x)) <= TOL


def test_unknown_modules_get_a_clear_error():
    model = _model("spinenet_mobile", "49XS", (64, 64))
    model.nodes["stem"].ops.append(nn.ReLU())  # not a plan op
    with pytest.raises(specgraph.BackendError, match="cannot lower a ReLU op"):
        InferenceNet(model)


def test_prepacked_kernels_follow_the_input_shape_and_stay_out_of_copies():
    """oneDNN kernels are prepacked per input shape; a new batch or size, a deepcopy and a
    pickle round trip all still compute the plain model's function."""
    model = _model("spinenet_mobile", "49XS", (64, 64), seed=7)
    fast = InferenceNet(model)
    with torch.no_grad():
        _check_against(fast, model, torch.randn(1, 3, 64, 64))
        if fast.onednn:
            cached = [(w, gemm) for m in fast.modules() if isinstance(m, FusedConv)
                      for w, _, _, gemm in m._layouts.values()]
            assert any(gemm for _, gemm in cached) and any(not gemm for _, gemm in cached)
            assert all(w.is_mkldnn for w, gemm in cached if not gemm)
        _check_against(fast, model, torch.randn(2, 3, 64, 64))  # new batch: new packing
        _check_against(fast, model, torch.randn(1, 3, 72, 56))  # new size
        _check_against(copy.deepcopy(fast), model, torch.randn(1, 3, 64, 64))
        buffer = io.BytesIO()
        torch.save(fast, buffer)
        buffer.seek(0)
        _check_against(torch.load(buffer, weights_only=False), model, torch.randn(1, 3, 64, 64))


def _check_against(fast: InferenceNet, model: nn.Module, x: torch.Tensor) -> None:
    assert _max_rel(fast(x), model(x)) <= TOL
