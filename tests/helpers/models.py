"""Small members of the model registry for tests that cover every network class."""

from __future__ import annotations

from timm.layers import DropPath
from torch import nn

from aaconv.models import MODELS, create_model


def smallest_per_class() -> list[str]:
    """The first registered network of each class (the registry lists the smallest first), and ResNet-50 for the
    Bottleneck block."""
    first: dict[type, str] = {}
    for name, entry in MODELS.items():
        first.setdefault(entry.cls, name)
    return [*first.values(), "resnet50"]


SMALL = smallest_per_class()
SMALL_OPTIONS = {"mnasnet_a1": {"width_mult": 0.5}, "mnasnet_b1": {"width_mult": 0.5}}


def build(name: str, **kwargs) -> nn.Module:
    """Network `name` for 16 px inputs (MnasNets at width 0.5)."""
    return create_model(name, input_size=16, **SMALL_OPTIONS.get(name, {}), **kwargs)


def residual_blocks(model: nn.Module) -> list[nn.Module]:
    """The blocks of `model` in forward order: the modules holding a `drop_path`."""
    return [module for module in model.modules() if hasattr(module, "drop_path")]


def drop_rates(model: nn.Module) -> list[float]:
    """Each block's probability of dropping its residual branch (0: no DropPath)."""
    return [b.drop_path.drop_prob if isinstance(b.drop_path, DropPath) else 0.0 for b in residual_blocks(model)]
