"""Parameters and FLOPs of a model as the AA paper counts them (Bello et al. 2019).

Parameters: every weight of the architecture, trainable or not: a detector's FrozenBatchNorm2d keeps its affine
weight and bias as buffers, which are counted too (torchvision's RetinaNet R50-FPN: 34,068,119 either way).
FLOPs: torch.utils.flop_counter over one forward of a batch of one image, a multiply-add counted as 2 FLOPs
(the paper's convention: ResNet-50 is 8.2 GFLOPs at 224 px), with AA on its reference path (the paper's
formulation; the fused path computes the same logits through an augmented head and would count more). A detector
is counted over backbone + FPN + heads (RetinaNet: both heads; Faster R-CNN: the RPN head, since the RoI head's
work depends on the proposals). Build the model on the meta device (`with torch.device("meta")`) and the count
costs no memory and seconds of CPU.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode
from torchvision.ops import FrozenBatchNorm2d

from aaconv.layers import AAConv2d


def count_params(model: nn.Module) -> int:
    """Parameters plus the affine weight / bias of every FrozenBatchNorm2d (frozen, but part of the network)."""
    frozen = sum(m.weight.numel() + m.bias.numel() for m in model.modules() if isinstance(m, FrozenBatchNorm2d))
    return sum(p.numel() for p in model.parameters()) + frozen


def is_detector(model: nn.Module) -> bool:
    """torchvision's RetinaNet / Faster R-CNN (aaconv.models.detection) rather than a classifier."""
    return hasattr(model, "backbone") and hasattr(model, "transform")


def count_flops(model: nn.Module, height: int, width: int) -> int:
    """FLOPs (2 per multiply-add) of one (1, 3, height, width) forward in eval mode, on AA's reference path;
    a detector over its backbone, FPN and heads. The model may live on the meta device."""
    model.eval()
    for module in model.modules():
        if isinstance(module, AAConv2d):
            module.impl = "reference"
    device = next(model.parameters()).device
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        image = torch.empty(1, 3, height, width, device=device)
        if is_detector(model):
            features = list(model.backbone(image).values())
            (model.head if hasattr(model, "head") else model.rpn.head)(features)
        else:
            model(image)
    return counter.get_total_flops()
