"""An ``attention`` config (or a variant name) -> the convs and post-block modules a backbone builds.

``create_attention`` parses the variant once (``aaconv.layers.parts.parse_variant``) and checks each part's
options; the ``Attention`` it returns is all a backbone talks to:

- ``attention.conv(site)`` builds the conv at a ``ConvSite`` (stage, map size, role, index in the block):
  a plain ``nn.Conv2d`` where no part takes the site (torchvision's ``conv3x3``: padding ``k // 2``, no bias),
  else the parts' conv (AW-conv; AA-conv, whose conv branch is the conv it replaces);
- ``attention.post()`` builds the module a block applies to its residual branch output, or is None;
- ``attention.check_placed(model)`` refuses a network in which a part found no conv it could take.

A backbone never names a variant: which convs a part takes is the part's option (``replaces``, AA's
``basic_block_convs`` and ``memory_pool_stages``), and a backbone's paper setting is data it passes in
(``defaults``: the ``paper_options`` of its registry entry, under the config's own keys).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from .parts import (
    AttentionPart,
    ConvBuilder,
    ConvSite,
    PartOptions,
    PostBuilder,
    all_variants,
    parse_variant,
    parts,
    plain_conv,
    variant_name,
)


class Attention:
    """A parsed, checked attention variant with its options per part (build with ``create_attention``)."""

    def __init__(self, found: tuple[AttentionPart, ...], options: Mapping[str, PartOptions]):
        self.parts = found
        self.options = dict(options)
        self.placed: set[str] = set()

    @property
    def name(self) -> str:
        """The canonical variant name ("aw+se", "none")."""
        return variant_name(self.parts)

    def conv(self, site: ConvSite | None = None) -> ConvBuilder:
        """The builder of the conv at ``site`` (None: a spatial conv of stage 0)."""
        site = site or ConvSite(stage=0)
        builder: ConvBuilder = plain_conv
        for part in self.parts:
            if part.slot == "post":
                continue
            built = part.build(self.options[part.name], site, builder)
            if built is not None:
                builder = built
                self.placed.add(part.name)
        return builder

    def post(self) -> PostBuilder | None:
        """The builder of the post-block module, or None when the variant has no post part."""
        for part in self.parts:
            if part.slot == "post":
                self.placed.add(part.name)
                return part.build(self.options[part.name])
        return None

    def stage_ids(self) -> dict[str, tuple[int, ...]]:
        """{"attention.<part>.<key>": stage ids} for every option of the variant's parts that names stages."""
        return {
            f"attention.{part.name}.{key}": ids
            for part in self.parts
            for key, ids in self.options[part.name].stage_ids().items()
        }

    def check_placed(self, model: str) -> None:
        """ValueError when a part of the variant was built nowhere in ``model`` (no conv it takes)."""
        missing = [part for part in self.parts if part.name not in self.placed]
        if missing:
            part = missing[0]
            options = self.options[part.name]
            chosen = ", ".join(
                f"{f.name}={getattr(options, f.name)}"
                for f in dataclasses.fields(options)
                if getattr(options, f.name) != f.default
            )
            raise ValueError(
                f"attention part {part.name} found no conv to take in {model} (attention.{part.name}: "
                f"{chosen or 'defaults'}; and backbone.attention_stages); change them, or pick another variant"
            )


def _given(options: Mapping[str, Any] | None) -> dict[str, Any]:
    return {key: value for key, value in (options or {}).items() if value is not None}


def create_attention(
    attention: str | Mapping[str, Any] | Attention = "none",
    defaults: Mapping[str, Mapping[str, Any]] | None = None,
    **part_options: Mapping[str, Any],
) -> Attention:
    """The ``Attention`` of a variant name ("aa+se") or of the ``attention`` config mapping
    ``{variant, <part>: {options}}``.

    Args:
        defaults: per part, values that replace the part's own defaults (a backbone's paper setting); the
            config's non-null keys win over them.
        part_options: per part, options as keywords (``create_attention("aa", aa={"num_heads": 4})``).

    ValueError (one line naming the key and the valid values) for an unknown part or key, two parts of one
    slot, or an option of the wrong type or range. Option blocks of parts outside the variant are checked too.
    """
    if isinstance(attention, Attention):
        return attention
    config = {"variant": attention} if isinstance(attention, str) else dict(attention)
    config.update(part_options)
    registered = parts()
    unknown = sorted(set(config) - {"variant", *registered})
    if unknown:
        raise ValueError(f"attention.{unknown[0]} is not a key of attention; valid: variant, {', '.join(registered)}")
    found = parse_variant(str(config.get("variant", "none")))
    options = {}
    for name, part in registered.items():
        if name in config or part in found:
            given = {**dict((defaults or {}).get(name, {})), **_given(config.get(name))}
            options[name] = part.options.from_config(name, given)
    return Attention(found, options)


VARIANTS: tuple[str, ...] = all_variants()
"""Every valid variant, canonical spelling: none, each part, and each combination of one part per slot."""
