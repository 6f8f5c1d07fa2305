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

from aaconv.data import formats
from aaconv.errors import ConfigError, DataError
from aaconv.models.detection import HEADS
from aaconv.tasks import build_task
from aaconv.tasks.detection import coco_metrics
from helpers.config import CONFIGS, compose_config

# the built-in detection sets, from every format that reads detection data (the COCO folder, its shards, ...)
BUILTIN_DETECTION_DATA = [
    path.stem
    for path in sorted((CONFIGS / "data").glob("*.yaml"))
    if (data := compose_config(f"data={path.stem}").data).get("generate") and formats()[data.format].task == "detection"
]


@pytest.mark.parametrize("data", BUILTIN_DETECTION_DATA)
@pytest.mark.parametrize("head", list(HEADS))
def test_trains_and_scores_like_pycocotools(tiny_config, tmp_path, head, data):
    cfg = tiny_config(
        f"task={head}",
        f"data={data}",
        "data.batch_size=4",
        "data.detection.min_size=64",
        "data.detection.max_size=64",
        "data.detection.fpn_channels=32",
        "attention=aa",
    )
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
    metrics = task.evaluate(
        model, DataLoader(val, batch_size=4, collate_fn=task.collate_fn), torch.device("cpu"), output_dir=tmp_path
    )
    predictions = json.loads((tmp_path / "predictions.json").read_text())
    assert predictions and set(predictions[0]) == {"image_id", "category_id", "bbox", "score"}
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(val.annotation_file))
        evaluator = COCOeval(gt, gt.loadRes(str(tmp_path / "predictions.json")), "bbox")
        evaluator.evaluate(), evaluator.accumulate(), evaluator.summarize()
    expected = dict(zip(("AP", "AP50", "AP75", "APs", "APm", "APl"), evaluator.stats[:6], strict=True))
    for name, value in expected.items():
        assert metrics[name] == pytest.approx(value, abs=1e-9), name
    assert metrics["APl"] == -1.0  # no large objects in 96 px images: pycocotools says -1, not 0
    assert metrics["coco_eval"] in ("pycocotools", "faster_coco_eval")
    assert metrics["annotation_file"].endswith("coco/annotations/instances_val2017.json")  # the original file


@pytest.mark.parametrize("head", list(HEADS))
def test_classification_data_is_a_config_error_naming_the_fix(tiny_config, head):
    cfg = tiny_config(f"task={head}")  # the default data: shapes, classification
    with pytest.raises(ConfigError, match="data=shapes_det.*data=coco") as error:
        build_task(cfg).build_model()
    assert "\n" not in str(error.value)


def test_a_class_count_below_the_largest_category_id_is_one_data_error(tiny_config):
    task = build_task(tiny_config("task=retinanet", "data=shapes_det", "data.num_classes=5"))  # shapes: ids 1..6
    with pytest.raises(DataError, match=r"category id 6 needs data.num_classes >= 7 .* got 5: train with"):
        task.build_datasets()


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


@pytest.mark.parametrize("head", list(HEADS))
def test_backbone_weights_load_a_torchvision_file_into_the_detector(tiny_config, tmp_path, head):
    reference = torchvision.models.resnet18(weights=None).state_dict()
    torch.save(reference, tmp_path / "resnet18.pth")
    cfg = tiny_config(
        f"task={head}",
        "data=shapes_det",
        f"backbone.weights={tmp_path / 'resnet18.pth'}",
        "data.detection.frozen_bn=true",
    )
    body = build_task(cfg).build_model().backbone.body.state_dict()
    for key in ("conv1.weight", "layer2.0.conv1.weight", "layer4.1.bn2.running_mean"):
        assert torch.equal(body[key], reference[key]), key


def _predictions(gt: COCO, seed: int) -> list[dict]:
    """Jittered, rescored copies of the ground-truth boxes, a few with the wrong category: AP strictly in (0, 1)."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for ann in gt.dataset["annotations"]:
        x, y, w, h = (torch.tensor(ann["bbox"]) + torch.randn(4, generator=g) * 2).tolist()
        category = ann["category_id"] if torch.rand((), generator=g) > 0.2 else 1 + ann["category_id"] % 6
        out.append(
            {
                "image_id": ann["image_id"],
                "category_id": category,
                "bbox": [x, y, max(w, 1), max(h, 1)],
                "score": float(torch.rand((), generator=g)),
            }
        )
    return out


@pytest.fixture
def small_objects_only(tiny_config):
    """The tiny shapes COCO val split (16 images of 96 px) with only its small shapes (area < 32^2)."""
    _, val = build_task(tiny_config("task=retinanet", "data=shapes_det")).build_datasets()
    dataset = dict(val.coco.dataset)
    dataset["annotations"] = [ann for ann in dataset["annotations"] if ann["area"] < 32**2]
    assert 10 < len(dataset["annotations"]) < len(val.coco.dataset["annotations"])
    gt = COCO()
    gt.dataset = dataset
    with contextlib.redirect_stdout(io.StringIO()):
        gt.createIndex()
    return gt


def _pycocotools(gt: COCO, predictions: list[dict], image_ids: list[int]) -> list[float]:
    with contextlib.redirect_stdout(io.StringIO()):
        evaluator = COCOeval(gt, gt.loadRes(predictions), "bbox")
        evaluator.params.imgIds = image_ids
        evaluator.evaluate(), evaluator.accumulate(), evaluator.summarize()
    return list(evaluator.stats[:6])


def test_apm_apl_are_minus_one_as_pycocotools_says_without_medium_or_large_objects(small_objects_only):
    gt = small_objects_only
    predictions, ids = _predictions(gt, seed=0), sorted(gt.imgs)[:10]
    expected = _pycocotools(gt, predictions, ids)
    metrics = coco_metrics(gt, predictions, ids, backend="pycocotools")
    assert list(metrics.values()) == pytest.approx(expected, abs=1e-12)
    assert metrics["APm"] == metrics["APl"] == -1.0 and 0 < metrics["AP"] < 1
    empty = coco_metrics(gt, [], None, backend="pycocotools")
    assert (empty["AP"], empty["APs"], empty["APm"], empty["APl"]) == (0.0, 0.0, -1.0, -1.0)


def test_faster_coco_eval_gives_pycocotools_numbers(small_objects_only):
    pytest.importorskip("faster_coco_eval")
    gt = small_objects_only
    for seed in range(3):
        predictions = _predictions(gt, seed)
        for ids in (None, sorted(gt.imgs)[::2]):
            faster = coco_metrics(gt, predictions, ids, backend="faster_coco_eval")
            reference = coco_metrics(gt, predictions, ids, backend="pycocotools")
            assert faster == pytest.approx(reference, abs=1e-12), (seed, ids)
    assert coco_metrics(gt, [], None, backend="faster_coco_eval") == coco_metrics(gt, [], None, backend="pycocotools")
