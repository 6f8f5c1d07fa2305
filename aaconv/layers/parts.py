"""The attention-part registry: what an ``attention`` variant is made of, parsed in one place.

A variant is a ``+``-joined set of parts ("aw+se", written in any order; "none" has no part). Each part is one
``AttentionPart`` entry, registered by the file that defines its layer (``register_part`` at the bottom of
aa.py, aw.py, se.py, cbam.py), in the spirit of timm's ``create_attn`` / ``get_attn``. Every module of
``aaconv.layers`` is imported the first time the registry is read, so a new part is one new file here.

A part says
- its ``slot``: ``"conv"`` replaces a block's conv (AW-conv), ``"wrap"`` replaces it and keeps the replaced conv
  as a branch (AA-conv's convolutional branch), ``"post"`` follows the block (a module on the residual branch
  output, after its last BN and before the addition: SE, CBAM). A variant holds at most one part per slot, so
  "aw+aa" is an AA-conv whose conv branch is an AW-conv;
- its typed options (a ``PartOptions`` dataclass): a config's ``attention.<part>`` mapping is checked against it
  once, with one-line errors, before any model is built;
- how it builds (``build``), and which convs it can take (a conv part's ``replaces`` option, and its own
  ``ValueError`` for a conv it cannot be built on, such as AA on a depthwise conv);
- what its layers can show (``Drawing``): the numbers aaconv.engine.attention_maps reads from a forward pass, which
  scripts/visualize.py and the training loggers draw, so a new part's pictures need no edit in the engine.
"""

from __future__ import annotations

import dataclasses
import itertools
import numbers
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import UnionType
from typing import Any, Literal, Protocol

from torch import Tensor, nn

from aaconv.utils.plugins import PackageRegistry

Slot = Literal["conv", "wrap", "post"]
SLOTS: tuple[Slot, ...] = ("conv", "wrap", "post")  # the canonical order of a variant's parts
CONV_ROLES = ("spatial", "expansion")
STAGE_IDS = {"stage_ids": True}
"""Metadata of an options field that lists backbone stage ids (``dataclasses.field(metadata=STAGE_IDS)``), so
a backbone can refuse ids it does not have (``PartOptions.stage_ids``)."""


@dataclass(frozen=True)
class ConvSite:
    """Where a backbone asks for a conv.

    Attributes:
        stage: the backbone's stage id (its ``feature_info`` index: ResNet 1..4 = layer1..layer4).
        size: largest side of the maps this conv sees (sizes relative-position tables); None: unknown.
        role: ``"spatial"``, a block's k x k conv (ResNet's 3x3, MnasNet's depthwise conv), or ``"expansion"``,
            an inverted-residual block's 1x1 expansion conv.
        index: which of the block's spatial convs, from 1 (a BasicBlock has two).
    """

    stage: int
    size: int | None = None
    role: str = "spatial"
    index: int = 1


class ConvBuilder(Protocol):
    def __call__(
        self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1, groups: int = 1
    ) -> nn.Module: ...


def plain_conv(in_channels: int, out_channels: int, kernel_size: int, stride: int = 1, groups: int = 1) -> nn.Conv2d:
    """The ConvBuilder of a site no part replaces: torchvision-style ``conv3x3``, padding ``kernel_size // 2``, no
    bias."""
    return nn.Conv2d(
        in_channels, out_channels, kernel_size, stride, padding=kernel_size // 2, groups=groups, bias=False
    )


class PostBuilder(Protocol):
    def __call__(self, channels: int, hidden: int | None = None) -> nn.Module:
        """``channels``: the residual branch's width; ``hidden``: a bottleneck width the backbone fixes
        (MnasNet-A1 sizes its SE from the block's input); None: the part's own rule."""
        ...


