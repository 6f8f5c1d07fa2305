"""MnasNet-A1 and MnasNet-B1 (Tan et al., CVPR 2019, arXiv 1807.11626) with attention in the later stages.

Module names follow timm's EfficientNet family (conv_stem, bn1, blocks.<stage>.<block>.{conv_pw, bn1,
conv_dw, bn2, post_attention, conv_pwl, bn3}, conv_head, bn2, classifier), so timm's `semnasnet_*` (MnasNet-A1)
state dicts load as they are (a block takes timm's `se` keys for its `post_attention`, and
`aaconv.models.pretrained.convert_timm` renames SE's conv_reduce/conv_expand to fc1/fc2) and torchvision's
`mnasnet*` (MnasNet-B1) through `aaconv.models.pretrained.convert_torchvision_mnasnet`. With
`attention="none"`, `mnasnet_a1` has timm's `semnasnet_100` parameters (3,887,038 at width 1.0) and
`mnasnet_b1` torchvision's `mnasnet1_0` (4,383,312), at every width multiplier.

Attention, in the blocks of `attention_stages` (Bello et al. 2019, Sec. 4.1: "the last 13 of 18 blocks", from
the 28x28 stage on, which is stage 2 onward here: 3 + 4 + 2 + 3 + 1 = 13 blocks in both A1 and B1). A block asks
its `Attention` for two convs and one post-block module:
- the 1x1 *expansion* conv at `ConvSite(role="expansion")`: the AA paper augments it ("replacing convolutional
  channels in the expansion pointwise convolution using kappa = 2 upsilon = 0.1 and N_h = 4 heads"), which is
  the registered AA setting here (`paper_options`: replaces expansion, kappa 0.1, upsilon 0.05, 4 heads);
- the depthwise conv at `ConvSite(role="spatial")` (AW-conv takes it, depthwise);
- the post-block module (SE, CBAM) on the expanded channels after the depthwise conv, hidden width = block
  input channels x se_ratio, in every attention-stage block that has no native SE; MnasNet-A1's native SE
  stays as it is.
The 1x1 head is never changed.

Stochastic depth (`drop_path_rate`; Huang et al. 2016), EfficientNet's "drop connect", with timm's EfficientNet
rule: block i of the N blocks of the network (stem and head excluded, all stages counted) gets
drop_path_rate * i / N (timm/models/_efficientnet_builder.py, `_make_block`), applied to the branch of the
blocks with a residual only (timm's `has_skip`). `set_grad_checkpointing` (timm's) checkpoints each block
(aaconv.models.backbone.checkpoint_blocks).
"""

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from aaconv.errors import ConfigError
from aaconv.layers import Attention, ConvSite, SqueezeExcite, create_attention, plain_conv
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

# One row per stage: (block, repeats, kernel, stride, expansion, out channels, SE ratio; 0 = no SE).
Stage = tuple[str, int, int, int, int, int, float]
ARCHS: dict[str, tuple[Stage, ...]] = {
    "mnasnet_a1": (
        ("ds", 1, 3, 1, 1, 16, 0.0),
        ("ir", 2, 3, 2, 6, 24, 0.0),
        ("ir", 3, 5, 2, 3, 40, 0.25),
        ("ir", 4, 3, 2, 6, 80, 0.0),
        ("ir", 2, 3, 1, 6, 112, 0.25),
        ("ir", 3, 5, 2, 6, 160, 0.25),
        ("ir", 1, 3, 1, 6, 320, 0.0),
    ),
    "mnasnet_b1": (
        ("ds", 1, 3, 1, 1, 16, 0.0),
        ("ir", 3, 3, 2, 3, 24, 0.0),
        ("ir", 3, 5, 2, 3, 40, 0.0),
        ("ir", 3, 5, 2, 6, 80, 0.0),
        ("ir", 2, 3, 1, 6, 96, 0.0),
        ("ir", 4, 5, 2, 6, 192, 0.0),
        ("ir", 1, 3, 1, 6, 320, 0.0),
    ),
}
MNASNETS = tuple(ARCHS)
# BN momentum of the reference implementations: timm's default for A1, torchvision's 1 - 0.9997 for B1.
BN_MOMENTUM = {"mnasnet_a1": 0.1, "mnasnet_b1": 1 - 0.9997}
# The AA paper's MnasNet setting: AA on the expansion conv, "kappa = 2 upsilon = 0.1 and N_h = 4 heads"; no minimum
# key depth and no memory downsampling, which its parameter counts rule out (docs/models.md).
_PAPER_OPTIONS = {
    "aa": {"replaces": ("expansion",), "kappa": 0.1, "upsilon": 0.05, "num_heads": 4, "min_dk_per_head": 0}
}
_TIMM_CFG = imagenet_cfg(first_conv="conv_stem", classifier="classifier")
_FEATURE_CFG = {"out_indices": (0, 1, 2, 3, 4, 5, 6), "flatten_sequential": True}


