"""CanvasTransform: the AA paper's fixed 640 x 640 RetinaNet input (aaconv.models.detection_transform)."""

from __future__ import annotations

import pytest
import torch

from aaconv.models import create_detector
from aaconv.models.detection_transform import CanvasTransform

MEAN, STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]


def test_longer_side_becomes_the_canvas_and_the_rest_is_padding() -> None:
    transform = CanvasTransform(640, MEAN, STD).eval()
    image = torch.rand(3, 300, 400)  # H x W: landscape, scale 640 / 400 = 1.6
    target = {"boxes": torch.tensor([[10.0, 20.0, 110.0, 220.0]]), "labels": torch.tensor([3])}
    images, [out] = transform([image], [target])
    assert images.tensors.shape == (1, 3, 640, 640) and images.image_sizes == [(480, 640)]
    assert torch.allclose(out["boxes"], torch.tensor([[16.0, 32.0, 176.0, 352.0]]))
    assert images.tensors[0, :, 480:].abs().sum() == 0  # padding below the image
    portrait, _ = transform([torch.rand(3, 500, 250)])
    assert portrait.image_sizes == [(640, 320)] and portrait.tensors.shape == (1, 3, 640, 640)


def test_detections_map_back_to_the_original_pixels() -> None:
    transform = CanvasTransform(640, MEAN, STD).eval()
    images, _ = transform([torch.rand(3, 300, 400)])
    detections = [{"boxes": torch.tensor([[0.0, 0.0, 640.0, 480.0]]), "scores": torch.ones(1), "labels": torch.ones(1)}]
    [mapped] = transform.postprocess(detections, images.image_sizes, [(300, 400)])
    assert torch.allclose(mapped["boxes"], torch.tensor([[0.0, 0.0, 400.0, 300.0]]))


def test_training_jitter_above_one_crops_and_drops_boxes_left_outside() -> None:
    torch.manual_seed(0)
    transform = CanvasTransform(64, MEAN, STD, scale_jitter=(2.0, 2.0)).train()  # 64 x 64 image -> 128 x 128
    boxes = torch.tensor([[0.0, 0.0, 64.0, 64.0], [0.0, 0.0, 2.0, 2.0], [62.0, 62.0, 64.0, 64.0]])
    target = {"boxes": boxes, "labels": torch.tensor([1, 2, 3]), "image_id": torch.tensor(7)}
    images, [out] = transform([torch.rand(3, 64, 64)], [target])
    assert images.tensors.shape == (1, 3, 64, 64) and images.image_sizes == [(64, 64)]
    assert 1 in out["labels"] and len(out["labels"]) == len(out["boxes"]) < 3  # a corner box is cropped away
    assert out["boxes"].min() >= 0 and out["boxes"].max() <= 64 and out["image_id"] == 7
    small = CanvasTransform(64, MEAN, STD, scale_jitter=(0.5, 0.5)).train()
    assert small([torch.rand(3, 64, 32)])[0].image_sizes == [(32, 16)]


@pytest.mark.slow
def test_detector_with_a_canvas_runs_and_sizes_aa_tables_to_it() -> None:
    model = create_detector("retinanet", "resnet18", num_classes=5, canvas=64, max_size=1333, frozen_bn=False).eval()
    assert isinstance(model.transform, CanvasTransform) and model.transform.canvas == 64
    with torch.no_grad():
        out = model([torch.rand(3, 40, 64), torch.rand(3, 64, 30)])
    assert len(out) == 2 and all(set(o) == {"boxes", "scores", "labels"} for o in out)
    with torch.device("meta"):
        augmented = create_detector("retinanet", "resnet18", "aa", num_classes=5, canvas=64, max_size=1333)
    layer4 = augmented.backbone.body.layer4[0].conv1.attention  # 64 / 32 = 2: offsets -1..1, not max_size's
    assert layer4.rel_width.shape[0] == layer4.rel_height.shape[0] == 2 * 2 - 1


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"canvas": 100}, "canvas must be a positive multiple of 32"),
        ({"canvas": 64, "scale_jitter": [1.2, 0.8]}, "scale_jitter must be"),
        ({"scale_jitter": [0.8, 1.2]}, "scale_jitter needs a canvas"),
    ],
)
def test_bad_canvas_options_are_one_line_errors(kwargs, message) -> None:
    with pytest.raises(ValueError, match=message):
        create_detector("retinanet", "resnet18", num_classes=5, **kwargs)
