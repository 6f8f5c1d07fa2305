"""The options a GPU run turns on, on the CPU: every attention layer in ResNet-34, ResNet-50 and MnasNet-A1 under
channels_last, bf16 autocast and both (32 px). The variants "aw+aa+se" and "aw+aa+cbam" hold every layer type
together (each variant is a combination of these parts, in the same places), so with "none" they stand for all
twelve at a quarter of the cost.

What is compared, and why:
- channels_last alone is the same arithmetic in another memory order: an attention module's output equals the
  contiguous one (fp32, up to summation order).
- bf16 keeps 8 mantissa bits (unit roundoff u = 2^-8). Through a randomly initialised network at 32 px a
  rounding grows about 3x per stage (relative error 0.003 after ResNet-34's stem, 0.45 at its 1x1 layer4, with
  attention="none" as with attention), so the network's output has no useful bf16 tolerance. Each attention
  module is checked on its own: fed the inputs it saw in the fp32 pass, its autocast output is within 4x of
  what rounding its inputs and weights to bf16 alone does to its fp32 output (its own sensitivity), or 4u.
- forward and backward: each module under each option gives finite gradients for its input and weights, and the
  whole network takes a training step under both options at once (finite loss and gradients everywhere).
The first and the last attention module of each network are checked (the largest and the smallest feature maps:
AW's grouped and unfold paths, AA's widest and narrowest attention).
"""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from aaconv.layers.parts import parts
from aaconv.models import create_model

ATTENTION_MODULES = tuple(cls for part in parts().values() for cls in part.modules)
MODES = {"channels_last": (True, False), "bf16": (False, True), "both": (True, True)}
U = 2**-8
COVERING = ["none", "aw+aa+se", "aw+aa+cbam"]


def test_the_variants_run_hold_every_layer_type():
    assert {name for variant in COVERING for name in variant.split("+")} - {"none"} == set(parts())


def rel_error(got: torch.Tensor, expected: torch.Tensor) -> float:
    return ((got.float() - expected).norm() / expected.norm()).item()


def layout(t: torch.Tensor, channels_last: bool) -> torch.Tensor:
    return t.contiguous(memory_format=torch.channels_last if channels_last else torch.contiguous_format)


def bf16_sensitivity(module: nn.Module, inputs: torch.Tensor, outputs: torch.Tensor) -> float:
    """Relative change of the fp32 output when only the inputs and weights are rounded to bf16."""
    rounded = copy.deepcopy(module)
    with torch.no_grad():
        for p in rounded.parameters():
            p.copy_(p.bfloat16().float())
        return rel_error(rounded(inputs.bfloat16().float()), outputs)


def check_module(module: nn.Module, inputs: torch.Tensor, outputs: torch.Tensor, channels_last: bool, bf16: bool):
    x = layout(inputs, channels_last).requires_grad_()
    with torch.autocast("cpu", torch.bfloat16, enabled=bf16):
        out = module(x)
    error = rel_error(out.detach(), outputs)
    bound = max(4 * bf16_sensitivity(module, inputs, outputs), 4 * U) if bf16 else 1e-5
    name = type(module).__name__
    assert error < bound, (name, error, bound)
    grads = torch.autograd.grad(out.float().square().mean(), [x, *module.parameters()])
    assert all(torch.isfinite(g).all() for g in grads), name


@pytest.mark.parametrize("backbone", ["resnet34", "resnet50", "mnasnet_a1"])
@pytest.mark.parametrize("variant", COVERING)
def test_channels_last_and_bf16_match_fp32_and_train(backbone, variant):
    torch.manual_seed(0)
    model = create_model(backbone, variant, num_classes=4, input_size=32).eval()
    images, targets = torch.randn(2, 3, 32, 32), torch.tensor([1, 3])
    seen: list[tuple[nn.Module, torch.Tensor, torch.Tensor]] = []
    hooks = [
        m.register_forward_hook(lambda m, args, out: seen.append((m, args[0].detach(), out.detach())))
        for m in model.modules()
        if isinstance(m, ATTENTION_MODULES)
    ]
    with torch.no_grad():
        expected = model(images)
    for hook in hooks:
        hook.remove()
    assert len(seen) > 0 or variant == "none"

    assert torch.isfinite(expected).all()
    for channels_last, bf16 in MODES.values():
        for module, inputs, outputs in seen[:1] + seen[-1:]:  # the first and the last: largest and smallest maps
            module.to(memory_format=torch.channels_last if channels_last else torch.contiguous_format)
            check_module(module, inputs, outputs, channels_last, bf16)

    model = model.to(memory_format=torch.channels_last).train()
    with torch.autocast("cpu", torch.bfloat16):
        loss = F.cross_entropy(model(layout(images, True)), targets)
    loss.backward()
    assert torch.isfinite(loss)
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
