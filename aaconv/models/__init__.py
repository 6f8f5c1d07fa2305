"""Model factory: a backbone name and an attention variant in, an nn.Module out."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import nn

from aaconv.layers import AttentionBuilders, create_attention
from aaconv.models.resnet import RESNETS, build_resnet

MODELS: tuple[str, ...] = RESNETS


def resolve_attention(attention: str | Mapping[str, Any]) -> AttentionBuilders:
    """A variant name ("aa+se") or a mapping {variant, aa, aw, se} (the `attention` config group)."""
    if isinstance(attention, str):
        return create_attention(attention)
    return create_attention(**attention)


def create_model(name: str, attention: str | Mapping[str, Any] = "none", num_classes: int = 1000, **kwargs: Any) -> nn.Module:
    """Builds classifier `name` (one of MODELS) with `attention`; kwargs go to the backbone."""
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; available: {', '.join(MODELS)}")
    return build_resnet(name, resolve_attention(attention), num_classes=num_classes, **kwargs)
