"""Training steps on a CUDA device: AMP (bf16, fp16 with GradScaler) for every attention variant, channels_last,
torch.compile with AA (SDPA and flex paths). Skipped without a GPU; scripts/gpu_check.sh runs them."""

import copy

import pytest
import torch
import torch.nn.functional as F

from aaconv.layers import VARIANTS
from aaconv.models import create_model

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]


def batch(size: int = 64):
    g = torch.Generator(device="cuda").manual_seed(0)
    images = torch.randn(8, 3, size, size, device="cuda", generator=g).contiguous(memory_format=torch.channels_last)
    return images, torch.arange(8, device="cuda") % 4


def train_steps(model, dtype, steps: int = 6) -> list[float]:
    """Fits one fixed batch: the loss must fall whatever the precision."""
    images, targets = batch()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.02, momentum=0.9)
    scaler = torch.amp.GradScaler("cuda", enabled=dtype == torch.float16)
    losses = []
    for _ in range(steps):
        with torch.autocast("cuda", dtype=dtype):
            loss = F.cross_entropy(model(images), targets)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad(set_to_none=True)
        losses.append(loss.item())
    return losses


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("variant", VARIANTS)
def test_amp_channels_last_training_fits_a_batch(variant, dtype):
    torch.manual_seed(0)
    model = create_model("resnet18", variant, num_classes=4, input_size=64).cuda()
    model = model.to(memory_format=torch.channels_last)
    before = [p.detach().clone() for p in model.parameters()]
    losses = train_steps(model, dtype)
    assert all(torch.isfinite(torch.tensor(losses))), losses
    assert losses[-1] < losses[0], losses
    assert all(p.dtype == torch.float32 for p in model.parameters())  # AMP keeps fp32 master weights
    changed = sum(not torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))
    assert changed == len(before)  # fp16: the scaler skipped no step for good (every parameter moved)


@pytest.mark.parametrize("impl", ["fused", "flex"])
def test_compiled_aa_matches_eager(impl):
    torch.manual_seed(1)
    model = create_model("resnet18", {"variant": "aa", "aa": {"impl": impl}}, num_classes=4, input_size=64).cuda()
    compiled = torch.compile(copy.deepcopy(model))
    images, targets = batch()
    results = []
    for m in (model, compiled):
        loss = F.cross_entropy(m(images), targets)
        loss.backward()
        results.append((loss.detach(), [p.grad for p in m.parameters()]))
    torch.testing.assert_close(results[1][0], results[0][0], rtol=1e-3, atol=1e-3)
    for got, expected in zip(results[1][1], results[0][1], strict=True):
        torch.testing.assert_close(got, expected, rtol=5e-2, atol=5e-3)
    losses = train_steps(compiled, torch.bfloat16)  # compiled, under autocast
    assert all(torch.isfinite(torch.tensor(losses))) and losses[-1] < losses[0], losses
