"""Wide ResNet (Zagoruyko & Komodakis 2016) for 32 px CIFAR images, with attention from a builder.

WRN-d-k: a 3x3 stem conv to 16 channels, then three stages of (d - 4) / 6 pre-activation basic blocks of widths
16k, 32k and 64k at strides 1, 2, 2, then BN-ReLU, global average pooling and the classifier. WRN-28-10 on
CIFAR-100 has 36.5M parameters. The AA paper's CIFAR-100 rows (Bello et al. 2019, Table 1) compare WRN-28-10,
SE-WRN and AA-WRN (N_h = 8, kappa = 2 upsilon = 0.2, at least 20 key dims per head); both 3x3 convs of every
block in `attention_stages` are built by the attention variant, and SE goes after the second conv of every
block, before the residual addition (Hu et al. 2018).

Stochastic depth (`drop_path_rate`; Huang et al. 2016) drops the residual branch of each block with timm's ResNet
rule (timm has no WRN): block i of the N blocks of the network gets drop_path_rate * i / (N - 1)
(timm/models/resnet.py, `make_blocks`), applied after the post-block module, before the addition.
`set_grad_checkpointing` (timm's) checkpoints each block (aaconv.models.backbone.checkpoint_blocks).
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
    feature_size,
)
from aaconv.models.registry import register_model


class WideBasicBlock(nn.Module):
    """Pre-activation block: BN-ReLU-conv3x3 (stride here)-BN-ReLU-dropout-conv3x3 (+ post module), plus a
    shortcut (a 1x1 conv of the pre-activated input where the shape changes, as in the WRN code); the branch
    dropped with probability `drop_path_rate` in training."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        stride: int,
        convs: Sequence[ConvBuilder],
        post: PostBuilder | None,
        dropout: float = 0.0,
        drop_path_rate: float = 0.0,
    ):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_channels)
        self.conv1 = convs[0](in_channels, out_channels, 3, stride)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.conv2 = convs[1](out_channels, out_channels, 3, 1)
        self.relu = nn.ReLU(inplace=True)
        self.post_attention = post(out_channels) if post is not None else None  # SE, CBAM, ...
        accept_se_keys(self)
        self.drop_path = drop_path(drop_path_rate)
        self.shortcut = None
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu(self.bn1(x))
        shortcut = x if self.shortcut is None else self.shortcut(out)
        out = self.conv2(self.dropout(self.relu(self.bn2(self.conv1(out)))))
        if self.post_attention is not None:
            out = self.post_attention(out)
        return self.drop_path(out) + shortcut


class WideResNet(nn.Module):
    """WRN-`depth`-`widen_factor` for (B, 3, H, W) images (H = W = 32 on CIFAR) -> (B, num_classes) logits.

    Args:
        depth: 6n + 4 (28 for WRN-28-10).
        widen_factor: k, the stage widths are 16k, 32k, 64k.
        attention: an `Attention`, a variant name or the `attention` config mapping {variant, <part>: {...}};
            its convs are asked for at `ConvSite(stage, size, "spatial", index)`, index 1 and 2 in a block.
        attention_stages: stages (1..3) whose 3x3 convs the attention builds; a post-block module (SE) goes
            into every block.
        num_classes: classifier outputs; 0 drops the classifier (forward returns pooled features).
        dropout: dropout between the two convs of a block (the WRN paper's 0.3 variant; 0: none).
        input_size: input side; AA's relative tables of a stage cover its feature map.
        zero_init_residual: false only (the `backbone.zero_init_residual` key every backbone takes): ResNet and
            MnasNet zero the last BN of each residual block, and a pre-activation block ends in a conv with no
            BN after it; true is a ConfigError.
        drop_path_rate: stochastic depth, the rate of the last block (module docstring).
    """

    stage_strides: tuple[int, ...] = (1, 2, 4)

    def __init__(
        self,
        depth: int = 28,
        widen_factor: int = 10,
        attention: str | Mapping[str, Any] | Attention = "none",
        attention_stages: Sequence[int] = (1, 2, 3),
        num_classes: int = 100,
        dropout: float = 0.0,
        input_size: int | None = 32,
        zero_init_residual: bool = False,
        drop_path_rate: float = 0.0,
    ):
        super().__init__()
        if zero_init_residual:
            raise ConfigError(
                "backbone.zero_init_residual=true zeroes the last BN of each residual block, and a Wide ResNet's "
                "pre-activation blocks end in a conv with no BN after it; add backbone.zero_init_residual=false "
                "(experiment=quickstart, the default, sets it true)"
            )
        if (depth - 4) % 6 != 0 or depth < 10:
            raise ValueError(f"WRN depth must be 6n + 4 with n >= 1 (e.g. 16, 22, 28, 40), got {depth}")
        attention = create_attention(attention)
        check_stage_ids(attention, attention_stages, range(1, 4), "layer1..layer3")
        blocks_per_stage = (depth - 4) // 6
        rates = iter(drop_path_rates(drop_path_rate, 3 * blocks_per_stage, 3 * blocks_per_stage - 1))
        self.grad_checkpointing = False
        self.conv1 = nn.Conv2d(3, 16, 3, padding=1, bias=False)
        post = attention.post()
        in_channels = 16
        for stage, width in enumerate((16 * widen_factor, 32 * widen_factor, 64 * widen_factor), start=1):
            size = feature_size(input_size, self.stage_strides[stage - 1])
            convs = [
                attention.conv(ConvSite(stage, size, index=index)) if stage in attention_stages else plain_conv
                for index in (1, 2)
            ]
            blocks = []
            for index in range(blocks_per_stage):
                stride = 2 if stage > 1 and index == 0 else 1
                blocks.append(WideBasicBlock(in_channels, width, stride, convs, post, dropout, next(rates)))
                in_channels = width
            setattr(self, f"layer{stage}", nn.Sequential(*blocks))
        self.bn = nn.BatchNorm2d(in_channels)
        self.relu = nn.ReLU(inplace=True)
        self.num_features = in_channels
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(in_channels, num_classes) if num_classes > 0 else nn.Identity()
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward_features(self, x: Tensor) -> Tensor:
        """(B, 3, H, W) -> (B, 64k, H/4, W/4), after the final BN-ReLU."""
        x = self.conv1(x)
        if self.grad_checkpointing and not torch.jit.is_scripting():
            x = checkpoint_blocks([self.layer1, self.layer2, self.layer3], x)
        else:
            x = self.layer3(self.layer2(self.layer1(x)))
        return self.relu(self.bn(x))

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(torch.flatten(self.avgpool(self.forward_features(x)), 1))

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """timm's: checkpoint each block of layer1..layer3 (not the stem conv or the final BN and classifier)."""
        self.grad_checkpointing = enable


@register_model(WideResNet)
def wrn16_8(attention: Attention | str = "none", **kwargs: Any) -> WideResNet:
    """WRN-16-8."""
    return WideResNet(16, 8, attention, **kwargs)


@register_model(WideResNet)
def wrn28_10(attention: Attention | str = "none", **kwargs: Any) -> WideResNet:
    """WRN-28-10, the AA paper's CIFAR-100 network."""
    return WideResNet(28, 10, attention, **kwargs)
