"""torchvision's RetinaNet on a specgraph SpineNet-49S: a training step and an eval forward."""

from __future__ import annotations

import pytest
import specgraph_torch
import torch
from specgraph_torch.detection import TorchvisionBackbone, anchor_generator

import specgraph

torchvision = pytest.importorskip("torchvision")


@pytest.mark.slow
def test_retinanet_train_step_and_eval():
    from torchvision.models.detection import RetinaNet

    torch.manual_seed(0)
    plan = specgraph.plan(specgraph.load("spinenet"), variant="49S", input_size=(256, 256))
    backbone = TorchvisionBackbone(specgraph_torch.compile(plan))
    assert backbone.out_channels == 128
    model = RetinaNet(backbone, num_classes=3, min_size=256, max_size=256,
                      anchor_generator=anchor_generator(backbone), size_divisible=backbone.size_divisibility)
    images = [torch.rand(3, 256, 256), torch.rand(3, 200, 256)]
    targets = [
        {"boxes": torch.tensor([[10.0, 20.0, 120.0, 140.0], [50.0, 60.0, 250.0, 200.0]]),
         "labels": torch.tensor([1, 2])},
        {"boxes": torch.tensor([[30.0, 30.0, 90.0, 150.0]]), "labels": torch.tensor([0])},
    ]
    model.train()
    losses = model(images, targets)
    assert set(losses) == {"classification", "bbox_regression"}
    assert all(torch.isfinite(v) for v in losses.values())
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    optimizer.zero_grad()
    sum(losses.values()).backward()
    stem_grad = backbone.body.nodes["stem"].ops[0].conv.weight.grad
    assert stem_grad is not None and stem_grad.abs().sum() > 0
    optimizer.step()

    model.eval()
    model.score_thresh = 0.0  # an untrained head scores ~0.01 (its prior), below the 0.05 default
    with torch.no_grad():
        detections = model(images)
    assert len(detections) == 2
    for det in detections:
        assert set(det) == {"boxes", "scores", "labels"}
        assert det["boxes"].shape[1:] == (4,) and det["boxes"].shape[0] == det["scores"].shape[0] > 0