def round_channels(channels: float, divisor: int = 8) -> int:
    """Width-multiplied channels rounded to a multiple of 8, never more than 10% down (both references)."""
    rounded = max(divisor, int(channels + divisor / 2) // divisor * divisor)
    return rounded if rounded >= 0.9 * channels else rounded + divisor


class DepthwiseSeparable(nn.Module):
    """k x k depthwise conv -> BN -> ReLU -> 1x1 conv -> BN, residual when shapes allow (MnasNet's first block),
    whose branch is then dropped with probability `drop_path_rate` in training."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel: int,
        stride: int,
        bn_momentum: float,
        drop_path_rate: float = 0.0,
    ):
        super().__init__()
        self.conv_dw = nn.Conv2d(in_channels, in_channels, kernel, stride, kernel // 2, groups=in_channels, bias=False)
        self.bn1 = nn.BatchNorm2d(in_channels, momentum=bn_momentum)
        self.relu = nn.ReLU(inplace=True)
        self.conv_pw = nn.Conv2d(in_channels, out_channels, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels, momentum=bn_momentum)
        self.residual = stride == 1 and in_channels == out_channels
        self.drop_path = drop_path(drop_path_rate if self.residual else 0.0)

    def forward(self, x: Tensor) -> Tensor:
        out = self.bn2(self.conv_pw(self.relu(self.bn1(self.conv_dw(x)))))
        return self.drop_path(out) + x if self.residual else out


class InvertedResidual(nn.Module):
    """1x1 expand -> BN -> ReLU -> k x k depthwise -> BN -> ReLU -> [SE] -> 1x1 project -> BN, residual when
    stride 1 and in == out. (B, C_in, H, W) -> (B, C_out, H/s, W/s).

    Args:
        expand_conv, depthwise_conv: build the 1x1 expansion and the depthwise conv (plain or attention).
        native_se: MnasNet-A1's own SE, hidden width = C_in x native_se (0: none).
        post: the attention's post-block module, built where there is no native SE, hidden width C_in x se_ratio.
        drop_path_rate: probability of dropping the branch in training, when the block has a residual.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel: int,
        stride: int,
        expansion: int,
        bn_momentum: float,
        *,
        expand_conv: ConvBuilder = plain_conv,
        depthwise_conv: ConvBuilder = plain_conv,
        native_se: float = 0.0,
        post: PostBuilder | None = None,
        se_ratio: float = 0.25,
        drop_path_rate: float = 0.0,
    ):
        super().__init__()
        mid = in_channels * expansion
        self.conv_pw = expand_conv(in_channels, mid, 1)
        self.bn1 = nn.BatchNorm2d(mid, momentum=bn_momentum)
        self.relu = nn.ReLU(inplace=True)
        self.conv_dw = depthwise_conv(mid, mid, kernel, stride, groups=mid)
        self.bn2 = nn.BatchNorm2d(mid, momentum=bn_momentum)
        self.post_attention: nn.Module | None = None  # MnasNet-A1's own SE, or the variant's post part
        if native_se:
            self.post_attention = SqueezeExcite(mid, rd_channels=max(1, round(in_channels * native_se)))
        elif post is not None:
            self.post_attention = post(mid, hidden=max(1, round(in_channels * se_ratio)))
        accept_se_keys(self)
        self.conv_pwl = nn.Conv2d(mid, out_channels, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_channels, momentum=bn_momentum)
        self.residual = stride == 1 and in_channels == out_channels
        self.drop_path = drop_path(drop_path_rate if self.residual else 0.0)

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu(self.bn1(self.conv_pw(x)))
        out = self.relu(self.bn2(self.conv_dw(out)))
        if self.post_attention is not None:
            out = self.post_attention(out)
        out = self.bn3(self.conv_pwl(out))
        return self.drop_path(out) + x if self.residual else out


