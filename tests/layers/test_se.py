"""SqueezeExcite against the formula and SE-ResNet-50's published parameter count."""

import pytest
import torch
from torch import nn
from torchvision.models import resnet50

from aaconv.layers import SqueezeExcite
from aaconv.layers.se import reduced_channels


def test_matches_formula():
    torch.manual_seed(0)
    se = SqueezeExcite(32, reduction=4).double()
    x = torch.randn(2, 32, 5, 3, dtype=torch.float64)
    w1, b1 = se.fc1.weight[:, :, 0, 0], se.fc1.bias
    w2, b2 = se.fc2.weight[:, :, 0, 0], se.fc2.bias
    squeezed = x.mean((2, 3))
    gate = torch.sigmoid(torch.relu(squeezed @ w1.T + b1) @ w2.T + b2)
    torch.testing.assert_close(se(x), x * gate[:, :, None, None])


@pytest.mark.parametrize(
    "channels,reduction,divisor,expected",
    [(256, 16, 8, 16), (64, 16, 8, 8), (96, 16, 8, 8), (200, 16, 8, 16), (40, 4, 1, 10)],
)
def test_reduced_channels_rounding(channels, reduction, divisor, expected):
    assert reduced_channels(channels, reduction, divisor) == expected


def test_se_resnet50_parameter_count():
    """ResNet-50 plus one SE (r=16) after each bottleneck's last BN: timm seresnet50 has 28,088,024."""
    base = sum(p.numel() for p in resnet50().parameters())
    widths = [256] * 3 + [512] * 4 + [1024] * 6 + [2048] * 3
    extra = sum(sum(p.numel() for p in SqueezeExcite(c, 16).parameters()) for c in widths)
    assert base == 25_557_032
    assert base + extra == 28_088_024


def test_explicit_hidden_width():
    se = SqueezeExcite(64, rd_channels=4)
    assert se.fc1.out_channels == 4 and isinstance(se.fc2, nn.Conv2d)


def test_torch_compile_matches_eager():
    se = SqueezeExcite(16, reduction=4)
    x = torch.randn(2, 16, 4, 4)
    torch.testing.assert_close(torch.compile(se)(x), se(x))
