"""RetinaNet (Lin et al. 2017) and Faster R-CNN (Ren et al. 2015) over our backbones, through torchvision.

torchvision's detection models take a backbone with `out_channels` returning an OrderedDict of feature
maps. `FPNBackbone` is that: our ResNet / MnasNet (attention included) returns the stages named in
`returned_stages`, a `FeaturePyramidNetwork` turns them into `out_channels`-wide maps, and RetinaNet adds
P6, P7 from P5 (torchvision's v1 builder: `LastLevelP6P7(256, 256)`; aaconv.models.fpn_extra's subclass,
which keeps bfloat16 gradients right on 1-pixel maps), Faster R-CNN a max-pooled level.
With `attention="none"`, a ResNet-50 and 91 classes, the parameter counts equal torchvision's
`retinanet_resnet50_fpn` (34,068,119) and `fasterrcnn_resnet50_fpn` (41,808,406).

Variable input sizes: the model's transform resizes to `min_size` (shorter side) / `max_size` (longer
side) and pads to a multiple of 32, so the backbone is built with `input_size = max_size` rounded up
to 32 and AA's relative tables of each stage cover that extent (aaconv.layers.ConvSite.size).

AA in a detection backbone is the classification backbone's setting (the AA paper's, the `paper_options` of
its registry entry, under the config's `attention.aa` keys), so an ImageNet AA checkpoint loads one to
one. That includes memory downsampling in layer2: at 800x1333 its AA convs attend over 50x84 (4,200
positions) instead of 100x168 (16,800), 16x fewer logits, the same cost as layer3's 50x84 maps. The
AA paper's RetinaNet rows use another setting and input (kappa 0.1, upsilon 0.05, no minimum key depth, a 640 x 640
canvas: `canvas=640`, aaconv.models.detection_transform), set by their experiments; docs/models.md compares them.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

from torch import Tensor, nn
from torchvision.models.detection import FasterRCNN, RetinaNet
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.retinanet import RetinaNetHead
from torchvision.ops import FrozenBatchNorm2d
from torchvision.ops.feature_pyramid_network import FeaturePyramidNetwork, LastLevelMaxPool

from aaconv.errors import ConfigError
from aaconv.models import backbone_options, backbones, create_model, get_entry
from aaconv.models.backbone import Backbone
from aaconv.models.detection_transform import CanvasTransform
from aaconv.models.fpn_extra import SafeLastLevelP6P7
from aaconv.models.pretrained import init_backbone


def retinanet_anchor_scales(size: int) -> tuple[int, ...]:
    """RetinaNet's three octave scales on a level whose smallest anchor side is `size`: 2^0, 2^(1/3), 2^(2/3)."""
    return (size, int(size * 2 ** (1.0 / 3)), int(size * 2 ** (2.0 / 3)))


def retinanet_norm_head(channels: int, anchors: AnchorGenerator, num_classes: int) -> nn.Module:
    """RetinaNet's head with GroupNorm(32) after each conv (torchvision's RetinaNet v2 head)."""
    return RetinaNetHead(
        channels, anchors.num_anchors_per_location()[0], num_classes, norm_layer=partial(nn.GroupNorm, 32)
    )


@dataclass(frozen=True)
class DetectionHead:
    """One detection head over an FPN: everything `build_detector` varies per head.

    Attributes:
        detector: torchvision's detector class, called as `detector(fpn_backbone, num_classes=..., **kwargs)`.
        strides: feature strides its FPN reads (torchvision: RetinaNet C3-C5, Faster R-CNN C2-C5).
        extra_block: `(fpn_channels) -> ` torchvision's extra FPN block (P6/P7, or a max-pooled level).
        anchor_scales: `(smallest anchor side of a level) -> ` the anchor sides on that level.
        anchor_keyword: the detector keyword that takes an AnchorGenerator.
        norm_head: `(fpn_channels, anchors, num_classes) -> ` a GroupNorm head (`group_norm_head=True`), or None
            when the head has no such option.
    """

    detector: Callable[..., nn.Module]
    strides: tuple[int, ...]
    extra_block: Callable[[int], nn.Module]
    anchor_scales: Callable[[int], tuple[int, ...]]
    anchor_keyword: str
    norm_head: Callable[[int, AnchorGenerator, int], nn.Module] | None = None


HEADS: dict[str, DetectionHead] = {
    "retinanet": DetectionHead(
        detector=RetinaNet,
        strides=(8, 16, 32),
        extra_block=lambda channels: SafeLastLevelP6P7(channels, channels),
        anchor_scales=retinanet_anchor_scales,
        anchor_keyword="anchor_generator",
        norm_head=retinanet_norm_head,
    ),
    "faster_rcnn": DetectionHead(
        detector=FasterRCNN,
        strides=(4, 8, 16, 32),
        extra_block=lambda channels: LastLevelMaxPool(),
        anchor_scales=lambda size: (size,),
        anchor_keyword="rpn_anchor_generator",
    ),
}