class MnasNet(nn.Module):
    """MnasNet for (B, 3, H, W) images -> (B, num_classes) logits.

    Args:
        arch: "mnasnet_a1" or "mnasnet_b1" (rows of ARCHS).
        attention: an `Attention`, a variant name or the `attention` config mapping {variant, <part>: {...}}
            (module docstring); `create_model` adds the paper's setting (`paper_options` of the entries below).
        width_mult: channel multiplier (0.5, 0.75, 1.0, 1.25, 1.4 in the papers); the 1280-wide head is fixed.
        attention_stages: stage indices (0..6 of `blocks`) whose blocks get the attention; default 2..6,
            the last 13 blocks (from the stride-8 / 28x28 stage on), the AA paper's placement.
        se_ratio: hidden width of a post-block module the attention adds (SE, CBAM), as a fraction of the
            block's input channels.
        num_classes: classifier outputs; 0 drops the classifier.
        drop_rate: dropout before the classifier (both references: 0.2; timm's `drop_rate`).
        bn_momentum: None: the reference's (BN_MOMENTUM).
        input_size: largest input side, sizes AA's relative tables per stage (None: AAConv2d's default).
        headless: no 1x1 head, pooling or classifier (a detection backbone).
        zero_init_residual: zero the last BN of each residual block, so it starts as the identity
            (timm's `zero_init_last`; the same option as the ResNets').
        in_chans: input channels of the stem conv (timm's `in_chans`).
        global_pool: "avg", "max" or "" (no pooling; needs num_classes=0), timm's `global_pool`.
        drop_path_rate: stochastic depth, the rate the rule would give a block N + 1 (module docstring; timm's
            `drop_path_rate`).

    A Backbone (aaconv.models.backbone): `feature_info` lists blocks.0..blocks.6 (stages 0..6). All seven
    are listed, where timm's EfficientNet lists only the last stage of each stride. The classifier API is
    timm's (`forward_head`, `reset_classifier`, `forward_intermediates`, ...; aaconv.models.head).
    """

    stage_strides: tuple[int, ...] = (2, 4, 8, 16, 16, 32, 32)  # of blocks.0..blocks.6

    def __init__(
        self,
        arch: str = "mnasnet_a1",
        attention: str | Mapping[str, Any] | Attention = "none",
        width_mult: float = 1.0,
        attention_stages: Sequence[int] = (2, 3, 4, 5, 6),
        se_ratio: float = 0.25,
        num_classes: int = 1000,
        drop_rate: float = 0.2,
        bn_momentum: float | None = None,
        input_size: int | None = 224,
        headless: bool = False,
        zero_init_residual: bool = False,
        in_chans: int = 3,
        global_pool: str = "avg",
        drop_path_rate: float = 0.0,
    ):
        super().__init__()
        if arch not in ARCHS:
            raise ValueError(f"unknown MnasNet {arch!r}; available: {', '.join(MNASNETS)}")
        check_head(num_classes, global_pool)
        self.in_chans = in_chans
        self.num_classes = num_classes
        self.drop_rate = drop_rate
        self.grad_checkpointing = False
        attention = create_attention(attention)
        check_stage_ids(attention, attention_stages, range(len(ARCHS[arch])), "blocks.0..blocks.6")
        momentum = BN_MOMENTUM[arch] if bn_momentum is None else bn_momentum
        stem = round_channels(32 * width_mult)
        self.conv_stem = nn.Conv2d(in_chans, stem, 3, 2, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(stem, momentum=momentum)
        self.relu = nn.ReLU(inplace=True)
        num_blocks = sum(stage[1] for stage in ARCHS[arch])
        rates = iter(drop_path_rates(drop_path_rate, num_blocks, num_blocks))
        stages, in_channels = [], stem
        self.stage_channels: list[int] = []
        for index, (kind, repeats, kernel, stride, expansion, channels, native_se) in enumerate(ARCHS[arch]):
            out_channels = round_channels(channels * width_mult)
            attended = index in attention_stages
            blocks: list[nn.Module] = []
            for block in range(repeats):
                s = stride if block == 0 else 1
                size = feature_size(input_size, self.stage_strides[index] // s)  # the block's input side
                if kind == "ds":
                    blocks.append(DepthwiseSeparable(in_channels, out_channels, kernel, s, momentum, next(rates)))
                    in_channels = out_channels
                    continue
                convs = {}
                if attended:
                    convs = {
                        "expand_conv": attention.conv(ConvSite(index, size, role="expansion")),
                        "depthwise_conv": attention.conv(ConvSite(index, size)),
                        "post": attention.post(),
                    }
                blocks.append(
                    InvertedResidual(
                        in_channels,
                        out_channels,
                        kernel,
                        s,
                        expansion,
                        momentum,
                        native_se=native_se,
                        se_ratio=se_ratio,
                        drop_path_rate=next(rates),
                        **convs,
                    )
                )
                in_channels = out_channels
            stages.append(nn.Sequential(*blocks))
            self.stage_channels.append(out_channels)
        self.blocks = nn.Sequential(*stages)
        self.feature_info = feature_info(
            self.stage_channels, self.stage_strides, [f"blocks.{i}" for i in range(len(stages))]
        )
        self.headless = headless
        if not headless:
            self.conv_head = nn.Conv2d(in_channels, 1280, 1, bias=False)
            self.bn2 = nn.BatchNorm2d(1280, momentum=momentum)
            self.global_pool = GlobalPool(global_pool)
            self.dropout = nn.Dropout(drop_rate)
            self.classifier = nn.Linear(1280, num_classes) if num_classes > 0 else nn.Identity()
            in_channels = 1280
        self.num_features = self.head_hidden_size = in_channels
        self._init_weights(zero_init_residual)

    def _init_weights(self, zero_init_residual: bool) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        if zero_init_residual:
            for m in self.modules():
                if isinstance(m, InvertedResidual) and m.residual:
                    nn.init.zeros_(m.bn3.weight)

    def forward_features(self, x: Tensor) -> Tensor:
        """(B, 3, H, W) -> (B, 1280, H/32, W/32) (320 x width_mult channels when headless)."""
        x = self.relu(self.bn1(self.conv_stem(x)))
        if self.grad_checkpointing and not torch.jit.is_scripting():
            x = checkpoint_blocks(list(self.blocks), x)
        else:
            x = self.blocks(x)
        if self.headless:
            return x
        return self.relu(self.bn2(self.conv_head(x)))

    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        """(B, 1280, h, w) -> (B, num_classes) logits; pre_logits: the pooled (B, 1280) features."""
        x = self.dropout(self.global_pool(x))
        return x if pre_logits else self.classifier(x)

    def forward(self, x: Tensor) -> Tensor:
        x = self.forward_features(x)
        if self.headless:
            return x
        return self.forward_head(x)

    def get_classifier(self) -> nn.Module:
        return self.classifier

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        """A new classifier for `num_classes` (0: none) after `global_pool` (None: the current pooling). As timm's,
        a classifier after no pooling ("") is allowed here, for a head that takes the map."""
        self.global_pool, self.classifier = new_head(self, num_classes, global_pool)
        self.num_classes = num_classes

    def forward_stages(self, x: Tensor, stages: Sequence[int]) -> list[Tensor]:
        """(B, 3, H, W) -> outputs of `blocks[i]` for i in `stages`, in increasing order (stride
        stage_strides[i]), for FPN."""
        return self.forward_intermediates(x, sorted(stages), intermediates_only=True)

    def forward_intermediates(
        self,
        x: Tensor,
        indices: int | Sequence[int] | None = None,
        norm: bool = False,
        stop_early: bool = False,
        output_fmt: str = "NCHW",
        intermediates_only: bool = False,
    ) -> list[Tensor] | tuple[Tensor, list[Tensor]]:
        """timm's: the outputs of blocks.i for i in `indices` (None: all 7; n: the last n; negative ids count
        from the end) and, unless `intermediates_only`, the forward_features output (after the 1x1 head, as
        timm's EfficientNet). `norm` has no effect; `stop_early` stops after the last stage taken."""
        if output_fmt != "NCHW":
            raise ConfigError(f'output_fmt must be "NCHW", got {output_fmt!r}')
        take = take_indices(len(self.feature_info), indices)
        last = max(take) if stop_early or intermediates_only else len(self.blocks) - 1
        x = self.relu(self.bn1(self.conv_stem(x)))
        intermediates = []
        for index in range(last + 1):
            stage = self.blocks[index]
            x = checkpoint_blocks([stage], x) if self.grad_checkpointing else stage(x)
            if index in take:
                intermediates.append(x)
        if intermediates_only:
            return intermediates
        if last == len(self.blocks) - 1 and not self.headless:
            x = self.relu(self.bn2(self.conv_head(x)))
        return x, intermediates

    def prune_intermediate_layers(
        self, indices: int | Sequence[int] = 1, prune_norm: bool = False, prune_head: bool = True
    ) -> list[int]:
        """timm's: drops the blocks after the last stage in `indices` (and the 1x1 head and classifier, with
        `prune_head`); returns the stage ids taken."""
        take = take_indices(len(self.feature_info), indices)
        self.blocks = self.blocks[: max(take) + 1]
        if prune_head and not self.headless:
            self.conv_head = nn.Identity()
            self.bn2 = nn.Identity()
            self.reset_classifier(0, "")
        return take

    def trainable_units(self) -> list[nn.Module]:
        """[stem, blocks.0, ..., blocks.6]: what a detector's `trainable_layers` counts from the end."""
        return [nn.ModuleList([self.conv_stem, self.bn1]), *self.blocks]

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """timm's: checkpoint each block of blocks.0..blocks.6 (not the stem or the 1x1 head) in training and
        feature passes."""
        self.grad_checkpointing = enable


@register_model(MnasNet, paper_options=_PAPER_OPTIONS, timm_cfg=_TIMM_CFG, feature_cfg=_FEATURE_CFG)
def mnasnet_a1(attention: Attention | str = "none", **kwargs: Any) -> MnasNet:
    """MnasNet-A1 (with its own SE in stages 2, 4, 5): timm's `semnasnet_*`."""
    return MnasNet("mnasnet_a1", attention, **kwargs)


@register_model(MnasNet, paper_options=_PAPER_OPTIONS, timm_cfg=_TIMM_CFG, feature_cfg=_FEATURE_CFG)
def mnasnet_b1(attention: Attention | str = "none", **kwargs: Any) -> MnasNet:
    """MnasNet-B1 (no SE): torchvision's `mnasnet*`."""
    return MnasNet("mnasnet_b1", attention, **kwargs)
