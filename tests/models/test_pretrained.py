"""Pretrained weights into attention variants: loaded / adapted / missing report, strict mismatch errors."""

import logging

import pytest
import torch
import torchvision
from safetensors.torch import save_file

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


def test_weights_of_another_architecture_are_refused_naming_the_key_and_both_shapes(torchvision_file):
    """resnet50's bottleneck tensors are neither loaded nor cut to fit resnet18's basic blocks: the first one
    that differs stops the run, although over half of resnet18's tensors (the BNs, the 3x3 convs) fit."""
    model = create_model("resnet18", num_classes=6)
    report = load_pretrained(model, torchvision_file, exact=("fc.",))
    assert "layer1.0.conv2.weight" in report.loaded and not report.adapted
    assert report.mismatched["layer1.0.conv1.weight"] == ((64, 64, 1, 1), (64, 64, 3, 3))
    assert report.mismatched["layer2.0.downsample.0.weight"] == ((512, 256, 1, 1), (128, 64, 1, 1))
    with pytest.raises(CheckpointError) as error:
        init_backbone(model, torchvision_file, exact=("fc.",))
    assert str(error.value) == (
        f"backbone.weights {torchvision_file} were trained for another architecture: layer1.0.conv1.weight is "
        "(64, 64, 1, 1) in the weights but (64, 64, 3, 3) in this model (23 tensors differ so); pass weights of "
        "this backbone, or backbone.weights=null"
    )


@pytest.mark.parametrize("variant", ["aa", "aw+aa", "aa+se"])
def test_attention_variants_take_weights_of_their_backbone_only(tmp_path, torchvision_file, variant):
    """The documented adaptations (AA's narrower conv branch, `.conv.` renames, AA tensors of other options)
    load; another backbone's tensors do not, into an attention variant either."""
    plain = tmp_path / "resnet18.pth"
    torch.save(create_model("resnet18", num_classes=6).state_dict(), plain)
    other_options = tmp_path / "aa_resnet18.pth"
    aa = {"variant": "aa", "aa": {"kappa": 0.5, "upsilon": 0.25}}
    torch.save(create_model("resnet18", aa, num_classes=6, input_size=64).state_dict(), other_options)
    model = create_model("resnet18", variant, num_classes=3, input_size=128)
    assert init_backbone(model, plain, exact=("fc.",)).adapted
    assert init_backbone(model, other_options, exact=("fc.",)).adapted
    with pytest.raises(CheckpointError, match=r"resnet50.pth were trained for another architecture: layer1.0.conv1"):
        init_backbone(model, torchvision_file, exact=("fc.",))


@pytest.mark.parametrize("export", [False, True])
def test_aaconv_weights_of_another_backbone_name_it(tmp_path, export):
    """An aaconv checkpoint (or its export) says which backbone it was trained as: the fix names it."""
    state = create_model("resnet50", num_classes=6).state_dict()
    if export:
        path = tmp_path / "model.safetensors"
        save_file(state, path, metadata={"format": "pt", "model": "resnet50"})
    else:
        path = tmp_path / "last.pt"
        torch.save({"model": state, "config": {"backbone": {"name": "resnet50", "weights": None}}}, path)
    with pytest.raises(CheckpointError) as error:
        init_backbone(create_model("resnet18", num_classes=6), path, exact=("fc.",))
    message = str(error.value)
    assert "architecture (backbone.name=resnet50 in their config): layer1.0.conv1.weight is (64, 64, 1, 1)" in message
    assert message.endswith("pass weights of this backbone (or train that one with them), or backbone.weights=null")


def test_weights_fitting_under_half_the_model_are_refused(tmp_path):
    """A detector's weights (keys under backbone.body.) share no name with the classifier: the run stops
    instead of a mostly-random start."""
    path = tmp_path / "detector.pth"
    torch.save({f"backbone.body.{k}": v for k, v in create_model("resnet18").state_dict().items()}, path)
    with pytest.raises(CheckpointError, match=r"detector.pth fit only 0 of this model's \d+ tensors.*another arch"):
        init_backbone(create_model("resnet18"), path)


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
    n = table_small.shape[0]  # 2 * 2 - 1 rows (offsets -1..1) inside 2 * 4 - 1 rows: offsets -3..3
    middle = (table_large.shape[0] - n) // 2
    torch.testing.assert_close(table_large[middle : middle + n], table_small)
    torch.testing.assert_close(table_large[:middle], table_small[:1].expand(middle, -1))  # clipped offsets
    torch.testing.assert_close(table_large[middle + n :], table_small[-1:].expand(middle, -1))


@pytest.mark.parametrize(("trained", "built", "sizes"), [(32, 64, (32, 48, 96)), (64, 32, (32,))])
def test_loaded_tables_compute_what_the_weights_model_computes(trained, built, sizes):
    """Weights of a model built for one input size, loaded into one built for a larger size, give the same outputs
    at every size (those both tables cover, and those the original reads clipped on the fly); into a smaller one,
    at the sizes its tables cover (the longer trained offsets are cropped)."""
    torch.manual_seed(0)
    original = create_model("resnet18", "aa", num_classes=4, input_size=trained).eval()
    loaded = create_model("resnet18", "aa", num_classes=4, input_size=built).eval()
    report = load_pretrained(loaded, original.state_dict())
    assert not report.missing and not report.unexpected and not report.mismatched
    assert any(key.endswith("rel_width") for key in report.adapted)
    with torch.no_grad():
        for size in sizes:
            x = torch.randn(2, 3, size, size)
            assert torch.equal(loaded(x), original(x)), size