@dataclass(frozen=True)
class PartOptions:
    """Base of a part's options: dataclass fields with type annotations; ``check`` adds range rules.

    ``from_config`` builds it from a config mapping: unknown keys, values of the wrong type and values that
    ``check`` refuses are a ``ValueError`` naming ``attention.<part>.<key>`` and what it must be.
    """

    def check(self) -> dict[str, str]:
        """{field: what it must be} for each field whose value is out of range."""
        return {}

    def stage_ids(self) -> dict[str, tuple[int, ...]]:
        """{field: stage ids} for the fields marked with ``STAGE_IDS``."""
        return {f.name: tuple(getattr(self, f.name)) for f in dataclasses.fields(self) if f.metadata.get("stage_ids")}

    @classmethod
    def from_config(cls, part: str, config: Mapping[str, Any] | None) -> PartOptions:
        """Options from ``config`` (keys left out or null take the field defaults)."""
        given = {key: value for key, value in (config or {}).items() if value is not None}
        fields = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(given) - set(fields))
        if unknown:
            raise ValueError(
                f"attention.{part}.{unknown[0]} is not an option of {part}; valid: {', '.join(sorted(fields))}"
            )
        hints = typing.get_type_hints(cls)
        values = {}
        for key, value in given.items():
            converted = _convert(value, hints[key])
            if converted is _INVALID:
                raise ValueError(f"attention.{part}.{key}={value!r} is not valid: it must be {_describe(hints[key])}")
            values[key] = converted
        options = cls(**values)
        problems = options.check()
        if problems:
            key, rule = next(iter(problems.items()))
            raise ValueError(f"attention.{part}.{key}={getattr(options, key)!r} is not valid: it must be {rule}")
        return options


@dataclass(frozen=True)
class ConvPartOptions(PartOptions):
    """Options every conv / wrap part has.

    Attributes:
        replaces: the conv roles (``ConvSite.role``) the part takes: a ResNet's 3x3 convs are "spatial";
            AA-MnasNet augments the "expansion" 1x1 convs (Bello et al. 2019, Sec. 4.1).
    """

    replaces: tuple[str, ...] = ("spatial",)

    def check(self) -> dict[str, str]:
        if not self.replaces or not set(self.replaces) <= set(CONV_ROLES):
            return {"replaces": f"a non-empty list of {', '.join(CONV_ROLES)}"}
        return {}


@dataclass(frozen=True)
class Drawing:
    """What a part's layers can show.

    Attributes:
        kind: the tools' name for these layers (``visualize.py --layer`` lists it; the layers of one kind are
            drawn alike).
        read: (layer, its input x, its output y) -> {name: numbers}, each a tensor whose first dim is the batch;
            called in eval mode without gradients, on the inputs and outputs of one ordinary forward pass.
        also_finds: a rule for layers of this kind the part did not build (timm's ``SEModule`` for channel gates),
            tried after every part's own ``modules``.
        per_query: ``read`` gives {"attention": (B, heads, H', W', H', W')}, per query cell of an H' x W' grid a map
            over that grid: pictures take queries, and the training loggers draw it.
        together: one picture shows every layer of this kind (else one layer).
    """

    kind: str
    read: Callable[[nn.Module, Tensor, Tensor], dict[str, Tensor]]
    also_finds: Callable[[nn.Module], bool] | None = None
    per_query: bool = False
    together: bool = False


ConvPartBuild = Callable[[Any, ConvSite, ConvBuilder], ConvBuilder | None]
PostPartBuild = Callable[[Any], PostBuilder]


@dataclass(frozen=True)
class AttentionPart:
    """One registered attention part.

    Attributes:
        name: the part's name in a variant ("aa").
        slot: "conv", "wrap" or "post" (module docstring).
        options: its ``PartOptions`` dataclass.
        build: conv / wrap: ``(options, site, base) -> ConvBuilder``, or None where the part does not take
            ``site`` (``base`` is the conv it replaces: plain, or a "conv" part's for a "wrap" part);
            post: ``(options) -> PostBuilder``.
        modules: the module classes it adds (how a test or a tool finds the part in a network).
        paper: where it comes from, as timm's ``paper_ids``.
        drawing: what its layers can show (``Drawing``); None: nothing to draw.
    """

    name: str
    slot: Slot
    options: type[PartOptions]
    build: Callable[..., Any]
    modules: tuple[type[nn.Module], ...]
    paper: str = ""
    drawing: Drawing | None = None


_PARTS: PackageRegistry[AttentionPart] = PackageRegistry(__package__)


