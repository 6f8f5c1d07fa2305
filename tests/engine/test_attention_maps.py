"""aaconv.engine.attention_maps against the papers' formulas written out by hand, on tiny layers, and what a part
registers to be drawn."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from aaconv.engine import attention_maps as am
from aaconv.errors import ConfigError
from aaconv.layers import AAConv2d, AWConv2d, SqueezeExcite, create_attention, parts
from aaconv.layers.parts import _PARTS, AttentionPart, Drawing, PartOptions
from aaconv.layers.se import gate_factor

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
    attention = am.read_layers(model, x, ["0"])["0"]["attention"]
    with torch.no_grad():
        qkv = model[0].attention_qkv(x)
    rows, cols = qkv.shape[2:]
    assert attention.shape == (1, 2, rows, cols, rows, cols)
    probs = attention.flatten(2, 3).flatten(-2)
    torch.testing.assert_close(probs[0].double(), hand_written_probs(model[0], qkv), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(probs.sum(-1), torch.ones(probs.shape[:3]))


def test_aa_probabilities_reproduce_the_layers_own_attention_output() -> None:
    """probs @ v, heads concatenated, is what the layer's (fused) attention computes from the same qkv."""
    model = tiny_aa().double()
    x = torch.randn(2, 6, 4, 4, dtype=f64)
    with torch.no_grad():
        qkv = model[0].attention_qkv(x)
    attn = model[0].attention
    probs = am.read_layers(model, x, ["0"])["0"]["attention"].flatten(2, 3).flatten(-2)
    v = qkv[:, 2 * attn.dk :].reshape(2, attn.num_heads, attn.dv // attn.num_heads, 16).transpose(-1, -2)
    out = (probs @ v).transpose(-1, -2).reshape(2, attn.dv, 4, 4)
    with torch.no_grad():
        torch.testing.assert_close(out, attn(qkv))


def test_aa_maps_take_the_grid_cell_under_each_query() -> None:
    model = tiny_aa(stride=2)  # 8x6 image -> 4x3 attention grid
    image = torch.randn(1, 6, 8, 6)
    maps = am.query_maps(model, image, "0", [(0, 0), (5, 3), (3, 7)])
    assert maps.cells == [(0, 0), (2, 1), (1, 3)]
    with torch.no_grad():
        qkv = model[0].attention_qkv(image)
    probs = hand_written_probs(model[0], qkv).float()
    for (col, row), per_head in zip(maps.cells, maps.maps, strict=True):
        torch.testing.assert_close(per_head, probs[:, row * 3 + col].unflatten(-1, (4, 3)), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(maps.maps.sum((2, 3)), torch.ones(3, 2))


def test_a_query_outside_the_image_is_one_line_with_the_valid_range() -> None:
    with pytest.raises(ConfigError, match=r"^query 6,2 is outside the 6x8 image .* X in 0..5 and Y in 0..7$"):
        am.query_maps(tiny_aa(), torch.randn(1, 6, 8, 6), "0", [(6, 2)])


def test_aw_attention_is_the_papers_generator_and_modulates_the_kernel() -> None:
    """A = sigmoid(fc2(relu(fc1(AvgPool_kxk(X))))), and the layer's output is conv(X, K * A + K) per sample."""
    torch.manual_seed(0)
    layer = AWConv2d(8, 12, 3, num_maps=4, reduction=2)
    x = torch.randn(2, 8, 6, 6)
    attention = am.read_layers(nn.Sequential(layer), x, ["0"])["0"]["attention"]
    pooled = F.adaptive_avg_pool2d(x, 3)
    by_hand = torch.sigmoid(
        F.conv2d(F.relu(F.conv2d(pooled, layer.fc1.weight, layer.fc1.bias)), layer.fc2.weight, layer.fc2.bias)
    )
    torch.testing.assert_close(attention, by_hand.view(2, 4, 8, 3, 3))
    for b in range(2):  # filter o uses map o // (C_out / M)
        kernel = layer.conv.weight * (1 + attention[b].repeat_interleave(3, dim=0))
        torch.testing.assert_close(F.conv2d(x[b : b + 1], kernel, padding=1), layer(x)[b : b + 1])


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
    gates = {name: numbers["factor"][0] for name, numbers in am.read_layers(model, x, ["0", "1"]).items()}
    se = model[0]
    squeeze = torch.sigmoid(se.fc2(F.relu(se.fc1(x.mean((2, 3), keepdim=True))))).flatten()
    torch.testing.assert_close(gates["0"], squeeze)
    y = model[0](x)
    other = model[1]
    expected = torch.sigmoid(other.mlp(y.mean((2, 3), keepdim=True)) + other.mlp(y.amax((2, 3), keepdim=True)))
    torch.testing.assert_close(gates["1"], expected.flatten())
    zero = gate_factor(torch.zeros(1, 2, 3, 3), torch.zeros(1, 2, 3, 3))
    assert zero.isnan().all()  # no input, no factor to read


def hand_written_cbam(module: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Woo et al. 2018, eqs. 2-3, from the module's weights: M_c = sigmoid(MLP(AvgPool x) + MLP(MaxPool x)) with one
    MLP fc2(relu(fc1(.))); M_s = sigmoid(BN(conv7x7([mean_c x'; max_c x']))) on x' = M_c x, BN with its running
    statistics -> (M_c (C,), M_s (H, W)) of the first sample, in float64."""
    x = x[0].double()

    def mlp(v: torch.Tensor) -> torch.Tensor:  # v: (C,)
        hidden = (module.fc1.weight.double().flatten(1) @ v + module.fc1.bias.double()).clamp_min(0)
        return module.fc2.weight.double().flatten(1) @ hidden + module.fc2.bias.double()

    channel = torch.sigmoid(mlp(x.mean((1, 2))) + mlp(x.flatten(1).max(1).values))
    gated = x * channel[:, None, None]
    pooled = torch.stack([gated.mean(0), gated.max(0).values])  # (2, H, W)
    weight = module.spatial_conv.weight.double()[0]  # (2, 7, 7)
    k = weight.shape[-1]
    padded = F.pad(pooled, (k // 2,) * 4)
    height, width = pooled.shape[1:]
    conv = torch.zeros(height, width, dtype=f64)
    for i in range(height):
        for j in range(width):
            conv[i, j] = (padded[:, i : i + k, j : j + k] * weight).sum()
    bn = module.spatial_bn
    normed = (conv - bn.running_mean.double()) / (bn.running_var.double() + bn.eps).sqrt()
    return channel, torch.sigmoid(normed * bn.weight.double() + bn.bias.double())


def test_cbam_gates_equal_the_papers_channel_then_spatial_attention() -> None:
    from aaconv.layers.cbam import CBAM
    from aaconv.models import create_model

    torch.manual_seed(0)
    model = create_model("resnet18", "cbam", num_classes=3)
    cbams = {name: m for name, m in model.named_modules() if isinstance(m, CBAM)}
    with torch.no_grad():  # a trained spatial BN: running statistics and affine that a wrong mode would show
        for m in cbams.values():
            m.spatial_bn.running_mean.normal_(0, 0.5)
            m.spatial_bn.running_var.uniform_(0.5, 2)
            m.spatial_bn.weight.uniform_(0.5, 2)
            m.spatial_bn.bias.normal_(0, 0.5)
    layers = am.attention_layers(model)
    assert layers == dict.fromkeys(cbams, "cbam") and len(cbams) == 8  # CBAM, not a channel gate
    model.train()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    image = torch.randn(1, 3, 32, 32)
    maps = am.read_layers(model, image, list(cbams))
    assert model.training  # the mode is put back, and no BN statistic moved
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())
    inputs, outputs = {}, {}

    def record(module: nn.Module, args: tuple, out: torch.Tensor) -> None:
        name = next(n for n, m in cbams.items() if m is module)
        inputs[name], outputs[name] = args[0], out

    for m in cbams.values():
        m.register_forward_hook(record)
    with torch.no_grad():
        model.eval()(image)
    assert list(maps) == list(cbams)
    for name, gates in maps.items():
        channel, spatial = hand_written_cbam(cbams[name], inputs[name])
        got_channel, got_spatial = gates["channel"][0], gates["spatial"][0]
        torch.testing.assert_close(got_channel.double(), channel, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(got_spatial.double(), spatial, rtol=1e-5, atol=1e-6)
        assert got_spatial.shape == outputs[name].shape[-2:]  # the block's output map
        assert (got_channel > 0).all() and (got_channel < 1).all()
        assert (got_spatial > 0).all() and (got_spatial < 1).all()
        # the module's output is its input times both gates
        product = inputs[name][0] * got_channel[:, None, None] * got_spatial
        torch.testing.assert_close(product, outputs[name][0])


def test_layers_are_found_by_kind_and_aw_and_cbam_are_no_gates() -> None:
    from aaconv.layers.cbam import CBAM

    builders = create_attention("aw+aa", aa={"num_heads": 2, "min_dk_per_head": 2}, aw={"num_maps": 1})
    model = nn.Sequential(
        builders.conv()(32, 32, 3), SqueezeExcite(32), nn.Conv2d(32, 32, 1), CBAM(32)
    )  # AW with M = 1 and CBAM's channel MLP have SE's fc1 / fc2 layout
    assert am.attention_layers(model) == {"0": "aa", "0.conv": "aw", "1": "gate", "3": "cbam"}


def test_a_missing_layer_is_one_line_listing_the_valid_ones() -> None:
    layers = {"layer2.0.conv1": "aa", "layer2.1.conv1": "aa", "layer2.0.post_attention": "gate"}
    with pytest.raises(
        ConfigError,
        match=r"^no attention layer 'layer9' .*; valid layers: layer2.0.conv1, layer2.1.conv1, layer2.0.post_attention$",
    ):
        am.check_layer(layers, "layer9")
    with pytest.raises(
        ConfigError,
        match=r"^checkpoint x.pt has no attention layers .*attention=se, cbam, aa, aw, aa_se, aa_cbam, .*aw_cbam, "
        r"aw_aa, aw_aa_se or aw_aa_cbam$",
    ):
        am.require_attention({}, "checkpoint x.pt")


class Probe(nn.Module):
    """A layer of a part the engine has never heard of: y = x * w, one weight per channel."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.linspace(0.5, 2.0, channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.weight[:, None, None]


def read_probe(module: Probe, x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
    return {"weight": module.weight.expand(len(x), -1), "energy": (y * y).mean(1)}


def test_a_new_parts_layers_are_found_and_read_with_no_edit_in_the_engine(monkeypatch) -> None:
    parts()  # the registry loaded, so the probe part comes last
    probe = AttentionPart(
        name="probe",
        slot="post",
        options=PartOptions,
        build=lambda options: Probe,
        modules=(Probe,),
        drawing=Drawing(kind="probe", read=read_probe, together=True),
    )
    monkeypatch.setitem(_PARTS.entries, "probe", probe)
    model = nn.Sequential(SqueezeExcite(4, reduction=2), Probe(4))
    assert am.attention_layers(model) == {"0": "gate", "1": "probe"}
    assert list(am.drawings())[-1] == "probe"
    x = torch.randn(2, 4, 3, 5)
    numbers = am.read_layers(model, x, ["1"])["1"]
    torch.testing.assert_close(numbers["weight"], model[1].weight.detach().expand(2, -1))
    torch.testing.assert_close(numbers["energy"], (model(x) ** 2).mean(1).detach())
    assert am.query_layers(am.attention_layers(model)) == []  # not drawn per query: no logged images


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
