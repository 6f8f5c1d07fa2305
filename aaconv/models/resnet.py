"""ResNet (He et al., 2016) whose blocks take their spatial convs and post-block module from an `Attention`.

With `attention="none"` the network is torchvision's ResNet exactly: same modules, same state-dict
keys, same parameter count, so torchvision's weights load and give identical outputs. An attention
variant (aaconv.layers.create_attention) builds the 3x3 convs of the blocks in `attention_stages` (AA-conv,
AW-conv; Bello et al. 2019 augment layer2..layer4) and a post-block module (SE, CBAM) for every block,
after its last BN and before the residual addition.

Stochastic depth (`drop_path_rate`; Huang et al. 2016) drops the residual branch of each block, with timm's
ResNet rule: block i of the N blocks of the network gets drop_path_rate * i / (N - 1) (timm/models/resnet.py,
`make_blocks`), applied after the post-block module, before the addition. `set_grad_checkpointing` (timm's)
checkpoints each block (aaconv.models.backbone.checkpoint_blocks).

Each network is registered below with the AA paper's setting on it (`paper_options`, beyond AA's own
defaults: kappa 0.2, upsilon 0.1, 8 heads, at least 20 key dims per head); `create_model("resnet50", "aa")`
is the paper's AA-ResNet-50, within 0.5% of its counts (docs/models.md has the evidence for each setting).
"""

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from aaconv.errors import ConfigError
from aaconv.layers import Attention, ConvSite, create_attention, plain_conv
from aaconv.layers.parts import ConvBuilder, PostBuilder
from aaconv.models.backbone import (
    accept_se_keys,
    check_stage_ids,
    checkpoint_blocks,
    drop_path,
    drop_path_rates,
    feature_info,
    feature_size,
)
from aaconv.models.head import GlobalPool, check_head, new_head, take_indices
from aaconv.models.registry import register_model
from aaconv.models.timm_models import imagenet_cfg

# The AA paper's setting per ResNet (Bello et al. 2019): the 28x28 stage (layer2) attends over a 3x3/2-pooled
# map; a BasicBlock augments only its first 3x3 conv; ResNet-34 uses kappa = upsilon = 0.25 (docs/models.md).
_BOTTLENECK_AA: dict[str, Any] = {"memory_pool_stages": (2,)}
_BASIC_AA: dict[str, Any] = {**_BOTTLENECK_AA, "basic_block_convs": (1,)}
_TIMM_CFG = imagenet_cfg(first_conv="conv1", classifier="fc")
_FEATURE_CFG = {"out_indices": (0, 1, 2, 3, 4)}


def _downsample(in_channels: int, out_channels: int, stride: int) -> nn.Module | None:
    if stride == 1 and in_channels == out_channels:
        return None
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False), nn.BatchNorm2d(out_channels)
    )


class BasicBlock(nn.Module):
    """Two 3x3 convs (ResNet-18/34), built by `convs[0]` and `convs[1]`; the branch dropped with probability
    `drop_path_rate` in training."""

    expansion = 1
    spatial_convs = 2

    def __init__(
        self,
        in_channels: int,
        width: int,
        stride: int,
        convs: Sequence[ConvBuilder],
        post: PostBuilder | None,
        drop_path_rate: float = 0.0,
    ):
        super().__init__()
        out_channels = width * self.expansion
        self.conv1 = convs[0](in_channels, width, 3, stride)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = convs[1](width, out_channels, 3, 1)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.post_attention = post(out_channels) if post is not None else None  # SE, CBAM, ...
        accept_se_keys(self)
        self.drop_path = drop_path(drop_path_rate)
        self.downsample = _downsample(in_channels, out_channels, stride)

    def forward(self, x: Tensor) -> Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        if self.post_attention is not None:
            out = self.post_attention(out)
        return self.relu(self.drop_path(out) + shortcut)


