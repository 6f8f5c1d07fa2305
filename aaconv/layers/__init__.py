"""Attention layers: AA-conv (arXiv 1904.09925), AW-conv (arXiv 2108.08205), Squeeze-and-Excitation."""

from .aa import AAConv2d
from .aw import AWConv2d
from .factory import VARIANTS, AttentionBuilders, create_attention
from .se import SqueezeExcite

__all__ = ["AAConv2d", "AWConv2d", "SqueezeExcite", "create_attention", "AttentionBuilders", "VARIANTS"]