def register_part(part: AttentionPart) -> AttentionPart:
    """Adds ``part`` to the registry (called once per part, by the module that defines it)."""
    if part.name in _PARTS.entries or part.name == "none" or "+" in part.name:
        raise ValueError(f"attention part name {part.name!r} is taken or not a valid name")
    if part.slot not in SLOTS:
        raise ValueError(f"attention part {part.name!r}: slot must be one of {SLOTS}, got {part.slot!r}")
    return _PARTS.add(part.name, part)


def parts() -> dict[str, AttentionPart]:
    """Every registered part, by name, in registration order."""
    return _PARTS.read()


def get_part(name: str) -> AttentionPart:
    """The part called ``name``; ValueError listing the valid parts otherwise."""
    registered = parts()
    if name not in registered:
        raise ValueError(f"unknown attention part {name!r}; valid parts: {', '.join(registered)} (or none)")
    return registered[name]


def parse_variant(variant: str) -> tuple[AttentionPart, ...]:
    """ "se+aw" -> (aw, se): the parts of ``variant`` in canonical order (slot order); () for "none".

    ValueError (one line, listing the valid parts) for an unknown part, an empty name, or two parts in one slot.
    """
    names = [name.strip().lower() for name in str(variant).split("+")]
    if names == ["none"]:
        return ()
    if "none" in names or "" in names:
        raise ValueError(
            f"attention variant {variant!r}: write none alone, or parts joined by +; valid parts: {', '.join(parts())}"
        )
    found = [get_part(name) for name in names]
    for slot in SLOTS:
        taken = [part.name for part in found if part.slot == slot]
        if len(taken) > 1:
            raise ValueError(
                f"attention variant {variant!r} combines {' and '.join(taken)}, both {slot} parts; a variant holds "
                f"one part of each kind: conv ({_names('conv')}), wrap ({_names('wrap')}), post ({_names('post')})"
            )
    return tuple(sorted(found, key=lambda part: SLOTS.index(part.slot)))


def variant_name(found: tuple[AttentionPart, ...]) -> str:
    """The canonical spelling of a parsed variant: "aw+se", or "none"."""
    return "+".join(part.name for part in found) or "none"


def all_variants() -> tuple[str, ...]:
    """Every valid variant in canonical spelling: none, each part, and each combination of one part per slot."""
    by_slot = [[None, *(part for part in parts().values() if part.slot == slot)] for slot in SLOTS]
    combos = [tuple(p for p in combo if p is not None) for combo in itertools.product(*by_slot)]
    return tuple(variant_name(combo) for combo in sorted(combos, key=len))


def _names(slot: str) -> str:
    return ", ".join(name for name, part in parts().items() if part.slot == slot) or "-"


_INVALID = object()


def _convert(value: Any, hint: Any) -> Any:
    """``value`` as type ``hint`` (int, float, bool, str, a Literal, a tuple[int | str, ...], or X | None),
    or _INVALID. Ints are accepted for floats; lists for tuples."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, UnionType):
        for arg in args:
            if arg is type(None):
                continue
            converted = _convert(value, arg)
            if converted is not _INVALID:
                return converted
        return _INVALID
    if origin is Literal:
        return value if value in args else _INVALID
    if origin is tuple:
        if not isinstance(value, list | tuple):
            return _INVALID
        items = [_convert(item, args[0]) for item in value]
        return _INVALID if any(item is _INVALID for item in items) else tuple(items)
    if hint is bool:
        return value if isinstance(value, bool) else _INVALID
    if hint is int:
        return value if isinstance(value, int) and not isinstance(value, bool) else _INVALID
    if hint is float:
        ok = isinstance(value, numbers.Real) and not isinstance(value, bool)
        return float(value) if ok else _INVALID
    if hint is str:
        return value if isinstance(value, str) else _INVALID
    raise TypeError(f"PartOptions field type {hint!r} is not supported")


def _describe(hint: Any) -> str:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, UnionType):
        return " or ".join(_describe(arg) for arg in args if arg is not type(None)) + ", or null"
    if origin is Literal:
        return "one of " + ", ".join(str(arg) for arg in args)
    if origin is tuple:
        return f"a list of {_describe(args[0])}s"
    return {bool: "true or false", int: "an integer", float: "a number", str: "a string"}[hint]
