"""DetectionTask end to end on the tiny shapes set: a few training steps, then COCO AP equal to
pycocotools' own run on the written predictions.json; classification data refused with a one-line error."""

import contextlib
import io
import json

import pytest
import torch
import torchvision
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval
from torch.utils.data import DataLoader, Subset

from aaconv.errors import ConfigError
from aaconv.tasks import build_task


@pytest.mark.parametrize("head", ["retinanet", "faster_rcnn"])
def test_trains_and_scores_like_pycocotools(tiny_config, tmp_path, head):
    cfg = tiny_config(f"task={head}", "data=shapes_det", "data.batch_size=4", "data.detection.min_size=64",
                      "data.detection.max_size=64", "data.detection.fpn_channels=32", "attention=aa")
    task = build_task(cfg)
    torch.manual_seed(0)
    model = task.build_model()
    train, val = task.build_datasets()
    assert len(task.group_ids(train)) == len(train)
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.01, momentum=0.9)
    model.train()
    for batch in DataLoader(Subset(train, range(8)), batch_size=4, collate_fn=task.collate_fn):
        loss, images = task.training_loss(model, batch, torch.device("cpu"))
        assert torch.isfinite(loss) and images == 4
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    # an untrained model: keep every detection, so the comparison is not trivially between zeros
    if head == "retinanet":
        model.score_thresh = 0.0
    else:
        model.roi_heads.score_thresh = 0.0
    metrics = task.evaluate(model, DataLoader(val, batch_size=4, collate_fn=task.collate_fn), torch.device("cpu"),
                            output_dir=tmp_path)
    predictions = json.loads((tmp_path / "predictions.json").read_text())
    assert predictions and set(predictions[0]) == {"image_id", "category_id", "bbox", "score"}
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(val.root / "annotations" / "instances_val2017.json"))
        evaluator = COCOeval(gt, gt.loadRes(str(tmp_path / "predictions.json")), "bbox")
        evaluator.evaluate(), evaluator.accumulate(), evaluator.summarize()
    expected = dict(zip(("AP", "AP50", "AP75", "APs", "APm", "APl"), evaluator.stats[:6]))
    for name, value in expected.items():
        assert metrics[name] == pytest.approx(max(0.0, value), abs=1e-9)


@pytest.mark.parametrize("head", ["retinanet", "faster_rcnn"])
def test_classification_data_is_a_config_error_naming_the_fix(tiny_config, head):
    cfg = tiny_config(f"task={head}")  # the default data: shapes, classification
    with pytest.raises(ConfigError, match="data=shapes_det.*data=coco") as error:
        build_task(cfg).build_model()
    assert "\n" not in str(error.value)


@pytest.mark.parametrize("experiment", ["retinanet_shapes", "faster_rcnn_shapes"])
def test_shapes_recipes_build_and_train(tiny_config, experiment):
    cfg = tiny_config(f"experiment={experiment}", "data.batch_size=4")
    task = build_task(cfg)
    model = task.build_model()
    anchors = model.anchor_generator if task.head == "retinanet" else model.rpn.anchor_generator
    assert anchors.sizes[0][0] == 16  # the recipes' anchors, half torchvision's
    if task.head == "retinanet":
        assert any(isinstance(m, torch.nn.GroupNorm) for m in model.head.modules())
    train, _ = task.build_datasets()
    batch = next(iter(DataLoader(train, batch_size=4, collate_fn=task.collate_fn)))
    model.train()
    loss, images = task.training_loss(model, batch, torch.device("cpu"))
    loss.backward()
    assert torch.isfinite(loss) and images == 4


@pytest.mark.parametrize("head", ["retinanet", "faster_rcnn"])
def test_backbone_weights_load_a_torchvision_file_into_the_detector(tiny_config, tmp_path, head):
    reference = torchvision.models.resnet18(weights=None).state_dict()
    torch.save(reference, tmp_path / "resnet18.pth")
    cfg = tiny_config(f"task={head}", "data=shapes_det", f"backbone.weights={tmp_path / 'resnet18.pth'}",
                      "data.detection.frozen_bn=true")
    body = build_task(cfg).build_model().backbone.body.state_dict()
    for key in ("conv1.weight", "layer2.0.conv1.weight", "layer4.1.bn2.running_mean"):
        assert torch.equal(body[key], reference[key]), key
