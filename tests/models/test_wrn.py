"""Wide ResNet: the WRN paper's parameter counts, attention placement, and shapes."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from aaconv.errors import ConfigError
from aaconv.layers import AAConv2d, SqueezeExcite
from aaconv.models import create_model
from aaconv.models.wrn import WideResNet
from aaconv.tasks import build_task


def count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def reference_wrn_params(depth: int, k: int, num_classes: int) -> int:
    """Parameters of WRN-depth-k counted by hand from Zagoruyko & Komodakis (2016), Table 1."""
    n = (depth - 4) // 6
    total = 3 * 16 * 9  # stem conv
    in_channels = 16
    for width in (16 * k, 32 * k, 64 * k):
        for _ in range(n):
            total += 2 * in_channels + in_channels * width * 9 + 2 * width + width * width * 9  # bn1, conv1, bn2, conv2
            total += in_channels * width if in_channels != width else 0  # 1x1 shortcut
            in_channels = width
    return total + 2 * in_channels + in_channels * num_classes + num_classes  # final BN, classifier


def test_wrn28_10_matches_the_hand_count_and_the_papers_size() -> None:
    model = create_model("wrn28_10", "none", num_classes=100)
    assert count(model) == reference_wrn_params(28, 10, 100) == 36_536_884  # the WRN paper's "36.5M"


def test_forward_shapes_and_gradients() -> None:
    model = WideResNet(depth=10, widen_factor=2, num_classes=7)
    x = torch.randn(2, 3, 32, 32, requires_grad=True)
    out = model(x)
    assert out.shape == (2, 7)
    out.sum().backward()
    assert x.grad is not None and all(p.grad is not None for p in model.parameters())


def test_se_goes_into_every_block_and_aa_into_every_3x3_conv_of_the_chosen_stages() -> None:
    se = WideResNet(depth=16, widen_factor=1, attention="se", num_classes=10)
    assert sum(isinstance(m, SqueezeExcite) for m in se.modules()) == 3 * 2
    aa = WideResNet(depth=16, widen_factor=8, attention="aa", attention_stages=(2, 3), num_classes=10)
    assert sum(isinstance(m, AAConv2d) for m in aa.modules()) == 2 * 2 * 2
    assert not any(isinstance(m, AAConv2d) for m in aa.layer1.modules())
    assert aa(torch.randn(1, 3, 32, 32)).shape == (1, 10)


def test_bad_depth_or_stage_is_refused() -> None:
    with pytest.raises(ValueError, match="6n \\+ 4"):
        WideResNet(depth=27)
    with pytest.raises(ConfigError, match=r"backbone.attention_stages must be among 1..3 \(layer1..layer3\)"):
        WideResNet(depth=10, attention_stages=(4,))


def test_aa_placement_keys_pick_convs_and_pooled_stages() -> None:
    """attention.aa.basic_block_convs / memory_pool_stages, as for the ResNets: AA only where asked, pooled where asked."""

    spec = {"variant": "aa", "aa": {"basic_block_convs": [2], "memory_pool_stages": [1]}}
    with torch.device("meta"):
        model = WideResNet(depth=10, widen_factor=1, attention=spec, num_classes=10)
    block = model.layer1[0]
    assert not isinstance(block.conv1, AAConv2d) and isinstance(block.conv2, AAConv2d) and block.conv2.memory_pool
    assert isinstance(model.layer2[0].conv2, AAConv2d) and not model.layer2[0].conv2.memory_pool
    with pytest.raises(ValueError, match=r"attention part aa found no conv to take in wrn16_8 .*basic_block_convs"):
        create_model("wrn16_8", {"variant": "aa", "aa": {"basic_block_convs": [3]}})


def test_zero_init_residual_false_builds_and_true_is_one_config_error(tiny_config) -> None:
    """`backbone.zero_init_residual`, which every backbone config takes: WRN's pre-activation blocks have no
    last BN to zero, so true is refused in one line, and false builds the model from the command line's config."""
    cfg = tiny_config("backbone=wrn28_10", "backbone.zero_init_residual=false")
    model = build_task(cfg).build_model()
    assert isinstance(model, WideResNet) and model.fc.out_features == cfg.data.num_classes
    with pytest.raises(
        ConfigError, match=r"pre-activation blocks end in a conv.*add backbone.zero_init_residual=false"
    ):
        WideResNet(depth=10, widen_factor=1, zero_init_residual=True)
