"""Model names -> registry entries, registered where each network is defined (timm's ``@register_model`` style).

A model file decorates one builder function per network::

    @register_model(ResNet, paper_options={"aa": {...}}, timm_cfg=imagenet_cfg("conv1", "fc"))
    def resnet50(attention="none", **kwargs) -> ResNet: ...

and its entry carries what the rest of the project reads: the class (a Backbone or not: detection and timm's
feature extraction take only Backbones), the paper's setting per attention part on that network (under the
config's own ``attention.<part>`` keys) and timm's configuration
(aaconv.models.timm_models registers every entry that has one, with every variant it can build).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from aaconv.errors import ConfigError
from aaconv.layers import create_attention
from aaconv.models.backbone import is_backbone_class


@dataclass(frozen=True)
class ModelEntry:
    """One registered network.

    Attributes:
        name: the ``backbone.name`` config value ("resnet50").
        build: ``(attention, **kwargs) -> nn.Module``; ``attention`` is an ``aaconv.layers.Attention``.
        cls: the class it builds.
        paper_options: per attention part, the papers' setting on this network (a backbone's AA setting).
        timm_cfg: timm's pretrained_cfg for its timm entry points (None: not registered with timm).
        feature_cfg: timm's feature_cfg (how ``features_only`` walks its stages).
    """

    name: str
    build: Callable[..., nn.Module]
    cls: type[nn.Module]
    paper_options: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    timm_cfg: Mapping[str, Any] | None = None
    feature_cfg: Mapping[str, Any] = field(default_factory=dict)

    @property
    def is_backbone(self) -> bool:
        """Whether it follows the Backbone protocol (aaconv.models.backbone)."""
        return is_backbone_class(self.cls)


MODELS: dict[str, ModelEntry] = {}


def register_model(
    cls: type[nn.Module], **entry: Any
) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Decorator: registers the builder function under its own name with a ``ModelEntry(cls=cls, **entry)``."""

    def register(build: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if build.__name__ in MODELS:
            raise ValueError(f"model {build.__name__!r} is registered twice")
        MODELS[build.__name__] = ModelEntry(name=build.__name__, build=build, cls=cls, **entry)
        return build

    return register


def get_entry(name: str) -> ModelEntry:
    """The entry of model ``name``; ConfigError listing the models otherwise."""
    if name not in MODELS:
        raise ConfigError(f"unknown model {name!r}; available: {', '.join(MODELS)}")
    return MODELS[name]


def backbones() -> tuple[str, ...]:
    """The registered networks that follow the Backbone protocol (detection, timm's features_only)."""
    return tuple(name for name, entry in MODELS.items() if entry.is_backbone)


def create_model(
    name: str, attention: str | Mapping[str, Any] = "none", num_classes: int = 1000, **kwargs: Any
) -> nn.Module:
    """Builds network `name` with `attention` (a variant name such as "aa+se" or the `attention` config mapping
    {variant, <part>: {options}}), the entry's paper setting under the config's keys; kwargs go to the network.

    ValueError (one line) when the variant cannot be built on it: a part that found no conv.
    """
    entry = get_entry(name)
    spec = create_attention(attention, defaults=entry.paper_options)
    model = entry.build(spec, num_classes=num_classes, **kwargs)
    spec.check_placed(name)
    return model


def backbone_options(backbone: Mapping[str, Any]) -> dict[str, Any]:
    """The `backbone` config group's constructor keywords: all but `name` and `weights` (loaded after building)."""
    return {key: value for key, value in backbone.items() if key not in ("name", "weights")}
