"""AA's relative tables at any map size (aaconv.layers.relative_tables): the built rows exactly where they cover the
map, clipped offsets beyond, the same in every attention implementation, TorchScript and timm's entry points."""

import pytest
import timm
import torch

from aaconv.layers import relative_attention
from aaconv.layers.relative_attention import ATTENTION_IMPLS, TRAINABLE_IMPLS, RelativeAttention2d, attention_reference
from aaconv.layers.relative_tables import relative_table

f64 = torch.float64
IMPLS = [impl for impl in ATTENTION_IMPLS if impl != "auto"]  # flex: its eager forward on the CPU
pytestmark = pytest.mark.filterwarnings("ignore:flex_attention called without torch.compile")


def test_table_by_hand():
    """M = 3: rows for offsets -2..2; S = 2 reads the middle three, S = 5 pads with the outermost rows."""
    table = torch.tensor([[-2.0, 20.0], [-1.0, 10.0], [0.0, 0.0], [1.0, -10.0], [2.0, -20.0]])
    assert torch.equal(relative_table(table, 3), table)
    assert torch.equal(relative_table(table, 2), table[1:4])
    assert relative_table(table, 2).data_ptr() == table[1].data_ptr()  # a view: the built rows, no copy
    offsets = [-2, -2, -2, -1, 0, 1, 2, 2, 2]  # clamp(d, -2, 2) for d = -4..4
    assert torch.equal(relative_table(table, 5), torch.tensor([[d, -10.0 * d] for d in offsets]))


def test_tables_are_consistent_across_sizes():
    """Offset d reads the same row at every size: a size's table is the centre of any larger size's table."""
    table = torch.randn(7, 3)
    for small, large in [(2, 4), (4, 9), (6, 11)]:
        assert torch.equal(relative_table(relative_table(table, large), small), relative_table(table, small))


def _inputs(height: int, width: int, dk_h: int = 4):
    g = torch.Generator().manual_seed(3)
    q, k = (torch.randn(2, 2, height * width, dk_h, dtype=f64, generator=g) for _ in range(2))
    return q, k, torch.randn(2, 2, height * width, 3, dtype=f64, generator=g)


def _qkv(q, k, v, height, width):
    """The (B, 2 dk + dv, H, W) projection RelativeAttention2d splits into q (before its scaling), k and v."""
    return torch.cat([t.transpose(-1, -2).flatten(1, 2) for t in (q * 2.0, k, v)], 1).unflatten(-1, (height, width))


def _central_rows(table: torch.Tensor, size: int) -> torch.Tensor:
    """The policy before clipping existed: the 2S-1 central rows, S <= M."""
    centre = (table.shape[0] - 1) // 2
    return table[centre - size + 1 : centre + size]


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("height,width", [(5, 5), (3, 4), (1, 5)])
def test_covered_sizes_read_exactly_the_built_rows(impl, height, width, monkeypatch):
    """Bit-equal, forward and backward, to the layer reading the central rows directly."""
    attn = RelativeAttention2d(dk=8, dv=6, num_heads=2, max_size=5, impl=impl).double()
    qkv = _qkv(*_inputs(height, width), height, width).requires_grad_(impl in TRAINABLE_IMPLS["cpu"])
    results = []
    for policy in (relative_table, _central_rows):
        monkeypatch.setattr(relative_attention, "relative_table", policy)
        out = attn(qkv)
        grads = torch.autograd.grad(out.sum(), [qkv, attn.rel_width, attn.rel_height]) if qkv.requires_grad else ()
        results.append((out, *grads))
    for new, old in zip(*results, strict=True):
        assert torch.equal(new, old)


@pytest.mark.parametrize("impl", IMPLS)
def test_larger_maps_agree_with_the_reference_on_clipped_tables(impl):
    attn = RelativeAttention2d(dk=8, dv=6, num_heads=2, max_size=3, impl=impl).double()
    height, width = 4, 7  # offsets up to 3 and 6 beyond the tables' 2
    q, k, v = _inputs(height, width)
    attn.scale = 0.5
    clipped_w = attn.rel_width[[0] * 4 + [0, 1, 2, 3, 4] + [4] * 4]  # offsets -6..6
    clipped_h = attn.rel_height[[0, 0, 1, 2, 3, 4, 4]]  # offsets -3..3
    expected = attention_reference(q, k, v, torch.cat([clipped_w, clipped_h]), height, width)
    got = attn(_qkv(q, k, v, height, width))
    torch.testing.assert_close(got, expected.transpose(-1, -2).reshape_as(got), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("impl", TRAINABLE_IMPLS["cpu"])
def test_gradients_reach_the_tables_from_a_larger_map(impl):
    attn = RelativeAttention2d(dk=8, dv=6, num_heads=2, max_size=3, impl=impl).double()
    q, k, v = _inputs(6, 5)
    attn(_qkv(q, k, v, 6, 5)).square().sum().backward()
    reference = RelativeAttention2d(dk=8, dv=6, num_heads=2, max_size=3, impl="reference").double()
    reference.load_state_dict(attn.state_dict())
    reference(_qkv(q, k, v, 6, 5)).square().sum().backward()
    for table, expected in [(attn.rel_width, reference.rel_width), (attn.rel_height, reference.rel_height)]:
        assert (table.grad.abs().sum(1) > 0).all()  # every row, the outermost ones taking the clipped offsets'
        torch.testing.assert_close(table.grad, expected.grad, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("size", [(288, 288), (256, 320)])
def test_timm_model_runs_beyond_its_train_size(size):
    """The FixRes-style test of a 224 px model (timm's validate.py --img-size 288), and a non-square input."""
    model = timm.create_model("aa_resnet18", num_classes=5).eval()
    assert model.layer4[0].conv1.attention.max_size == 7  # built for 224 px
    with torch.no_grad():
        assert model(torch.randn(1, 3, *size)).shape == (1, 5)
    config = timm.data.resolve_data_config({}, model=model)
    assert (config["input_size"], config["crop_pct"]) == ((3, 224, 224), 0.875)  # its pretrained_cfg, as built
