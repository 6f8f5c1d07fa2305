"""The `attention` config group as backbones consume it: builders per stage, relative tables sized per stage.

A backbone asks `stage_builders(spec, feature_size)` for the builders of one stage. When the feature
size of that stage is known (classification: the input size divided by the stage's stride; detection:
the largest padded input), AA's relative tables are sized to it, as the paper sized them for its fixed
maps (Bello et al. 2019, Sec. 3.2: one (2W-1, d_kh) and one (2H-1, d_kh) table per layer). An explicit
`aa.max_size` in the config always wins; `feature_size=None` keeps AAConv2d's default (256).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from aaconv.layers import AttentionBuilders, create_attention
from aaconv.layers.factory import normalize_variant

AttentionSpec = dict[str, Any]


def attention_spec(attention: str | Mapping[str, Any]) -> AttentionSpec:
    """A variant name ("aa+se") or the config mapping {variant, aa, aw, se} -> a normalised mapping."""
    if isinstance(attention, str):
        attention = {"variant": attention}
    spec = {"variant": normalize_variant(str(attention.get("variant", "none")))}
    for part in ("aa", "aw", "se"):
        spec[part] = dict(attention.get(part) or {})
    return spec


def parts(spec: AttentionSpec) -> set[str]:
    """{"aa", "se"} for "aa+se"; empty for "none"."""
    return set(spec["variant"].split("+")) - {"none"}


def without(spec: AttentionSpec, part: str) -> AttentionSpec:
    """`spec` with one part removed ("aw+aa" without "aa" is "aw")."""
    remaining = sorted(parts(spec) - {part})
    return {**spec, "variant": normalize_variant("+".join(remaining) or "none")}


def feature_size(input_size: int | None, stride: int) -> int | None:
    """Side of a stride-`stride` feature map of an `input_size` input (each stride-2 step: ceil(H / 2))."""
    if input_size is None:
        return None
    return max(1, math.ceil(input_size / stride))


def aa_options(spec: AttentionSpec, size: int | None) -> dict[str, Any]:
    """The `aa` options with `max_size` set to `size` unless the config sets it."""
    options = dict(spec["aa"])
    if size is not None:
        options.setdefault("max_size", size)
    return options


def stage_builders(spec: AttentionSpec, size: int | None) -> AttentionBuilders:
    """Builders for a stage whose maps are at most `size` x `size` (None: AAConv2d's default tables)."""
    return create_attention(spec["variant"], aa=aa_options(spec, size), aw=spec["aw"], se=spec["se"])
