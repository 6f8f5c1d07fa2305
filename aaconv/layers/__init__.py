"""Attention layers: AA-conv (arXiv 1904.09925), AW-conv (arXiv 2108.08205), Squeeze-and-Excitation, and the
part registry that turns an ``attention`` variant into a backbone's convs and post-block modules (parts.py,
factory.py). Each layer file registers its part; every module here is imported when the registry is read."""

from .aa import AAConv2d
from .aw import AWConv2d
from .factory import VARIANTS, Attention, create_attention
from .parts import ConvSite, get_part, parse_variant, parts, plain_conv
from .se import SqueezeExcite

__all__ = [
    "AAConv2d",
    "AWConv2d",
    "SqueezeExcite",
    "Attention",
    "ConvSite",
    "create_attention",
    "get_part",
    "parse_variant",
    "parts",
    "plain_conv",
    "VARIANTS",
]
