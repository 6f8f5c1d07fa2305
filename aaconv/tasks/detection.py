"""Object detection on COCO-layout data: RetinaNet / Faster R-CNN losses, COCO box AP.

AP is pycocotools' COCOeval, or faster-coco-eval's C++ COCOeval_faster when that is installed (the
`fast-eval` extra; the same numbers, tested). As in pycocotools, a size range without ground-truth objects
scores -1 (APs / APm / APl).
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from aaconv.data import build_data
from aaconv.data.coco import detection_collate
from aaconv.errors import ConfigError
from aaconv.models import create_detector
from aaconv.utils.atomic import write_json_atomic
from aaconv.utils.distributed import all_gather_objects, is_main_process

METRICS = ("AP", "AP50", "AP75", "APs", "APm", "APl")  # COCOeval.stats[0:6], in [0, 1]; -1: no such objects
COCO_EVAL = "faster_coco_eval" if importlib.util.find_spec("faster_coco_eval") else "pycocotools"


def to_coco_results(image_id: Tensor, output: dict[str, Tensor]) -> list[dict[str, Any]]:
    """One image's detections (xyxy boxes in original image pixels, label == category id) in the COCO
    results format: [{image_id, category_id, bbox: [x, y, w, h], score}, ...]."""
    boxes = output["boxes"].detach().cpu().double()
    xywh = torch.cat([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], dim=1)
    return [
        {
            "image_id": int(image_id),
            "category_id": int(label),
            "bbox": [round(v, 2) for v in box],
            "score": round(float(score), 5),
        }
        for box, label, score in zip(xywh.tolist(), output["labels"].tolist(), output["scores"].tolist(), strict=True)
    ]


def coco_metrics(
    coco_gt: Any, predictions: list[dict[str, Any]], image_ids: list[int] | None = None, backend: str = COCO_EVAL
) -> dict[str, float]:
    """COCO box AP of `predictions` against `coco_gt` (a pycocotools COCO) as COCOeval.stats[0:6] gives it,
    over `image_ids` (None: every image of the annotation file), computed by `backend`
    ("pycocotools" or "faster_coco_eval")."""
    if backend == "faster_coco_eval":
        from faster_coco_eval import COCO
        from faster_coco_eval import COCOeval_faster as COCOeval

        coco_gt = COCO(coco_gt.dataset)
    else:
        from pycocotools.coco import COCO
        from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):
        if predictions:
            coco_dt = coco_gt.loadRes(predictions)
        else:  # loadRes refuses an empty list; no detections score 0 (and -1 where there are no objects)
            coco_dt = COCO()
            coco_dt.dataset = {**coco_gt.dataset, "annotations": []}
            coco_dt.createIndex()
        evaluator = COCOeval(coco_gt, coco_dt, "bbox")
        if image_ids is not None:
            evaluator.params.imgIds = sorted(image_ids)
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return {name: float(value) for name, value in zip(METRICS, evaluator.stats[:6], strict=True)}


class DetectionTask:
    """A COCO detector (aaconv.models.create_detector) trained on the summed torchvision losses.

    Args:
        backbone, attention, data: the config groups (data: root, generate, num_classes, splits).
        head: "retinanet" or "faster_rcnn".
        frozen_bn, trainable_layers: backbone BN and freezing (aaconv.models.detection.build_backbone); the
            pretrained weights are `backbone.weights`, as for every task.
        hflip: training flip probability.
        detector: further keywords for create_detector (min_size, max_size, score_thresh, ...).

    A data config without a `detection` block is classification data: ConfigError from `build_model`.
    """

    primary_metric = "AP"
    primary_metric_mode = "max"
    collate_fn = staticmethod(detection_collate)

    def __init__(
        self,
        *,
        backbone: Mapping[str, Any],
        attention: Mapping[str, Any],
        data: Mapping[str, Any],
        head: str,
        frozen_bn: bool = True,
        trainable_layers: int = 3,
        hflip: float = 0.5,
        detector: Mapping[str, Any] | None = None,
    ):
        self.backbone, self.attention, self.data = dict(backbone), dict(attention), data
        self.head, self.frozen_bn, self.trainable_layers = head, frozen_bn, trainable_layers
        self.hflip = hflip
        self.detector = dict(detector or {})

    def build_model(self) -> nn.Module:
        # Checked here, the first call of every entry point, not in __init__: Hydra's instantiate would wrap
        # the ConfigError in an InstantiationException, a traceback instead of one line.
        if self.data.get("detection") is None:
            raise ConfigError(
                f"task={self.head} needs detection data, but data={self.data.get('name')} is "
                "classification data (no `detection` block); use data=shapes_det (built-in) "
                "or data=coco data.root=..."
            )
        return create_detector(
            self.head,
            self.backbone,
            self.attention,
            num_classes=self.data["num_classes"],
            frozen_bn=self.frozen_bn,
            trainable_layers=self.trainable_layers,
            **self.detector,
        )

    def build_datasets(self) -> tuple[Dataset, Dataset]:
        """The (train, val) splits of `data`'s registered format (aaconv.data.registry); sets `collate_fn`."""
        splits = build_data(self.data, "detection", hflip=self.hflip)
        self.collate_fn = splits.collate_fn
        return splits.train, splits.val

    def group_ids(self, dataset: Dataset) -> list[int] | None:
        """Aspect-ratio group of each image (0: portrait, 1: landscape) for batching like with like, for datasets
        that know their images' shapes (`aspect_ratios()`, read from the annotations); None for others."""
        aspect_ratios = getattr(dataset, "aspect_ratios", None)
        return None if aspect_ratios is None else [int(ratio >= 1.0) for ratio in aspect_ratios()]

    def training_loss(
        self, model: nn.Module, batch: tuple[list[Tensor], list[dict[str, Tensor]]], device: torch.device
    ) -> tuple[Tensor, int]:
        images, targets = batch
        images = [image.to(device, non_blocking=True) for image in images]
        targets = [{k: v.to(device, non_blocking=True) for k, v in t.items()} for t in targets]
        losses = model(images, targets)
        return sum(losses.values()), len(images)

    @torch.no_grad()
    def evaluate(
        self, model: nn.Module, loader: DataLoader, device: torch.device, output_dir: Path | None = None
    ) -> dict[str, Any]:
        """COCO box AP of `model` on the images `loader` yields (every image of its dataset unless limited):
        AP, AP50, AP75, APs, APm, APl in [0, 1], -1 for a size range without objects (as pycocotools);
        with the annotation file scored against and the evaluator used.

        Each process predicts its shard; predictions are gathered and scored on the main process, which
        writes them to `output_dir/predictions.json` (COCO results format) when `output_dir` is given;
        every process returns the metrics."""
        model.eval()
        predictions: list[dict[str, Any]] = []
        image_ids: list[int] = []
        for images, targets in loader:
            outputs = model([image.to(device, non_blocking=True) for image in images])
            for target, output in zip(targets, outputs, strict=True):
                predictions.extend(to_coco_results(target["image_id"], output))
                image_ids.append(int(target["image_id"]))
        metrics: dict[str, Any] = {}
        gathered = all_gather_objects((predictions, image_ids))
        if is_main_process():
            merged = merge_shards([shard for shard, _ in gathered])
            evaluated = sorted({i for _, ids in gathered for i in ids})
            if output_dir is not None:
                write_predictions(merged, Path(output_dir) / "predictions.json")
            dataset = loader.dataset
            metrics = coco_metrics(dataset.coco, merged, evaluated)
            metrics.update(
                val_images=len(evaluated), annotation_file=str(dataset.annotation_file.resolve()), coco_eval=COCO_EVAL
            )
        return all_gather_objects(metrics)[0]


def merge_shards(shards: list[list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """Concatenates per-process predictions, keeping each image's from the first process that has it
    (a distributed sampler pads its shards with repeated images)."""
    merged, seen = [], set()
    for shard in shards:
        images = {p["image_id"] for p in shard}
        merged.extend(p for p in shard if p["image_id"] not in seen)
        seen |= images
    return merged


def write_predictions(predictions: list[dict[str, Any]], path: Path) -> None:
    """predictions.json in the COCO results format, written atomically."""
    write_json_atomic(predictions, path, indent=None)
