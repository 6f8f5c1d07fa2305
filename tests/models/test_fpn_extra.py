"""RetinaNet's P6 / P7 convs on 1-pixel maps (aaconv.models.fpn_extra): the same outputs as nn.Conv2d at every
size, and bfloat16 weight gradients equal to a float64 reference on 1 and 2 threads, where torch's oneDNN kernel
returns garbage for the plain conv (docs/reliability.md)."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torchvision.ops.feature_pyramid_network import LastLevelP6P7

from aaconv.models.fpn_extra import OnePixelSafeConv2d, SafeLastLevelP6P7, one_pixel_safe


@pytest.fixture
def threads(request: pytest.FixtureRequest):
    before = torch.get_num_threads()
    torch.set_num_threads(request.param)
    yield request.param
    torch.set_num_threads(before)


SIZES = [(1, 1), (1, 5), (4, 1), (2, 2), (7, 9)]
CONVS = [(3, 2, 1), (5, 2, 2), (3, 3, 1), (1, 2, 0), (3, 2, 0)]  # kernel, stride, padding


@pytest.mark.parametrize(
    "size,kernel,stride,padding",
    [(size, *conv) for size in SIZES for conv in CONVS if min(size) + 2 * conv[2] >= conv[0]],  # inputs it takes
)
def test_outputs_equal_nn_conv2d_at_every_size(size, kernel, stride, padding):
    torch.manual_seed(0)
    conv = nn.Conv2d(4, 6, kernel, stride, padding)
    x = torch.randn(2, 4, *size)
    torch.testing.assert_close(one_pixel_safe(conv)(x), conv(x), rtol=0, atol=1e-6)


@pytest.mark.parametrize("threads", [1, 2], indirect=True)
@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("batch,kernel", [(1, 3), (2, 3), (4, 5)])
def test_bfloat16_weight_gradient_on_one_pixel_equals_float64(threads, channels_last, batch, kernel):
    torch.manual_seed(threads)
    format = torch.channels_last if channels_last else torch.contiguous_format
    conv = one_pixel_safe(nn.Conv2d(64, 64, kernel, 2, kernel // 2)).to(memory_format=format)
    x = torch.randn(batch, 64, 1, 1).contiguous(memory_format=format)
    for _ in range(3):  # the faulty kernel reads memory it never wrote: repeat to catch it
        conv.zero_grad()
        with torch.autocast("cpu", torch.bfloat16):
            y = conv(x)
        grad_out = torch.randn_like(y)
        y.backward(grad_out)
        reference = torch.nn.grad.conv2d_weight(
            x.bfloat16().double(), conv.weight.shape, grad_out.double(), stride=2, padding=kernel // 2
        )
        torch.testing.assert_close(conv.weight.grad.double(), reference, rtol=0.02, atol=0.05)


def test_p6_p7_keep_torchvisions_parameters_and_random_stream():
    torch.manual_seed(0)
    theirs, after_theirs = LastLevelP6P7(16, 16), torch.rand(4)
    torch.manual_seed(0)
    ours, after_ours = SafeLastLevelP6P7(16, 16), torch.rand(4)
    assert isinstance(ours.p6, OnePixelSafeConv2d) and isinstance(ours.p7, OnePixelSafeConv2d)
    assert torch.equal(after_theirs, after_ours)
    assert theirs.state_dict().keys() == ours.state_dict().keys()
    assert all(torch.equal(a, b) for a, b in zip(theirs.state_dict().values(), ours.state_dict().values(), strict=True))
    p5 = torch.randn(1, 16, 3, 5)
    for a, b in zip(theirs([p5], [p5], ["p5"])[0], ours([p5], [p5], ["p5"])[0], strict=True):
        torch.testing.assert_close(a, b)