def default_stages(body: Backbone, strides: Sequence[int]) -> list[int]:
    """For each wanted stride, the id of the last backbone stage with that stride
    (ResNet: 8, 16, 32 -> 2, 3, 4; MnasNet: 8, 16, 32 -> 2, 4, 6)."""
    by_stride = {info["reduction"]: i for i, info in enumerate(body.feature_info)}  # later stages win
    return [by_stride[stride] for stride in strides]


def freeze_batchnorm(module: nn.Module) -> nn.Module:
    """Replaces every BatchNorm2d in `module` by a FrozenBatchNorm2d holding the same statistics."""
    for name, child in module.named_children():
        if isinstance(child, nn.BatchNorm2d):
            frozen = FrozenBatchNorm2d(child.num_features, eps=child.eps)
            frozen.weight.copy_(child.weight.detach())
            frozen.bias.copy_(child.bias.detach())
            frozen.running_mean.copy_(child.running_mean)
            frozen.running_var.copy_(child.running_var)
            setattr(module, name, frozen)
        else:
            freeze_batchnorm(child)
    return module


def freeze_units(backbone: Backbone, trainable_layers: int) -> None:
    """Keeps the last `trainable_layers` of backbone.trainable_units() trainable, freezes the rest
    (torchvision's `trainable_backbone_layers`: ResNet units are stem, layer1..layer4)."""
    units = backbone.trainable_units()
    if not 0 <= trainable_layers <= len(units):
        raise ValueError(f"trainable_layers must be in 0..{len(units)}, got {trainable_layers}")
    for unit in units[: len(units) - trainable_layers]:
        unit.requires_grad_(False)


def get_head(name: str) -> DetectionHead:
    """The HEADS entry `name`; ValueError listing the heads otherwise."""
    if name not in HEADS:
        raise ValueError(f"unknown detection head {name!r}; available: {', '.join(HEADS)}")
    return HEADS[name]


def anchor_generator(head: str, sizes: Sequence[int]) -> AnchorGenerator:
    """torchvision's anchors for `head` with `sizes` = the smallest anchor side on each of the five FPN levels
    (torchvision: 32, 64, 128, 256, 512), the head's scales on each level (RetinaNet: three octaves);
    aspect ratios 0.5, 1, 2."""
    if len(sizes) != 5:
        raise ValueError(f"anchor_sizes needs one size per FPN level (5), got {list(sizes)}")
    per_level = tuple(get_head(head).anchor_scales(s) for s in sizes)
    return AnchorGenerator(per_level, ((0.5, 1.0, 2.0),) * len(sizes))


class FPNBackbone(nn.Module):
    """(B, 3, H, W) -> OrderedDict of `out_channels`-wide FPN maps ("0", "1", ..., then "pool" / "p6", "p7").

    Args:
        body: a Backbone (aaconv.models.backbone).
        stages: ids of the body stages fed to the FPN (indices into `body.feature_info`), from high to low
            resolution.
        extra: torchvision's extra FPN block (LastLevelP6P7 / LastLevelMaxPool).
    """

    def __init__(self, body: Backbone, stages: Sequence[int], out_channels: int, extra: nn.Module):
        super().__init__()
        last = len(body.feature_info) - 1
        if not stages or list(stages) != sorted(set(stages)) or not 0 <= stages[0] <= stages[-1] <= last:
            raise ValueError(f"returned_stages must be increasing stage ids in 0..{last}, got {list(stages)}")
        self.body = body
        self.stages = list(stages)
        channels = [body.feature_info[i]["num_chs"] for i in self.stages]
        self.fpn = FeaturePyramidNetwork(channels, out_channels, extra_blocks=extra)
        self.out_channels = out_channels

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """timm's: checkpoint each block of the body (its `forward_stages` runs them so); not the FPN."""
        self.body.set_grad_checkpointing(enable)

    def forward(self, x: Tensor) -> OrderedDict[str, Tensor]:
        features = self.body.forward_stages(x, self.stages)
        return self.fpn(OrderedDict((str(i), f) for i, f in enumerate(features)))


