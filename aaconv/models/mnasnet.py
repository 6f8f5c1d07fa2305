"""MnasNet-A1 and MnasNet-B1 (Tan et al., CVPR 2019, arXiv 1807.11626) with attention in the later stages.

Module names follow timm's EfficientNet family (conv_stem, bn1, blocks.<stage>.<block>.{conv_pw, bn1,
conv_dw, bn2, se, conv_pwl, bn3}, conv_head, bn2, classifier), so timm's `semnasnet_*` (MnasNet-A1)
state dicts load as they are (after renaming SE's conv_reduce/conv_expand to fc1/fc2) and torchvision's
`mnasnet*` (MnasNet-B1) through `aaconv.models.pretrained.convert_torchvision_mnasnet`. With
`attention="none"`, `mnasnet_a1` has timm's `semnasnet_100` parameters (3,887,038 at width 1.0) and
`mnasnet_b1` torchvision's `mnasnet1_0` (4,383,312), at every width multiplier.

Attention, every module built by aaconv.layers' factory (Bello et al. 2019, Sec. 4.1: "the last 13 of 18
blocks", from the 28x28 stage on, which is stage 2 onward here: 3 + 4 + 2 + 3 + 1 = 13 blocks in both A1 and B1):
- AA replaces channels of the 1x1 *expansion* conv ("replacing convolutional channels in the expansion
  pointwise convolution using kappa = 2 upsilon = 0.1 and N_h = 4 heads"): conv_pw becomes an AAConv2d
  with the same C_in -> C_mid, dk and dv from kappa = 0.1, upsilon = 0.05 of C_mid (`AA_SETTINGS`).
- AW replaces the depthwise conv with a depthwise AWConv2d (same C -> C).
- SE adds MnasNet-A1's own squeeze-excite (on the expanded channels after the depthwise conv, hidden
  width = block input channels x se_ratio) to every attention-stage block that lacks one.
The 1x1 head is never changed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from torch import Tensor, nn

from aaconv.errors import ConfigError
from aaconv.layers import create_attention
from aaconv.models.attention import (
    AttentionSpec,
    attention_spec,
    feature_size,
    memory_pooled,
    parts,
    stage_builders,
    without,
)
from aaconv.models.backbone import feature_info

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
# The AA paper's MnasNet setting ("kappa = 2 upsilon = 0.1 and N_h = 4 heads"; no minimum key depth and no memory
# downsampling, which its parameter counts rule out: docs/models.md); the factory's defaults fill the rest.
# `attention.aa` keys the config sets win over these.
AA_SETTINGS: dict[str, Any] = {"kappa": 0.1, "upsilon": 0.05, "num_heads": 4, "min_dk_per_head": 0}


def round_channels(channels: float, divisor: int = 8) -> int:
    """Width-multiplied channels rounded to a multiple of 8, never more than 10% down (both references)."""
    rounded = max(divisor, int(channels + divisor / 2) // divisor * divisor)
    return rounded if rounded >= 0.9 * channels else rounded + divisor


class DepthwiseSeparable(nn.Module):
    """k x k depthwise conv -> BN -> ReLU -> 1x1 conv -> BN, residual when shapes allow (MnasNet's first block)."""

    def __init__(self, in_channels: int, out_channels: int, kernel: int, stride: int, bn_momentum: float):
        super().__init__()
        self.conv_dw = nn.Conv2d(in_channels, in_channels, kernel, stride, kernel // 2, groups=in_channels, bias=False)
        self.bn1 = nn.BatchNorm2d(in_channels, momentum=bn_momentum)
        self.relu = nn.ReLU(inplace=True)
        self.conv_pw = nn.Conv2d(in_channels, out_channels, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels, momentum=bn_momentum)
        self.residual = stride == 1 and in_channels == out_channels

    def forward(self, x: Tensor) -> Tensor:
        out = self.bn2(self.conv_pw(self.relu(self.bn1(self.conv_dw(x)))))
        return out + x if self.residual else out


class InvertedResidual(nn.Module):
    """1x1 expand (maybe attention-augmented) -> BN -> ReLU -> k x k depthwise (maybe AW) -> BN -> ReLU -> [SE]
    -> 1x1 project -> BN, residual when stride 1 and in == out. (B, C_in, H, W) -> (B, C_out, H/s, W/s).

    `size`: the block's input side (AA's relative tables of the expansion conv cover it)."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel: int,
        stride: int,
        expansion: int,
        se_ratio: float,
        spec: AttentionSpec,
        size: int | None,
        bn_momentum: float,
        memory_pool: bool = False,
    ):
        super().__init__()
        mid = in_channels * expansion
        expand = stage_builders(
            {**spec, "variant": "aa" if "aa" in parts(spec) else "none"}, size, memory_pool=memory_pool
        )
        self.conv_pw = expand.conv(in_channels, mid, 1)
        self.bn1 = nn.BatchNorm2d(mid, momentum=bn_momentum)
        self.relu = nn.ReLU(inplace=True)
        self.conv_dw = stage_builders(without(spec, "aa"), size).conv(mid, mid, kernel, stride, groups=mid)
        self.bn2 = nn.BatchNorm2d(mid, momentum=bn_momentum)
        se = create_attention("se", se={"rd_channels": max(1, round(in_channels * se_ratio))}).post
        self.se = se(mid) if se_ratio else None
        self.conv_pwl = nn.Conv2d(mid, out_channels, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_channels, momentum=bn_momentum)
        self.residual = stride == 1 and in_channels == out_channels

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu(self.bn1(self.conv_pw(x)))
        out = self.relu(self.bn2(self.conv_dw(out)))
        if self.se is not None:
            out = self.se(out)
        out = self.bn3(self.conv_pwl(out))
        return out + x if self.residual else out


class MnasNet(nn.Module):
    """MnasNet for (B, 3, H, W) images -> (B, num_classes) logits.

    Args:
        arch: "mnasnet_a1" or "mnasnet_b1" (rows of ARCHS).
        attention: a variant name or the `attention` config mapping {variant, aa, aw, se}; its `aa` may carry
            `memory_pool_stages` (stages 0..6 whose AA convs attend over a 3x3/2-pooled map; the paper: none).
            `build_mnasnet` fills the paper's setting from AA_SETTINGS.
        width_mult: channel multiplier (0.5, 0.75, 1.0, 1.25, 1.4 in the papers); the 1280-wide head is fixed.
        attention_stages: stage indices (0..6 of `blocks`) whose blocks get the attention; default 2..6,
            the last 13 blocks (from the stride-8 / 28x28 stage on), the AA paper's placement.
        se_ratio: hidden width of SE added by the `se` variant, as a fraction of the block's input channels.
        num_classes: classifier outputs; 0 drops the classifier.
        dropout: before the classifier (both references: 0.2).
        bn_momentum: None: the reference's (BN_MOMENTUM).
        input_size: largest input side, sizes AA's relative tables per stage (None: AAConv2d's default).
        headless: no 1x1 head, pooling or classifier (a detection backbone).
        zero_init_residual: zero the last BN of each residual block, so it starts as the identity
            (timm's `zero_init_last`; the same option as the ResNets').

    A Backbone (aaconv.models.backbone): `feature_info` lists blocks.0..blocks.6 (stages 0..6). All seven
    are listed, where timm's EfficientNet lists only the last stage of each stride.
    """

    stage_strides: tuple[int, ...] = (2, 4, 8, 16, 16, 32, 32)  # of blocks.0..blocks.6

    def __init__(
        self,
        arch: str = "mnasnet_a1",
        attention: str | Mapping[str, Any] = "none",
        width_mult: float = 1.0,
        attention_stages: Sequence[int] = (2, 3, 4, 5, 6),
        se_ratio: float = 0.25,
        num_classes: int = 1000,
        dropout: float = 0.2,
        bn_momentum: float | None = None,
        input_size: int | None = 224,
        headless: bool = False,
        zero_init_residual: bool = False,
    ):
        super().__init__()
        if arch not in ARCHS:
            raise ValueError(f"unknown MnasNet {arch!r}; available: {', '.join(MNASNETS)}")
        spec = attention_spec(attention)
        unknown = set(attention_stages) | set(spec["aa"].get("memory_pool_stages") or ())
        unknown -= set(range(len(ARCHS[arch])))
        if unknown:
            raise ConfigError(
                f"attention_stages and attention.aa.memory_pool_stages must be among 0..6 "
                f"(blocks.0..blocks.6), got {sorted(unknown)}"
            )
        momentum = BN_MOMENTUM[arch] if bn_momentum is None else bn_momentum
        stem = round_channels(32 * width_mult)
        self.conv_stem = nn.Conv2d(3, stem, 3, 2, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(stem, momentum=momentum)
        self.relu = nn.ReLU(inplace=True)
        stages, in_channels = [], stem
        self.stage_channels: list[int] = []
        for index, (kind, repeats, kernel, stride, expansion, channels, native_se) in enumerate(ARCHS[arch]):
            out_channels = round_channels(channels * width_mult)
            stage_spec = spec if index in attention_stages else attention_spec("none")
            se = native_se or (se_ratio if "se" in parts(stage_spec) else 0.0)
            blocks: list[nn.Module] = []
            for block in range(repeats):
                s = stride if block == 0 else 1
                size = feature_size(input_size, self.stage_strides[index] // s)  # the block's input side
                if kind == "ds":
                    blocks.append(DepthwiseSeparable(in_channels, out_channels, kernel, s, momentum))
                else:
                    blocks.append(
                        InvertedResidual(
                            in_channels,
                            out_channels,
                            kernel,
                            s,
                            expansion,
                            se,
                            stage_spec,
                            size,
                            momentum,
                            memory_pooled(stage_spec, index),
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
            self.dropout = nn.Dropout(dropout)
            self.classifier = nn.Linear(1280, num_classes) if num_classes > 0 else nn.Identity()
            in_channels = 1280
        self.num_features = in_channels
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

    def forward_stages(self, x: Tensor, stages: Sequence[int]) -> list[Tensor]:
        """(B, 3, H, W) -> outputs of `blocks[i]` for i in `stages`, in increasing order (stride
        stage_strides[i]), for FPN."""
        x = self.relu(self.bn1(self.conv_stem(x)))
        outputs = []
        for index in range(max(stages) + 1):
            x = self.blocks[index](x)
            if index in stages:
                outputs.append(x)
        return outputs

    def forward_features(self, x: Tensor) -> Tensor:
        """(B, 3, H, W) -> (B, 1280, H/32, W/32) (320 x width_mult channels when headless)."""
        x = self.forward_stages(x, [len(self.blocks) - 1])[0]
        if self.headless:
            return x
        return self.relu(self.bn2(self.conv_head(x)))

    def forward(self, x: Tensor) -> Tensor:
        x = self.forward_features(x)
        if self.headless:
            return x
        return self.classifier(self.dropout(x.mean((2, 3))))

    def trainable_units(self) -> list[nn.Module]:
        """[stem, blocks.0, ..., blocks.6]: what a detector's `trainable_layers` counts from the end."""
        return [nn.ModuleList([self.conv_stem, self.bn1]), *self.blocks]


def build_mnasnet(name: str, attention: str | Mapping[str, Any] = "none", **kwargs: Any) -> MnasNet:
    """MnasNet-A1 / -B1 by name ("mnasnet_a1", "mnasnet_b1"); `attention="aa"` is the AA paper's AA-MnasNet
    (AA_SETTINGS under the config's `aa` keys)."""
    return MnasNet(name, attention_spec(attention, AA_SETTINGS), **kwargs)
