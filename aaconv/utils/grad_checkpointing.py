"""Gradient checkpointing switched on through timm's model API, for whoever holds a model (the trainer).

Chen et al. 2016, "Training Deep Nets with Sublinear Memory Cost": keep only the inputs of each block in the
forward pass and recompute the block in the backward pass. Every aaconv backbone, and the FPN backbone of a
detector, has timm's `set_grad_checkpointing(enable)` (aaconv.models.backbone.checkpoint_blocks does the work); this
finds them in a classifier or a detector without importing the models (the engine never does).
"""

from __future__ import annotations

from torch import nn

from aaconv.errors import ConfigError


def enable_grad_checkpointing(model: nn.Module) -> None:
    """Calls `set_grad_checkpointing(True)` on `model` and every sub-module that has it (a classifier is its own
    backbone; a detector's is `model.backbone`, which forwards to its body); ConfigError naming the model when
    none has it."""
    targets = [module for module in model.modules() if callable(getattr(module, "set_grad_checkpointing", None))]
    if not targets:
        raise ConfigError(
            f"trainer.grad_checkpointing=true: {type(model).__name__} has no set_grad_checkpointing (no aaconv or "
            "timm backbone in it); set trainer.grad_checkpointing=false"
        )
    for module in targets:
        module.set_grad_checkpointing(True)
