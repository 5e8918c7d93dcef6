"""A decoder spec compiled alone (it takes {level: features}) is the decoder part of its composition."""

from __future__ import annotations

import pytest
import torch

import specgraph

SIZE = (100, 150)  # non-square, no power of two: every upsampling crops


def _seeded(model: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Random weights and BN statistics far from their defaults, so a mis-wired node would show."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            if tensor.is_floating_point():
                base = 1.0 if name.endswith(("running_var", ".weight")) and tensor.dim() == 1 else 0.0
                tensor.copy_(base + 0.1 * torch.randn(tensor.shape, generator=gen))
    return model.eval()


@pytest.mark.parametrize(("composed", "variant", "decoder", "decoder_variant", "backbone_levels"), [
    ("resnet_fpn", "50-separable", "fpn", "separable", (2, 5)),
    ("resnet_bifpn", "d1", "bifpn", "d1", (2, 5)),
    ("resnet_nasfpn", "3", "nasfpn", "3", (2, 5)),
])
def test_the_decoder_alone_on_the_backbones_outputs_is_the_composition(composed: str, variant: str, decoder: str,
                                                                         decoder_variant: str,
                                                                         backbone_levels: tuple[int, int]) -> None:
    whole = _seeded(specgraph.compile(specgraph.plan(composed, variant, SIZE), backend="torch"), 0)
    backbone = specgraph.compile(specgraph.plan("resnet", "50", SIZE, *backbone_levels), backend="torch").eval()
    alone = specgraph.compile(specgraph.plan(decoder, decoder_variant, SIZE), backend="torch").eval()
    weights = whole.state_dict()  # the same node names: the composition's decoder nodes are the decoder's
    for part in (backbone, alone):
        own = part.state_dict()
        assert set(own) <= set(weights)
        part.load_state_dict({k: weights[k] for k in own})
    images = torch.randn(2, 3, *SIZE, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        want = whole(images)
        got = alone(backbone(images))
    assert sorted(got) == sorted(want) == ["3", "4", "5", "6", "7"]
    for level in want:
        assert got[level].shape == want[level].shape
        torch.testing.assert_close(got[level], want[level], rtol=0, atol=0)


def test_a_decoder_is_called_on_features_by_level() -> None:
    model = specgraph.compile(specgraph.plan("fpn", "default", SIZE), backend="torch").eval()
    with pytest.raises(specgraph.BackendError, match=r"call it on \{level: features\} with levels 3, 4, 5"):
        model(torch.zeros(1, 3, *SIZE))
    with pytest.raises(specgraph.BackendError, match=r"no features at level\(s\) 5"):
        model({"3": torch.zeros(1, 512, 13, 19), "4": torch.zeros(1, 1024, 7, 10)})
    import specgraph_torch
    from specgraph_torch.detection import TorchvisionBackbone

    with pytest.raises(specgraph.ArgumentError,
                       match=r"example: fpn is a decoder: expected \{level: NCHW feature map\} at levels 3, 4, 5"):
        specgraph_torch.export(model, torch.zeros(1, 3, *SIZE))
    with pytest.raises(specgraph.BackendError, match="TorchvisionBackbone: fpn is a decoder"):
        TorchvisionBackbone(model)


def test_a_decoder_emits_fuses_and_exports_like_a_network(tmp_path) -> None:
    """The emitted source, the fused inference path, torch.export (any batch) and ONNX of BiFPN D0 alone give
    the model's outputs on its feature maps."""
    import onnxruntime
    import specgraph_torch

    from specgraph._codegen import emit

    plan = specgraph.plan("bifpn", "d0", SIZE)
    model = _seeded(specgraph.compile(plan, backend="torch"), 2)
    gen = torch.Generator().manual_seed(3)
    features = {level: torch.randn(2, plan.node(name).channels, *plan.node(name).size, generator=gen)
                for level, name in plan.inputs}
    with torch.no_grad():
        want = model(features)
        emitted = specgraph_torch.emitted_model(emit(plan, "torch"), model)(features)
        fused = specgraph_torch.optimize_for_inference(model)(features)
    program = specgraph_torch.export(model, {k: v[:1] for k, v in features.items()})  # traced at batch 1
    exported = program.module()(features)
    onnx = specgraph_torch.to_onnx(model, tmp_path / "bifpn.onnx", {k: v[:1] for k, v in features.items()})
    session = onnxruntime.InferenceSession(str(onnx))
    assert [i.name for i in session.get_inputs()] == ["features_3", "features_4", "features_5"]
    ran = dict(zip(["3", "4", "5", "6", "7"], session.run(None, {f"features_{k}": v.numpy()
                                                                 for k, v in features.items()}), strict=True))
    for level in want:
        scale = float(want[level].abs().max())
        torch.testing.assert_close(emitted[level], want[level], rtol=0, atol=0)
        torch.testing.assert_close(exported[level], want[level], rtol=0, atol=1e-5 * scale)
        assert float((fused[level] - want[level]).abs().max()) <= 1e-4 * scale
        assert float(abs(ran[level] - want[level].numpy()).max()) <= 1e-4 * scale