def build_backbone(
    backbone: Mapping[str, Any],
    attention: str | Mapping[str, Any],
    *,
    max_size: int,
    weights: str | None = None,
    frozen_bn: bool = True,
    trainable_layers: int = 3,
) -> Backbone:
    """The classification backbone without its classifier, initialised from `weights` (or from scratch).

    Args:
        backbone: {name, weights, ...backbone keywords} (the `backbone` config group).
        weights: an aaconv ImageNet checkpoint (the classifier's keys; its `fc` / `classifier` is dropped),
            a torchvision / timm state-dict file, or "torchvision:<name>" / "timm:<name>"; None: from scratch.
            None takes `backbone["weights"]` (the config's `backbone.weights`), if any.
        frozen_bn: replace BN by FrozenBatchNorm2d (torchvision's default with pretrained weights).
        trainable_layers: units from the end that train (ResNet: 0..5; MnasNet: 0..8).
    """
    if not get_entry(backbone["name"]).is_backbone:
        raise ConfigError(
            f"backbone={backbone['name']} has no detection stages (not a Backbone); detection takes one of "
            f"{', '.join(backbones())}"
        )
    options = backbone_options(backbone)
    size = math.ceil(max_size / 32) * 32
    body = create_model(backbone["name"], attention, num_classes=0, input_size=size, headless=True, **options)
    weights = weights if weights is not None else backbone.get("weights")
    if weights:
        init_backbone(body, weights)
    if frozen_bn:
        freeze_batchnorm(body)
    freeze_units(body, trainable_layers)
    return body


def build_detector(
    head: str,
    backbone: str | Mapping[str, Any],
    attention: str | Mapping[str, Any] = "none",
    num_classes: int = 91,
    *,
    min_size: int | Sequence[int] = 800,
    max_size: int = 1333,
    weights: str | None = None,
    frozen_bn: bool = True,
    trainable_layers: int = 3,
    returned_stages: Sequence[int] | None = None,
    fpn_channels: int = 256,
    anchor_sizes: Sequence[int] | None = None,
    group_norm_head: bool = False,
    canvas: int | None = None,
    scale_jitter: Sequence[float] | None = None,
    **head_kwargs: Any,
) -> nn.Module:
    """RetinaNet or Faster R-CNN (torchvision's) over an FPN on our backbone.

    Args:
        head: "retinanet" or "faster_rcnn".
        backbone: a model name or the `backbone` config group {name, attention_stages, width_mult, ...}.
        attention: variant name or `attention` config group.
        num_classes: torchvision's convention, largest category id + 1 (COCO: 91; 0 is background).
        min_size, max_size: the model's resize (shorter side; cap on the longer side); a tuple of
            min sizes trains multi-scale.
        weights, frozen_bn, trainable_layers: backbone initialisation (see build_backbone).
        returned_stages: backbone stage ids for the FPN (ResNet 0..4, MnasNet 0..6); None: strides 8-32
            (RetinaNet) or 4-32 (Faster R-CNN).
        fpn_channels: FPN and head width (torchvision: 256).
        anchor_sizes: smallest anchor side per FPN level (see anchor_generator); None: torchvision's 32..512.
        group_norm_head: RetinaNet only: GroupNorm(32) after each head conv (torchvision's RetinaNet v2 head),
            which trains far faster from scratch.
        canvas: a fixed square input instead of min_size / max_size: the longer side resized to `canvas`, padded
            to canvas x canvas (aaconv.models.detection_transform; the AA paper's RetinaNet input: 640).
        scale_jitter: with `canvas`, the training scale range, e.g. (0.8, 1.2); None: none.
        head_kwargs: passed to torchvision's RetinaNet / FasterRCNN (score_thresh, detections_per_img, ...).
    """
    spec_head = get_head(head)
    if group_norm_head and spec_head.norm_head is None:
        heads = [name for name, entry in HEADS.items() if entry.norm_head is not None]
        raise ValueError(f"group_norm_head is an option of {', '.join(heads)} only, not of {head}")
    if scale_jitter is not None and canvas is None:
        raise ValueError("scale_jitter needs a canvas (e.g. canvas=640): it jitters the canvas transform's scale")
    spec = {"name": backbone} if isinstance(backbone, str) else dict(backbone)
    largest = canvas if canvas is not None else max_size
    body = build_backbone(
        spec, attention, max_size=largest, weights=weights, frozen_bn=frozen_bn, trainable_layers=trainable_layers
    )
    stages = list(returned_stages) if returned_stages is not None else default_stages(body, spec_head.strides)
    fpn = FPNBackbone(body, stages, fpn_channels, spec_head.extra_block(fpn_channels))
    if anchor_sizes is not None:
        head_kwargs[spec_head.anchor_keyword] = anchor_generator(head, anchor_sizes)
    if group_norm_head:
        anchors = head_kwargs.get(spec_head.anchor_keyword) or anchor_generator(head, (32, 64, 128, 256, 512))
        head_kwargs["head"] = spec_head.norm_head(fpn_channels, anchors, num_classes)
    model = spec_head.detector(fpn, num_classes=num_classes, min_size=min_size, max_size=max_size, **head_kwargs)
    if canvas is not None:
        model.transform = CanvasTransform(canvas, model.transform.image_mean, model.transform.image_std, scale_jitter)
    return model