class Bottleneck(nn.Module):
    """1x1 -> 3x3 (stride here, as torchvision's ResNet v1.5) -> 1x1; the 3x3 is built by `convs[0]`; the branch
    dropped with probability `drop_path_rate` in training."""

    expansion = 4
    spatial_convs = 1

    def __init__(
        self,
        in_channels: int,
        width: int,
        stride: int,
        convs: Sequence[ConvBuilder],
        post: PostBuilder | None,
        drop_path_rate: float = 0.0,
    ):
        super().__init__()
        out_channels = width * self.expansion
        self.conv1 = nn.Conv2d(in_channels, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = convs[0](width, width, 3, stride)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, out_channels, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU(inplace=True)
        self.post_attention = post(out_channels) if post is not None else None  # SE, CBAM, ...
        accept_se_keys(self)
        self.drop_path = drop_path(drop_path_rate)
        self.downsample = _downsample(in_channels, out_channels, stride)

    def forward(self, x: Tensor) -> Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        if self.post_attention is not None:
            out = self.post_attention(out)
        return self.relu(self.drop_path(out) + shortcut)


class ResNet(nn.Module):
    """ResNet for (B, 3, H, W) images -> (B, num_classes) logits; torchvision's module names.

    Args:
        block: BasicBlock or Bottleneck.
        layers: blocks per stage, e.g. (3, 4, 6, 3) for ResNet-50.
        attention: an `Attention`, a variant name or the `attention` config mapping {variant, <part>: {...}};
            its convs are asked for at `ConvSite(stage, size, "spatial", index)` (index: 1, or 1 and 2 in a
            BasicBlock). `create_model` adds the paper's setting (`paper_options` of the entries below).
        attention_stages: stages (1..4, torchvision's layer1..layer4) whose 3x3 convs the attention builds;
            a post-block module (SE) goes into every block, as in SE-ResNet.
        num_classes: classifier outputs; 0 drops the classifier (forward returns pooled features).
        in_chans: input channels of the stem conv (timm's `in_chans`).
        global_pool: "avg", "max" or "" (no pooling; needs num_classes=0), timm's `global_pool`.
        drop_rate: dropout before the classifier (timm's `drop_rate`).
        drop_path_rate: stochastic depth, the rate of the last block (module docstring; timm's `drop_path_rate`).
        zero_init_residual: zero the last BN of each block, as torchvision's option.
        input_size: largest input side; AA's relative tables of stage s cover input_size / 2^(s+1)
            (None: AAConv2d's default max_size).
        headless: no pooling or classifier (a detection backbone; forward returns layer4's map).

    A Backbone (aaconv.models.backbone): `feature_info` lists the stem (stage 0, stride 2, after `relu`)
    and layer1..layer4 (stages 1..4, strides 4..32), as timm's ResNet. The classifier API is timm's
    (`forward_head`, `reset_classifier`, `forward_intermediates`, ...; aaconv.models.head).
    """

    stage_strides: tuple[int, ...] = (4, 8, 16, 32)  # of layer1..layer4

    def __init__(
        self,
        block: type[BasicBlock] | type[Bottleneck],
        layers: Sequence[int],
        attention: str | Mapping[str, Any] | Attention = "none",
        attention_stages: Sequence[int] = (2, 3, 4),
        num_classes: int = 1000,
        zero_init_residual: bool = False,
        input_size: int | None = 224,
        headless: bool = False,
        in_chans: int = 3,
        global_pool: str = "avg",
        drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
    ):
        super().__init__()
        check_head(num_classes, global_pool)
        attention = create_attention(attention)
        check_stage_ids(attention, attention_stages, range(1, 5), "layer1..layer4")
        self.in_chans = in_chans
        self.num_classes = num_classes
        self.drop_rate = drop_rate
        self.grad_checkpointing = False
        self.conv1 = nn.Conv2d(in_chans, 64, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        post = attention.post()
        rates = iter(drop_path_rates(drop_path_rate, sum(layers), sum(layers) - 1))
        in_channels = 64
        self.stage_channels: list[int] = []
        for stage, (width, depth) in enumerate(zip((64, 128, 256, 512), layers, strict=True), start=1):
            size = feature_size(input_size, self.stage_strides[stage - 1])
            convs = [
                attention.conv(ConvSite(stage, size, index=index)) if stage in attention_stages else plain_conv
                for index in range(1, block.spatial_convs + 1)
            ]
            blocks = []
            for index in range(depth):
                stride = 2 if stage > 1 and index == 0 else 1
                blocks.append(block(in_channels, width, stride, convs, post, next(rates)))
                in_channels = width * block.expansion
            setattr(self, f"layer{stage}", nn.Sequential(*blocks))
            self.stage_channels.append(in_channels)
        self.num_features = self.head_hidden_size = in_channels
        self.feature_info = feature_info(
            [64, *self.stage_channels], [2, *self.stage_strides], ["relu", "layer1", "layer2", "layer3", "layer4"]
        )
        self.headless = headless
        if not headless:
            self.global_pool = GlobalPool(global_pool)
            self.head_drop = nn.Dropout(drop_rate)
            self.fc = nn.Linear(in_channels, num_classes) if num_classes > 0 else nn.Identity()
        self._init_weights(zero_init_residual)

    def _init_weights(self, zero_init_residual: bool) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        if zero_init_residual:
            for m in self.modules():
                if isinstance(m, Bottleneck):
                    nn.init.zeros_(m.bn3.weight)
                elif isinstance(m, BasicBlock):
                    nn.init.zeros_(m.bn2.weight)

    def forward_features(self, x: Tensor) -> Tensor:
        """(B, 3, H, W) -> (B, C, H/32, W/32) feature map of layer4."""
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        if self.grad_checkpointing and not torch.jit.is_scripting():
            return checkpoint_blocks([self.layer1, self.layer2, self.layer3, self.layer4], x)
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))

    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        """(B, C, h, w) layer4 map -> (B, num_classes) logits; pre_logits: the pooled (B, C) features."""
        x = self.head_drop(self.global_pool(x))
        return x if pre_logits else self.fc(x)

    def forward(self, x: Tensor) -> Tensor:
        if self.headless:
            return self.forward_features(x)
        return self.forward_head(self.forward_features(x))

    def get_classifier(self) -> nn.Module:
        return self.fc

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        """A new classifier for `num_classes` (0: none) after `global_pool` (None: the current pooling). As timm's,
        a classifier after no pooling ("") is allowed here, for a head that takes the map."""
        self.global_pool, self.fc = new_head(self, num_classes, global_pool)
        self.num_classes = num_classes

    def forward_stages(self, x: Tensor, stages: Sequence[int]) -> list[Tensor]:
        """(B, 3, H, W) -> outputs of `stages` in increasing order (0: stem, stride 2; 1..4: layer1..layer4,
        stride 4..32), for FPN."""
        return self.forward_intermediates(x, sorted(stages), stop_early=True, intermediates_only=True)

    def forward_intermediates(
        self,
        x: Tensor,
        indices: int | Sequence[int] | None = None,
        norm: bool = False,
        stop_early: bool = False,
        output_fmt: str = "NCHW",
        intermediates_only: bool = False,
    ) -> list[Tensor] | tuple[Tensor, list[Tensor]]:
        """timm's: the outputs of stages `indices` (None: all 5; n: the last n; negative ids count from the end)
        and, unless `intermediates_only`, the forward_features output. `norm` has no effect (no final norm);
        `stop_early` stops after the last stage taken."""
        if output_fmt != "NCHW":
            raise ConfigError(f'output_fmt must be "NCHW", got {output_fmt!r}')
        take = take_indices(len(self.feature_info), indices)
        last = max(take) if stop_early or intermediates_only else len(self.feature_info) - 1
        x = self.relu(self.bn1(self.conv1(x)))
        intermediates = [x] if 0 in take else []
        x = self.maxpool(x)
        for stage in range(1, last + 1):
            layer = getattr(self, f"layer{stage}")
            x = checkpoint_blocks([layer], x) if self.grad_checkpointing else layer(x)
            if stage in take:
                intermediates.append(x)
        return intermediates if intermediates_only else (x, intermediates)

    def prune_intermediate_layers(
        self, indices: int | Sequence[int] = 1, prune_norm: bool = False, prune_head: bool = True
    ) -> list[int]:
        """timm's: replaces the stages after the last one in `indices` by Identity (and the head, with
        `prune_head`); returns the stage ids taken."""
        take = take_indices(len(self.feature_info), indices)
        for stage in range(max(take) + 1, len(self.feature_info)):
            setattr(self, f"layer{stage}", nn.Identity())
        if prune_head and not self.headless:
            self.reset_classifier(0, "")
        return take

    def trainable_units(self) -> list[nn.Module]:
        """[stem, layer1, ..., layer4]: what a detector's `trainable_layers` counts from the end."""
        return [nn.ModuleList([self.conv1, self.bn1]), self.layer1, self.layer2, self.layer3, self.layer4]

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """timm's: checkpoint each block of layer1..layer4 (not the stem or head) in training and feature passes."""
        self.grad_checkpointing = enable


