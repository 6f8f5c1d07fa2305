"""RetinaNet and Faster R-CNN with attention under channels_last + bf16 autocast (the options a GPU run turns on),
on the CPU: a training step gives finite losses and finite gradients for every trained weight. "aw+aa+se" and
"aw+aa+cbam" hold every layer type (tests/layers/test_option_matrix.py checks that they cover all parts)."""

from __future__ import annotations

import pytest
import torch

from aaconv.models import create_detector


@pytest.mark.parametrize("head", ["retinanet", "faster_rcnn"])
@pytest.mark.parametrize("variant", ["aw+aa+se", "aw+aa+cbam"])
def test_channels_last_bf16_training_step(head, variant):
    torch.manual_seed(0)
    model = create_detector(
        head, "resnet18", variant, num_classes=3, min_size=64, max_size=64, frozen_bn=False, fpn_channels=16
    )
    model = model.to(memory_format=torch.channels_last).train()
    images = [torch.rand(3, 64, 64), torch.rand(3, 48, 64)]
    targets = [
        {"boxes": torch.tensor([[4.0, 6.0, 40.0, 44.0]]), "labels": torch.tensor([1])},
        {"boxes": torch.tensor([[10.0, 2.0, 30.0, 40.0]]), "labels": torch.tensor([2])},
    ]
    with torch.autocast("cpu", torch.bfloat16):
        losses = model(images, targets)
    total = sum(losses.values())
    assert all(torch.isfinite(v) for v in losses.values()), losses
    total.backward()
    trained = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for _, p in trained)
    assert any(p.grad.abs().sum() > 0 for n, p in trained if "backbone.body.layer4" in n)  # reached the backbone
