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
PLACEMENT_KEYS = ("memory_pool_stages", "basic_block_convs")


def attention_spec(attention: str | Mapping[str, Any], architecture: Mapping[str, Any] | None = None) -> AttentionSpec:
    """A variant name ("aa+se") or the config mapping {variant, aa, aw, se} -> a normalised mapping whose
    `aa` is `architecture` (the backbone's AA setting) updated with the config's non-null `aa` keys."""
    if isinstance(attention, str):
        attention = {"variant": attention}
    spec = {"variant": normalize_variant(str(attention.get("variant", "none")))}
    for part in ("aa", "aw", "se"):
        spec[part] = {k: v for k, v in (attention.get(part) or {}).items() if v is not None}
    spec["aa"] = {**dict(architecture or {}), **spec["aa"]}
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


def memory_pooled(spec: AttentionSpec, stage: int) -> bool:
    """Whether `stage`'s AA convs attend over a 3x3/2-pooled map (the `memory_pool_stages` setting)."""
    return "aa" in parts(spec) and stage in (spec["aa"].get("memory_pool_stages") or ())


def stage_builders(spec: AttentionSpec, size: int | None, *, memory_pool: bool = False) -> AttentionBuilders:
    """Builders for a stage whose maps are at most `size` x `size` (None: AAConv2d's default tables);
    `memory_pool`: its AA convs attend over a 3x3/2-pooled map, so the tables cover half of `size`."""
    aa = {k: v for k, v in spec["aa"].items() if k not in PLACEMENT_KEYS}
    if memory_pool:
        aa["memory_pool"] = True
        size = feature_size(size, 2)
    if size is not None:
        aa.setdefault("max_size", size)
    return create_attention(spec["variant"], aa=aa, aw=spec["aw"], se=spec["se"])
