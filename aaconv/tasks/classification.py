"""Image classification: cross-entropy training, top-1 / top-5 evaluation."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from timm.data import Mixup
from timm.loss import SoftTargetCrossEntropy
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from aaconv.data import build_data
from aaconv.data.device_normalize import DeviceNormalize
from aaconv.data.gpu_decode import GpuDecode
from aaconv.errors import ConfigError
from aaconv.models import backbone_options, create_model
from aaconv.models.pretrained import init_backbone
from aaconv.utils.distributed import all_reduce_sum

CLASSIFIERS = ("fc.", "classifier.")  # the last layer of our ResNets / MnasNets


def topk_correct(logits: Tensor, target: Tensor, ks: tuple[int, ...] = (1, 5)) -> Tensor:
    """Number of samples whose target is among the top-k logits, for each k: (B, C), (B,) -> (len(ks),)."""
    top = logits.topk(min(max(ks), logits.shape[1]), dim=1).indices
    hits = top.eq(target[:, None])
    return torch.stack([hits[:, :k].any(dim=1).sum() for k in ks])


class ClassificationTask:
    """Backbone + linear classifier on classification data of any registered format (aaconv.data.registry).

    Args:
        backbone: the `backbone` config group (name plus backbone keywords).
        attention: the `attention` config group ({variant, aa, aw, se}).
        data: the `data` config group (root, splits, num_classes, image_size, transform options, the
            evaluation's eval_image_size and crop_pct).
        label_smoothing: cross-entropy label smoothing.
        mixup: timm `Mixup` keywords (mixup_alpha, cutmix_alpha, prob, switch_prob, mode); with either alpha
            above 0 training batches are mixed and the loss is soft-target cross-entropy (the smoothing is
            folded into the soft targets).
    """

    primary_metric = "top1"
    primary_metric_mode = "max"
    collate_fn = None

    def __init__(
        self,
        *,
        backbone: Mapping[str, Any],
        attention: Mapping[str, Any],
        data: Mapping[str, Any],
        label_smoothing: float = 0.0,
        mixup: Mapping[str, Any] | None = None,
    ):
        self.backbone = dict(backbone)
        self.attention = dict(attention)
        self.data = data
        self.criterion = nn.CrossEntropyLoss(label_smoothing=label_smoothing)
        self.normalize = DeviceNormalize.from_options((data.get("transform") or {}).get("train") or {})
        self.gpu_decode = None
        if data.get("decode", "cpu") == "gpu":  # training images decoded and augmented on the device
            if data.get("skip_unreadable", False):
                raise ConfigError(
                    "data.decode=gpu cannot leave undecodable images out of a batch (data.skip_unreadable=true); "
                    "find them with python scripts/check_data.py <data root>, or use data.decode=cpu"
                )
            self.gpu_decode = GpuDecode.from_config(data["image_size"], data["transform"]["train"])
        self.mixup = None
        if mixup and (mixup.get("mixup_alpha", 0) > 0 or mixup.get("cutmix_alpha", 0) > 0):
            self.mixup = Mixup(**mixup, label_smoothing=label_smoothing, num_classes=data["num_classes"])
            self.criterion = SoftTargetCrossEntropy()

    def build_model(self) -> nn.Module:
        """The classifier, initialised from `backbone.weights` when set; a pretrained classifier for another
        number of classes (ImageNet's 1000 when fine-tuning) is left out, the rest loaded or adapted."""
        kwargs = backbone_options(self.backbone)
        model = create_model(
            self.backbone["name"],
            self.attention,
            num_classes=self.data["num_classes"],
            input_size=self.data["image_size"],
            **kwargs,
        )
        if self.backbone.get("weights"):
            init_backbone(model, self.backbone["weights"], exact=CLASSIFIERS)
        return model

    def build_datasets(self) -> tuple[Dataset, Dataset]:
        """The (train, val) splits of `data`'s registered format (aaconv.data.registry); sets `collate_fn`."""
        splits = build_data(self.data, "classification")
        self.collate_fn = splits.collate_fn
        return splits.train, splits.val

    def group_ids(self, dataset: Dataset) -> list[int] | None:
        """No grouping: every batch samples the whole training set."""
        return None

    def training_loss(self, model: nn.Module, batch: tuple[Tensor, Tensor], device: torch.device) -> tuple[Tensor, int]:
        if self.gpu_decode is not None:
            batch = (self.gpu_decode(batch[0], device), batch[1])
        images, targets = self.normalize(batch[0], device), batch[1].to(device, non_blocking=True)
        if self.mixup is not None:
            images, targets = self.mixup(images, targets)
        return self.criterion(model(images), targets), images.shape[0]

    @torch.no_grad()
    def evaluate(
        self, model: nn.Module, loader: DataLoader, device: torch.device, output_dir: Path | None = None
    ) -> dict[str, float]:
        """Top-1 / top-5 accuracy (percent) and mean cross-entropy over every image of `loader`,
        summed over all processes when distributed (each process evaluating its own shard).
        Classification writes no files: `output_dir` is unused."""
        model.eval()
        sums = torch.zeros(4, dtype=torch.float64, device=device)  # top1 hits, top5 hits, loss sum, count
        for images, targets in loader:
            images, targets = self.normalize(images, device), targets.to(device, non_blocking=True)
            logits = model(images).float()
            sums[:2] += topk_correct(logits, targets)
            sums[2] += nn.functional.cross_entropy(logits, targets, reduction="sum")
            sums[3] += targets.numel()
        top1, top5, loss, count = all_reduce_sum(sums).tolist()
        return {
            "top1": 100.0 * top1 / count,
            "top5": 100.0 * top5 / count,
            "val_loss": loss / count,
            "val_images": int(count),
        }
