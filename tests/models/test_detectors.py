"""Detectors: torchvision-exact counts, MnasNet feature indices, AA at variable sizes, backbone init options."""

import pytest
import torch
import torchvision
from torchvision.ops import FrozenBatchNorm2d

from aaconv.engine.checkpoint import save_checkpoint
from aaconv.errors import ConfigError
from aaconv.models import create_detector, create_model
from aaconv.models.detection import HEADS


def count(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def test_counts_match_torchvision():
    retina = create_detector("retinanet", "resnet50", frozen_bn=False)
    faster = create_detector("faster_rcnn", "resnet50", frozen_bn=False)
    assert count(retina) == 34_068_119
    assert count(faster) == 41_808_406
    reference = torchvision.models.detection.retinanet_resnet50_fpn(weights=None, weights_backbone=None)
    assert count(retina) == count(reference)


def test_mnasnet_feature_stages_are_explicit():
    model = create_detector("retinanet", {"name": "mnasnet_a1", "width_mult": 0.5}, min_size=64, max_size=64)
    assert model.backbone.stages == [2, 4, 6]
    model = create_detector("faster_rcnn", "mnasnet_b1", min_size=64, max_size=64, returned_stages=[3, 6])
    assert model.backbone.stages == [3, 6]


def _targets():
    return [
        {"boxes": torch.tensor([[4.0, 6.0, 30.0, 40.0]]), "labels": torch.tensor([2])},
        {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)},
    ]


@pytest.mark.parametrize("head", list(HEADS))
def test_aa_detector_trains_and_predicts_at_variable_sizes(head):
    torch.manual_seed(0)
    model = create_detector(
        head,
        "resnet18",
        "aa",
        num_classes=5,
        min_size=48,
        max_size=64,
        frozen_bn=False,
        trainable_layers=5,
        fpn_channels=32,
    )
    images = [torch.rand(3, 48, 64), torch.rand(3, 64, 48)]
    losses = model(images, _targets())
    total = sum(losses.values())
    assert torch.isfinite(total)
    total.backward()
    model.eval()
    with torch.no_grad():
        outputs = model(images)
    assert len(outputs) == 2 and outputs[0]["boxes"].shape[1] == 4


def test_aa_detection_backbone_keeps_the_classification_setting():
    """layer2 attends over its map pooled 3x3/2 at detection size too: tables cover ceil(1344 / 16) = 84."""
    with torch.device("meta"):
        body = create_detector("retinanet", "resnet50", "aa").backbone.body
    layer2, layer3 = body.layer2[0].conv2, body.layer3[0].conv2
    assert layer2.memory_pool and layer2.attention.rel_width.shape == (2 * 84 - 1, 20)
    assert not layer3.memory_pool and layer3.attention.rel_width.shape == (2 * 84 - 1, 20)


def test_backbone_from_aaconv_checkpoint_frozen_bn_and_trainable_layers(tmp_path):
    classifier = create_model("resnet18", "aa", num_classes=6)
    save_checkpoint({"model": classifier.state_dict()}, tmp_path / "last.pt")
    model = create_detector(
        "retinanet",
        "resnet18",
        "aa",
        num_classes=7,
        min_size=64,
        max_size=64,
        weights=str(tmp_path / "last.pt"),
        trainable_layers=2,
    )
    body = model.backbone.body
    torch.testing.assert_close(body.layer4[0].conv1.qkv.weight, classifier.layer4[0].conv1.qkv.weight)
    assert isinstance(body.bn1, FrozenBatchNorm2d)
    assert not body.layer2[0].conv1.qkv.weight.requires_grad and body.layer3[0].conv1.qkv.weight.requires_grad


def test_a_network_that_is_not_a_backbone_is_refused_for_detection():
    with pytest.raises(ConfigError, match=r"backbone=wrn28_10 has no detection stages \(not a Backbone\).*resnet50"):
        create_detector("retinanet", {"name": "wrn28_10"}, "none", num_classes=3)
