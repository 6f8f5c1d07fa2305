"""ClassificationTask's model from `backbone.weights`: a torchvision file fine-tuned to another number of classes."""

import logging

import torch
import torchvision

from aaconv.tasks import build_task


def test_backbone_weights_load_a_torchvision_file_and_keep_a_fresh_classifier(tiny_config, tmp_path, caplog):
    torch.manual_seed(1)  # not the model's seed: the same init order would give the same first fc rows
    reference = torchvision.models.resnet18(weights=None).state_dict()
    torch.save(reference, tmp_path / "resnet18.pth")
    task = build_task(tiny_config(f"backbone.weights={tmp_path / 'resnet18.pth'}"))  # 6 classes, not 1000
    torch.manual_seed(0)
    with caplog.at_level(logging.INFO, logger="aaconv"):
        model = task.build_model()
    state = model.state_dict()
    for key in ("conv1.weight", "layer1.0.bn1.running_var", "layer4.1.conv2.weight"):
        assert torch.equal(state[key], reference[key]), key
    assert state["fc.weight"].shape == (6, 512) and not torch.equal(state["fc.weight"], reference["fc.weight"][:6])
    assert "loaded 120 (" in caplog.text and "adapted 0; not in the weights 2 (e.g. fc.weight, fc.bias)" in caplog.text


def test_without_weights_the_model_is_initialised_from_the_seed(tiny_config):
    task = build_task(tiny_config())
    torch.manual_seed(0)
    first = task.build_model().state_dict()
    torch.manual_seed(0)
    assert all(torch.equal(v, first[k]) for k, v in task.build_model().state_dict().items())
