"""aaconv.engine.attention_maps against the papers' formulas written out by hand, on tiny layers."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from aaconv.engine import attention_maps as am
from aaconv.errors import ConfigError
from aaconv.layers import AAConv2d, AWConv2d, SqueezeExcite, create_attention

f64 = torch.float64


def hand_written_probs(layer: AAConv2d, qkv: torch.Tensor) -> torch.Tensor:
    """softmax_j(q_i . k_j + q_i . rW[x_j - x_i] + q_i . rH[y_j - y_i]) with q scaled by dk_h^-1/2, one head and
    one (i, j) at a time (Bello et al. 2019, section 3): (N_h, HW, HW) for the first sample."""
    attn = layer.attention
    _, _, height, width = qkv.shape
    dkh = attn.dk // attn.num_heads
    centre = attn.max_size - 1
    out = torch.zeros(attn.num_heads, height * width, height * width, dtype=f64)
    for n in range(attn.num_heads):
        q = qkv[0, n * dkh : (n + 1) * dkh].double() * dkh**-0.5
        k = qkv[0, attn.dk + n * dkh : attn.dk + (n + 1) * dkh].double()
        for i in range(height * width):
            yi, xi = divmod(i, width)
            for j in range(height * width):
                yj, xj = divmod(j, width)
                logit = q[:, yi, xi] @ k[:, yj, xj]
                if attn.rel_width is not None:
                    rel = attn.rel_width[centre + xj - xi].double() + attn.rel_height[centre + yj - yi].double()
                    logit = logit + q[:, yi, xi] @ rel
                out[n, i, j] = logit
    return out.softmax(-1)


def tiny_aa(**options) -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(AAConv2d(6, 8, 3, dk=8, dv=4, num_heads=2, max_size=6, **options))


@pytest.mark.parametrize("options", [{}, {"relative": False}, {"stride": 2}, {"memory_pool": True}])
def test_aa_probabilities_equal_the_hand_written_relative_attention(options) -> None:
    model = tiny_aa(**options)
    with torch.no_grad():  # non-trivial relative tables, so a wrong offset or axis shows
        for table in (model[0].attention.rel_width, model[0].attention.rel_height):
            if table is not None:
                table.normal_(0, 1)
    x = torch.randn(1, 6, 5, 4)
    qkv, _ = am.run_captured(model, x, ["0"])["0"]
    probs = am.aa_attention_probs(model[0], qkv)
    assert probs.shape == (1, 2, qkv.shape[2] * qkv.shape[3], qkv.shape[2] * qkv.shape[3])
    torch.testing.assert_close(probs[0].double(), hand_written_probs(model[0], qkv), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(probs.sum(-1), torch.ones(probs.shape[:3]))


def test_aa_probabilities_reproduce_the_layers_own_attention_output() -> None:
    """probs @ v, heads concatenated, is what the layer's (fused) attention computes from the same qkv."""
    model = tiny_aa().double()
    x = torch.randn(2, 6, 4, 4, dtype=f64)
    qkv, _ = am.run_captured(model, x, ["0"])["0"]
    attn = model[0].attention
    probs = am.aa_attention_probs(model[0], qkv).double()
    v = qkv[:, 2 * attn.dk :].reshape(2, attn.num_heads, attn.dv // attn.num_heads, 16).transpose(-1, -2)
    out = (probs @ v).transpose(-1, -2).reshape(2, attn.dv, 4, 4)
    torch.testing.assert_close(out, attn(qkv))


def test_aa_maps_take_the_grid_cell_under_each_query() -> None:
    model = tiny_aa(stride=2)  # 8x6 image -> 4x3 attention grid
    image = torch.randn(1, 6, 8, 6)
    maps = am.aa_maps(model, image, "0", [(0, 0), (5, 3), (3, 7)])
    assert maps.cells == [(0, 0), (2, 1), (1, 3)]
    qkv, _ = am.run_captured(model, image, ["0"])["0"]
    probs = am.aa_attention_probs(model[0], qkv)[0]
    for (col, row), per_head in zip(maps.cells, maps.maps, strict=True):
        torch.testing.assert_close(per_head, probs[:, row * 3 + col].unflatten(-1, (4, 3)))
    torch.testing.assert_close(maps.maps.sum((2, 3)), torch.ones(3, 2))


def test_a_query_outside_the_image_is_one_line_with_the_valid_range() -> None:
    with pytest.raises(ConfigError, match=r"^query 6,2 is outside the 6x8 image .* X in 0..5 and Y in 0..7$"):
        am.aa_maps(tiny_aa(), torch.randn(1, 6, 8, 6), "0", [(6, 2)])


def test_aw_attention_is_the_papers_generator_and_modulates_the_kernel() -> None:
    """A = sigmoid(fc2(relu(fc1(AvgPool_kxk(X))))), and the layer's output is conv(X, K * A + K) per sample."""
    torch.manual_seed(0)
    layer = AWConv2d(8, 12, 3, num_maps=4, reduction=2)
    x = torch.randn(2, 8, 6, 6)
    attention = am.aw_kernel_attention(layer, x)
    pooled = F.adaptive_avg_pool2d(x, 3)
    by_hand = torch.sigmoid(
        F.conv2d(F.relu(F.conv2d(pooled, layer.fc1.weight, layer.fc1.bias)), layer.fc2.weight, layer.fc2.bias)
    )
    torch.testing.assert_close(attention, by_hand.view(2, 4, 8, 3, 3))
    for b in range(2):  # filter o uses map o // (C_out / M)
        kernel = layer.conv.weight * (1 + attention[b].repeat_interleave(3, dim=0))
        torch.testing.assert_close(F.conv2d(x[b : b + 1], kernel, padding=1), layer(x)[b : b + 1])
    maps = am.aw_maps(nn.Sequential(layer), x[:1], "0")
    torch.testing.assert_close(maps.per_offset, attention[0].mean(1))
    torch.testing.assert_close(maps.per_channel, attention[0].mean((2, 3)))


class AvgMaxGate(nn.Module):
    """A channel gate of another formula (CBAM's channel half: shared MLP on average and max pooling)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.fc1 = nn.Conv2d(channels, 2, 1)
        self.fc2 = nn.Conv2d(2, channels, 1)

    def mlp(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.relu(self.fc1(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(self.mlp(x.mean((2, 3), keepdim=True)) + self.mlp(x.amax((2, 3), keepdim=True)))


def test_gate_factors_are_read_from_the_forward_whatever_the_gate_computes() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(SqueezeExcite(16, reduction=4), AvgMaxGate(16))
    x = torch.randn(1, 16, 5, 5)
    gates = am.gate_values(model, x, ["0", "1"])
    se = model[0]
    squeeze = torch.sigmoid(se.fc2(F.relu(se.fc1(x.mean((2, 3), keepdim=True))))).flatten()
    torch.testing.assert_close(gates["0"], squeeze)
    y = model[0](x)
    other = model[1]
    expected = torch.sigmoid(other.mlp(y.mean((2, 3), keepdim=True)) + other.mlp(y.amax((2, 3), keepdim=True)))
    torch.testing.assert_close(gates["1"], expected.flatten())
    zero = am.gate_factor(torch.zeros(1, 2, 3, 3), torch.zeros(1, 2, 3, 3))
    assert zero.isnan().all()  # no input, no factor to read


def test_layers_are_found_by_kind_and_aw_is_no_gate() -> None:
    builders = create_attention("aw+aa", aa={"num_heads": 2, "min_dk_per_head": 2}, aw={"num_maps": 1})
    model = nn.Sequential(builders.conv(32, 32, 3), SqueezeExcite(32), nn.Conv2d(32, 32, 1))  # M = 1: SE's layout
    assert am.attention_layers(model) == {"0": "aa", "0.conv": "aw", "1": "gate"}


def test_a_missing_layer_is_one_line_listing_the_valid_ones() -> None:
    layers = {"layer2.0.conv1": "aa", "layer2.1.conv1": "aa", "layer2.0.se": "gate"}
    with pytest.raises(
        ConfigError,
        match=r"^no attention layer 'layer9' .*; valid layers: layer2.0.conv1, layer2.1.conv1, layer2.0.se$",
    ):
        am.check_layer(layers, "layer9")
    with pytest.raises(ConfigError, match=r"^checkpoint x.pt has no attention layers .*attention=aa"):
        am.require_attention({}, "checkpoint x.pt")


class Recorder:
    def __init__(self) -> None:
        self.images: dict[str, torch.Tensor] = {}

    def log_images(self, images, step: int) -> None:
        self.images.update(images)


def test_logged_pictures_are_the_first_images_then_one_map_per_head() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(AAConv2d(3, 8, 3, stride=2, dk=8, dv=4, num_heads=2, max_size=6))
    dataset = [(torch.randn(3, 8, 6), 0) for _ in range(5)]
    recorder = Recorder()
    am.log_attention_images(recorder, model, dataset, step=3, logger_cfg={"attention_images": 2})
    [(tag, picture)] = recorder.images.items()
    assert tag == "attention/0" and picture.shape == (3, 2 * 8, 3 * 6)  # rows: images; columns: image, 2 heads
    shown = dataset[1][0]
    torch.testing.assert_close(picture[:, 8:, :6], (shown - shown.min()) / (shown.max() - shown.min()))
    for row in range(2):
        for head in range(2):
            tile = picture[:, row * 8 : (row + 1) * 8, 6 * (head + 1) : 6 * (head + 2)]
            assert 0 <= tile.min() and tile.amin(0).max() == 1  # each map is white at its maximum
    am.log_attention_images(recorder := Recorder(), model, dataset, step=3, logger_cfg={"attention_images": 0})
    assert not recorder.images


@pytest.mark.slow
def test_training_with_tensorboard_logs_the_attention_pictures_at_each_evaluation(tmp_path, tiny_config) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from aaconv.engine.trainer import Trainer
    from aaconv.tasks import build_task

    cfg = tiny_config(
        "attention=aa",
        "logger=tensorboard",
        "logger.attention_images=3",
        "trainer.max_steps=2",
        "trainer.max_eval_batches=1",
    )
    Trainer(cfg, build_task(cfg), tmp_path).fit()
    events = EventAccumulator(str(tmp_path / "tensorboard"), size_guidance={"images": 0})
    events.Reload()
    [tag] = events.Tags()["images"]
    [image] = events.Images(tag)
    assert tag == "attention/layer2.0.conv1" and image.step == 2
    assert (image.height, image.width) == (3 * 32, 9 * 32)  # 3 images; each, then ResNet-18's 8 heads
