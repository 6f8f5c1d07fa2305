"""One torch.compile training step per attention layer type (AA, AW, SE) equals the eager step.

The CPU test compiles with backend="aot_eager": Dynamo captures the graph and AOT autograd traces the
backward, the two places a layer can break compilation (graph breaks, ops without a meta kernel, in-place
mutation of saved tensors), without Inductor's C++ code generation, which costs tens of seconds a graph on a
CPU. Inductor itself runs in each layer file's test_torch_compile_matches_eager (forward) and on a GPU in
tests/models/test_cuda_training.py (scripts/gpu_check.sh).
"""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from aaconv.layers import AAConv2d, AWConv2d, SqueezeExcite

LAYERS = {
    "aa": lambda: AAConv2d(8, 8, 3, dk=8, dv=4, num_heads=2),
    "aw": lambda: AWConv2d(8, 8, 3, reduction=2, num_maps=2),
    "se": lambda: SqueezeExcite(8, reduction=2),
}


def step(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    loss = F.cross_entropy(model(x), y)
    loss.backward()
    optimizer.step()
    return loss.item()


@pytest.mark.slow
@pytest.mark.parametrize("name", list(LAYERS))
def test_compiled_training_step_equals_eager(name):
    torch.manual_seed(0)
    eager = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), LAYERS[name](), nn.BatchNorm2d(8), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
        nn.Flatten(), nn.Linear(8, 4),
    )  # fmt: skip
    compiled_model = copy.deepcopy(eager)
    x, y = torch.randn(2, 3, 8, 8), torch.tensor([0, 3])
    eager_loss = step(eager, x, y)
    torch._dynamo.reset()
    compiled_loss = step(torch.compile(compiled_model, backend="aot_eager", fullgraph=True), x, y)
    assert compiled_loss == pytest.approx(eager_loss, rel=1e-5)
    for (key, want), got in zip(eager.state_dict().items(), compiled_model.state_dict().values(), strict=True):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6, msg=key)
