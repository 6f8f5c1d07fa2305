"""Stochastic depth (Huang et al. 2016) in every registered network, through `drop_path_rate`.

The linear rule is read from the modules of every registry entry (built on the meta device); the numeric checks
run on the smallest network of each class (and ResNet-50 for the Bottleneck block) at 16 px.
"""

import pytest
import timm
import torch
from timm.layers import DropPath

from aaconv.errors import ConfigError
from aaconv.models import MODELS, create_model
from helpers.models import SMALL, build, drop_rates, residual_blocks

RATE = 0.5


@pytest.mark.parametrize("name", list(MODELS))
def test_rates_rise_linearly_over_the_blocks(name):
    with torch.device("meta"):
        model = create_model(name, drop_path_rate=RATE)
    found = drop_rates(model)
    dropped = [i for i, rate in enumerate(found) if rate > 0]
    assert len(dropped) >= len(found) // 2, "stochastic depth on most blocks"
    # timm's two conventions: ResNet drop_path_rate * i / (N - 1), EfficientNet drop_path_rate * i / N
    spans = [span for span in (len(found) - 1, len(found)) if all(found[i] == RATE * i / span for i in dropped)]
    assert spans, found


def test_timm_conventions_per_family():
    with torch.device("meta"):
        resnet, mnasnet = create_model("resnet18", drop_path_rate=0.7), create_model("mnasnet_a1", drop_path_rate=0.8)
    assert drop_rates(resnet) == [0.7 * i / 7 for i in range(8)]  # timm resnet.py: the last of 8 blocks gets 0.7
    residual = [block.residual for block in residual_blocks(mnasnet)]
    assert drop_rates(mnasnet) == [0.8 * i / 16 if residual[i] else 0.0 for i in range(16)]  # timm's EfficientNet rule


@pytest.mark.parametrize("name", SMALL)
def test_rate_zero_and_eval_mode_are_the_plain_network(name):
    torch.manual_seed(0)
    plain = build(name)
    torch.manual_seed(0)
    zero = build(name, drop_path_rate=0.0)
    torch.manual_seed(0)
    dropping = build(name, drop_path_rate=RATE)
    assert not any(isinstance(m, DropPath) for m in zero.modules())
    assert any(isinstance(m, DropPath) for m in dropping.modules())
    keys = [(k, v.shape) for k, v in plain.state_dict().items()]
    assert [(k, v.shape) for k, v in dropping.state_dict().items()] == keys
    x = torch.randn(2, 3, 16, 16)
    plain.eval(), dropping.eval()
    with torch.no_grad():
        torch.testing.assert_close(dropping(x), plain(x), rtol=0, atol=0)
    plain.train(), zero.train()
    torch.manual_seed(1)  # the classifier's dropout
    expected = plain(x)
    torch.manual_seed(1)
    torch.testing.assert_close(zero(x), expected, rtol=0, atol=0)


@pytest.mark.parametrize("name", SMALL)
def test_the_last_block_drops_its_branch_for_a_fraction_rate_of_the_samples(name):
    model = build(name, drop_path_rate=RATE).train()
    block = [b for b in residual_blocks(model) if isinstance(b.drop_path, DropPath)][-1]
    seen: list[torch.Tensor] = []
    block.register_forward_pre_hook(lambda module, args: seen.append(args[0]))
    with torch.no_grad():
        model(torch.randn(2, 3, 16, 16))
    block.drop_path.register_forward_hook(lambda module, args, out: seen.append(out))
    torch.manual_seed(0)
    with torch.no_grad():
        block(torch.randn(4096, seen[0].shape[1], 1, 1))  # 1 x 1 maps: 4096 samples in a second
    dropped = (seen[-1].flatten(1) == 0).all(dim=1).float().mean().item()
    assert dropped == pytest.approx(block.drop_path.drop_prob, abs=0.03)  # 4 standard deviations at p = 0.5


@pytest.mark.parametrize("rate", [-0.1, 1.0])
def test_a_rate_outside_0_1_is_one_line(rate):
    with pytest.raises(ConfigError, match=r"backbone.drop_path_rate must be in \[0, 1\)"):
        create_model("resnet18", drop_path_rate=rate)


def test_timm_drop_path_rate_builds_the_rates():
    model = timm.create_model("aa_resnet18", drop_path_rate=0.1, device="meta")
    assert drop_rates(model) == pytest.approx([0.1 * i / 7 for i in range(8)], abs=0)
