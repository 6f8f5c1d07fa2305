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

from aaconv.data import dataset_root
from aaconv.data.cifar import CIFAR100, cifar_transform
from aaconv.data.imagefolder import build_imagefolder
from aaconv.data.transforms import classification_transform
from aaconv.engine.distributed import all_reduce_sum
from aaconv.models import create_model


def topk_correct(logits: Tensor, target: Tensor, ks: tuple[int, ...] = (1, 5)) -> Tensor:
    """Number of samples whose target is among the top-k logits, for each k: (B, C), (B,) -> (len(ks),)."""
    top = logits.topk(min(max(ks), logits.shape[1]), dim=1).indices
    hits = top.eq(target[:, None])
    return torch.stack([hits[:, :k].any(dim=1).sum() for k in ks])


class ClassificationTask:
    """Backbone + linear classifier on an ImageFolder dataset.

    Args:
        backbone: the `backbone` config group (name plus backbone keywords).
        attention: the `attention` config group ({variant, aa, aw, se}).
        data: the `data` config group (root, splits, num_classes, image_size, transform options).
        label_smoothing: cross-entropy label smoothing.
        mixup: timm `Mixup` keywords (mixup_alpha, cutmix_alpha, prob, switch_prob, mode); with either alpha
            above 0 training batches are mixed and the loss is soft-target cross-entropy (the smoothing is
            folded into the soft targets).
    """

    primary_metric = "top1"
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
        self.output_dir: Path | None = None  # classification writes no per-evaluation files
        self.mixup = None
        if mixup and (mixup.get("mixup_alpha", 0) > 0 or mixup.get("cutmix_alpha", 0) > 0):
            self.mixup = Mixup(**mixup, label_smoothing=label_smoothing, num_classes=data["num_classes"])
            self.criterion = SoftTargetCrossEntropy()

    def build_model(self) -> nn.Module:
        kwargs = {k: v for k, v in self.backbone.items() if k != "name"}
        return create_model(
            self.backbone["name"], self.attention, num_classes=self.data["num_classes"],
            input_size=self.data["image_size"], **kwargs,
        )

    def build_datasets(self) -> tuple[Dataset, Dataset]:
        if self.data.get("format") == "cifar":
            options = self.data["transform"]
            return (CIFAR100(self.data["root"], self.data["train_split"], cifar_transform(True, **options)),
                    CIFAR100(self.data["root"], self.data["val_split"], cifar_transform(False)))
        root = dataset_root(self.data, "imagefolder")
        size, options = self.data["image_size"], self.data["transform"]
        train = build_imagefolder(
            root, self.data["train_split"], classification_transform(size, True, options["train"]), self.data["num_classes"]
        )
        val = build_imagefolder(
            root, self.data["val_split"], classification_transform(size, False, options["eval"]), self.data["num_classes"]
        )
        return train, val

    def training_loss(self, model: nn.Module, batch: tuple[Tensor, Tensor], device: torch.device) -> tuple[Tensor, int]:
        images, targets = (t.to(device, non_blocking=True) for t in batch)
        if self.mixup is not None:
            images, targets = self.mixup(images, targets)
        return self.criterion(model(images), targets), images.shape[0]

    @torch.no_grad()
    def evaluate(self, model: nn.Module, loader: DataLoader, device: torch.device) -> dict[str, float]:
        """Top-1 / top-5 accuracy (percent) and mean cross-entropy over every image of `loader`,
        summed over all processes when distributed (each process evaluating its own shard)."""
        model.eval()
        sums = torch.zeros(4, dtype=torch.float64, device=device)  # top1 hits, top5 hits, loss sum, count
        for images, targets in loader:
            images, targets = images.to(device, non_blocking=True), targets.to(device, non_blocking=True)
            logits = model(images).float()
            sums[:2] += topk_correct(logits, targets)
            sums[2] += nn.functional.cross_entropy(logits, targets, reduction="sum")
            sums[3] += targets.numel()
        top1, top5, loss, count = all_reduce_sum(sums).tolist()
        return {"top1": 100.0 * top1 / count, "top5": 100.0 * top5 / count, "val_loss": loss / count, "val_images": int(count)}
