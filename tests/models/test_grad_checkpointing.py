"""Gradient checkpointing (Chen et al. 2016) through timm's `set_grad_checkpointing`, in classifiers and detectors.

Exact in float64: the gradients, outputs and BatchNorm statistics of a checkpointed training step equal the plain
step's, with stochastic depth and dropout on (the recompute replays their random masks).
"""

import copy

import pytest
import timm
import torch
from torch import nn

from aaconv.errors import ConfigError
from aaconv.models import backbones, create_detector
from aaconv.utils.grad_checkpointing import enable_grad_checkpointing
from helpers.models import SMALL, SMALL_OPTIONS, build, residual_blocks


def training_step(model: nn.Module, x: torch.Tensor, checkpointed: bool) -> tuple[list, list, list]:
    """(per-block call counts, parameter gradients, buffers) of one forward / backward of a copy of `model`."""
    model = copy.deepcopy(model)
    model.set_grad_checkpointing(checkpointed)
    blocks = residual_blocks(model)
    calls = [0] * len(blocks)
    for index, block in enumerate(blocks):
        block.register_forward_pre_hook(lambda *_, i=index: calls.__setitem__(i, calls[i] + 1))
    torch.manual_seed(1)
    out = model(x)
    outputs = out.values() if isinstance(out, dict) else [out]
    sum(o.sum() for o in outputs).backward()
    return calls, [p.grad for p in model.parameters() if p.requires_grad], [*model.buffers()]


def assert_exact(model: nn.Module, x: torch.Tensor) -> list[int]:
    """Checkpointed and plain steps give equal gradients and buffers; returns the checkpointed call counts."""
    plain_calls, plain_grads, plain_buffers = training_step(model, x, checkpointed=False)
    calls, grads, buffers = training_step(model, x, checkpointed=True)
    assert set(plain_calls) == {1}
    for got, expected in zip([*grads, *buffers], [*plain_grads, *plain_buffers], strict=True):
        torch.testing.assert_close(got, expected, rtol=0, atol=0)
    return calls


@pytest.mark.parametrize("name", SMALL)
def test_checkpointed_step_is_exact_and_recomputes_each_block(name):
    model = build(name, attention="aa", drop_path_rate=0.3).double().train()
    calls = assert_exact(model, torch.randn(2, 3, 16, 16, dtype=torch.float64))
    assert set(calls) == {2}, "every block runs again in backward"


@pytest.mark.parametrize("name", [n for n in SMALL if n in backbones()])
def test_detector_backbone_checkpoints_its_trainable_blocks(name):
    detector = create_detector("retinanet", {"name": name, **SMALL_OPTIONS.get(name, {})}, min_size=64, max_size=64)
    enable_grad_checkpointing(detector)
    assert detector.backbone.body.grad_checkpointing
    fpn = detector.backbone.double().train()
    calls = assert_exact(fpn, torch.randn(2, 3, 64, 64, dtype=torch.float64))
    assert calls[-1] == 2, "forward_stages checkpoints the trained stages"  # frozen ones keep nothing to recompute


def test_enable_grad_checkpointing_names_a_model_without_it():
    with pytest.raises(ConfigError, match="Sequential has no set_grad_checkpointing"):
        enable_grad_checkpointing(nn.Sequential(nn.Linear(2, 2)))


def test_timm_train_calls():
    """What timm's train.py does for --drop-path 0.1 --grad-checkpointing."""
    model = timm.create_model("aa_resnet18", drop_path_rate=0.1, num_classes=10)
    model.set_grad_checkpointing(enable=True)
    model(torch.randn(2, 3, 32, 32)).sum().backward()
    assert all(p.grad is not None for p in model.parameters())