@register_model(ResNet, paper_options={"aa": _BASIC_AA}, timm_cfg=_TIMM_CFG, feature_cfg=_FEATURE_CFG)
def resnet18(attention: Attention | str = "none", **kwargs: Any) -> ResNet:
    """ResNet-18: BasicBlocks (2, 2, 2, 2)."""
    return ResNet(BasicBlock, (2, 2, 2, 2), attention, **kwargs)


@register_model(
    ResNet,
    paper_options={"aa": {**_BASIC_AA, "kappa": 0.25, "upsilon": 0.25}},
    timm_cfg=_TIMM_CFG,
    feature_cfg=_FEATURE_CFG,
)
def resnet34(attention: Attention | str = "none", **kwargs: Any) -> ResNet:
    """ResNet-34: BasicBlocks (3, 4, 6, 3)."""
    return ResNet(BasicBlock, (3, 4, 6, 3), attention, **kwargs)


@register_model(ResNet, paper_options={"aa": _BOTTLENECK_AA}, timm_cfg=_TIMM_CFG, feature_cfg=_FEATURE_CFG)
def resnet50(attention: Attention | str = "none", **kwargs: Any) -> ResNet:
    """ResNet-50: Bottlenecks (3, 4, 6, 3)."""
    return ResNet(Bottleneck, (3, 4, 6, 3), attention, **kwargs)


@register_model(ResNet, paper_options={"aa": _BOTTLENECK_AA}, timm_cfg=_TIMM_CFG, feature_cfg=_FEATURE_CFG)
def resnet101(attention: Attention | str = "none", **kwargs: Any) -> ResNet:
    """ResNet-101: Bottlenecks (3, 4, 23, 3)."""
    return ResNet(Bottleneck, (3, 4, 23, 3), attention, **kwargs)


@register_model(ResNet, paper_options={"aa": _BOTTLENECK_AA}, timm_cfg=_TIMM_CFG, feature_cfg=_FEATURE_CFG)
def resnet152(attention: Attention | str = "none", **kwargs: Any) -> ResNet:
    """ResNet-152: Bottlenecks (3, 8, 36, 3)."""
    return ResNet(Bottleneck, (3, 8, 36, 3), attention, **kwargs)
