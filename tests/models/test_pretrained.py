"""Pretrained weights into attention variants: loaded / adapted / missing report, strict mismatch errors."""

import logging

import pytest
import torch
import torchvision

from aaconv.errors import CheckpointError
from aaconv.models import create_model
from aaconv.models.pretrained import init_backbone, load_pretrained


@pytest.fixture(scope="module")
def torchvision_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("weights") / "resnet50.pth"
    torch.save(torchvision.models.resnet50(weights=None).state_dict(), path)
    return path


def test_plain_resnet_loads_everything(torchvision_file):
    report = load_pretrained(create_model("resnet50"), torchvision_file)
    assert not report.missing and not report.unexpected and not report.adapted


def test_backbone_tensors_left_out_are_a_warning_the_classifier_is_not(tmp_path, caplog):
    """resnet18 into resnet34: the shared blocks fit (over half the tensors), the extra blocks stay random."""
    path = tmp_path / "resnet18.pth"
    torch.save(create_model("resnet18", num_classes=6).state_dict(), path)
    with caplog.at_level(logging.WARNING, logger="aaconv"):
        init_backbone(create_model("resnet34", num_classes=3), path, exact=("fc.",))
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "at their random initialisation (e.g. layer1.2." in warnings[0]
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="aaconv"):
        init_backbone(create_model("resnet18", num_classes=3), path, exact=("fc.",))  # only fc differs
    assert not [r for r in caplog.records if r.levelno == logging.WARNING]


def test_aa_resnet_reports_what_it_loaded(torchvision_file):
    reference = torch.load(torchvision_file, weights_only=True)
    model = create_model("resnet50", "aa")
    report = load_pretrained(model, torchvision_file)
    assert "layer1.0.conv2.weight" in report.loaded and "fc.weight" in report.loaded
    assert "layer3.0.conv2.conv.weight" in report.adapted  # first C_out - dv pretrained filters
    conv = model.layer3[0].conv2.conv.weight
    torch.testing.assert_close(conv, reference["layer3.0.conv2.weight"][: conv.shape[0]])
    assert "layer3.0.conv2.qkv.weight" in report.missing and not report.unexpected
    assert "layer3.0.conv2" in report.summary() or "adapted" in report.summary()


def test_aw_resnet_takes_the_kernels_unchanged(torchvision_file):
    reference = torch.load(torchvision_file, weights_only=True)
    model = create_model("resnet50", "aw")
    load_pretrained(model, torchvision_file)
    torch.testing.assert_close(model.layer4[1].conv2.conv.weight, reference["layer4.1.conv2.weight"])


def test_weights_of_another_architecture_are_refused(tmp_path):
    """resnet18's 3x3 kernels are never cut to fit resnet50's 1x1 ones, and weights fitting under half of
    the model stop the run instead of a mostly-random start."""
    path = tmp_path / "resnet18.pth"
    torch.save(create_model("resnet18", num_classes=6).state_dict(), path)
    model = create_model("resnet50")
    report = load_pretrained(model, path)
    shapes = torch.load(path, weights_only=True)
    assert all(shapes[k].shape[2:] == model.state_dict()[k].shape[2:] for k in report.adapted)
    assert "layer1.0.conv2.weight" in report.loaded and "layer1.0.conv1.weight" in report.missing  # 3x3 vs 1x1
    with pytest.raises(CheckpointError, match=r"resnet18.pth fit only \d+ of this model's \d+ tensors.*another arch"):
        init_backbone(model, path)


def test_strict_mismatch_lists_keys(torchvision_file):
    with pytest.raises(CheckpointError, match="missing"):
        load_pretrained(create_model("resnet50", "aa"), torchvision_file, strict=True)


def test_unreadable_file_is_a_checkpoint_error(tmp_path):
    bad = tmp_path / "bad.pth"
    bad.write_text("not a checkpoint")
    with pytest.raises(CheckpointError, match="cannot read weights .*: not a file written by torch.save"):
        load_pretrained(create_model("resnet18"), bad)
    with pytest.raises(CheckpointError, match="is a folder"):
        load_pretrained(create_model("resnet18"), tmp_path)
    with pytest.raises(CheckpointError, match="do not exist"):
        load_pretrained(create_model("resnet18"), tmp_path / "missing.pth")
    bad.write_bytes(b"")  # an empty file: torch's error message is empty too
    with pytest.raises(CheckpointError, match=r"cannot read weights .*bad.pth: \w+"):
        load_pretrained(create_model("resnet18"), bad)


def test_relative_tables_of_another_size_keep_their_offsets():
    small = create_model("resnet18", "aa", input_size=64)
    large = create_model("resnet18", "aa", input_size=128)
    load_pretrained(large, small.state_dict())
    table_small, table_large = small.layer4[0].conv1.attention.rel_width, large.layer4[0].conv1.attention.rel_width
    n = table_small.shape[0]  # 2 * 2 - 1 rows (offsets -1..1) inside 2 * 4 - 1 rows
    middle = (table_large.shape[0] - n) // 2
    torch.testing.assert_close(table_large[middle : middle + n], table_small)
