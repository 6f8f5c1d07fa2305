"""The registered networks in timm's registry, one entry point per network and attention variant.

Every registry entry with a `timm_cfg` (aaconv.models.registry) is registered with each variant it can build,
named `<variant>_<network>` with the variant's parts joined by "_" and `plain` for `none` (which would
otherwise clash with timm's own `resnet50`):

    plain_resnet50  se_resnet50  aa_resnet50  aw_resnet50  aa_se_resnet50  aw_se_resnet50  aw_aa_resnet50 ...

So `timm.create_model("aa_resnet50")` builds exactly `create_model("resnet50", "aa")`, `timm.list_models("aa_*")`
lists them, and `features_only=True` returns every stage of the model's `feature_info` (aaconv.models.backbone).
Their `pretrained_cfg` names no weights: none are published. timm loads an exported `.safetensors` file
(scripts/export.py) with `checkpoint_path=`.

`import aaconv` imports timm and registers the models through timm's public `register_model`. It costs no import
time to a timm user (who imports timm anyway) or to train.py / eval.py (whose data and tasks import timm); the
figures are in docs/models.md.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable
from functools import partial
from typing import Any

import torch
from timm.layers import register_notrace_module
from timm.models import build_model_with_cfg, is_model, model_entrypoint, register_model
from torch import nn

from aaconv.errors import CheckpointError, ConfigError
from aaconv.layers import VARIANTS, AAConv2d, AWConv2d, parse_variant
from aaconv.models.head import take_indices
from aaconv.models.registry import MODELS, create_model


def imagenet_cfg(first_conv: str, classifier: str) -> dict[str, Any]:
    """timm's per-model defaults for an ImageNet network: eval preprocessing as configs/data/imagenet.yaml,
    no weights."""
    return {
        "url": "",
        "num_classes": 1000,
        "input_size": (3, 224, 224),
        "pool_size": (7, 7),
        "crop_pct": 0.875,
        "interpolation": "bicubic",
        "mean": (0.485, 0.456, 0.406),
        "std": (0.229, 0.224, 0.225),
        "first_conv": first_conv,
        "classifier": classifier,
        "license": "apache-2.0",
        "notes": ("No pretrained weights are published; train with aaconv and export with scripts/export.py.",),
    }


def timm_name(model: str, variant: str) -> str:
    """ "aa+se", "resnet50" -> "aa_se_resnet50"; "none" -> "plain_resnet50"."""
    prefix = "plain" if variant == "none" else variant.replace("+", "_")
    return f"{prefix}_{model}"


def timm_models() -> dict[str, tuple[str, str]]:
    """timm name -> (network, variant) for every entry with a timm_cfg and every variant."""
    return {
        timm_name(model, variant): (model, variant)
        for model, entry in MODELS.items()
        if entry.timm_cfg is not None
        for variant in VARIANTS
    }


def _pretrained_cfg(model: str, variant: str) -> dict[str, Any]:
    papers = [part.paper for part in parse_variant(variant) if part.paper]
    return {**MODELS[model].timm_cfg, "paper_ids": ", ".join(papers) or None}


FEATURE_CLASSES = ("list", "dict", "hook", "fx", "getter")  # timm's feature_cls names


def _build(
    model: str,
    variant: str,
    *,
    device: str | torch.device | None = None,
    dtype: torch.dtype | None = None,
    **kwargs: Any,
) -> nn.Module:
    """create_model(model, variant, **kwargs) with timm's factory keywords: built on `device` in `dtype`
    (`drop_path_rate`, stochastic depth, goes to the network as the other keywords)."""
    kwargs.setdefault("attention", variant)
    with torch.device(device) if device is not None else contextlib.nullcontext():
        net = create_model(model, **kwargs)
    return net if dtype is None else net.to(dtype)


def _check_features(name: str, model: str, kwargs: dict[str, Any]) -> None:
    """One-line errors for timm's feature keywords: out_indices among the model's stages, a known feature_cls."""
    if not kwargs.get("features_only"):
        return
    if "out_indices" in kwargs:
        num_stages = len(MODELS[model].feature_cfg["out_indices"])
        try:
            take_indices(num_stages, kwargs["out_indices"])
        except ConfigError as e:
            raise ConfigError(f"{name} features_only: out_indices: {e}") from None
    feature_cls = kwargs.get("feature_cls", "list")
    if isinstance(feature_cls, str) and feature_cls.lower() not in FEATURE_CLASSES:
        raise ConfigError(f"{name}: feature_cls must be one of {', '.join(FEATURE_CLASSES)}, got {feature_cls!r}")


def _timm_entrypoint(name: str, model: str, variant: str) -> Callable[..., nn.Module]:
    """timm entry point `name`: timm's build_model_with_cfg over create_model(model, variant, ...)."""

    def entrypoint(pretrained: bool = False, **kwargs: Any) -> nn.Module:
        if pretrained:
            raise CheckpointError(
                f"no pretrained weights are published for {name}; pass pretrained=False, "
                "or checkpoint_path=<model.safetensors written by scripts/export.py>"
            )
        _check_features(name, model, kwargs)
        return build_model_with_cfg(
            partial(_build, model, variant),
            name,
            pretrained,
            feature_cfg=dict(MODELS[model].feature_cfg),
            **kwargs,
        )

    entrypoint.__name__ = entrypoint.__qualname__ = name  # timm registers a function under its __name__,
    entrypoint.__module__ = __name__  # with the pretrained cfg from its module's `default_cfgs`
    return entrypoint


def register_notrace_layers() -> None:
    """Registers the attention layers whose forward branches on shapes and devices (AA-conv, AW-conv) as leaf
    modules of timm's FX tracer (timm's feature extraction and its FX tests)."""
    for layer in (AAConv2d, AWConv2d):
        register_notrace_module(layer)


def register_timm_models() -> list[str]:
    """Registers every `timm_models()` name with timm's public `register_model` and returns the names. Idempotent
    (a name this module registered stays as it is); a name timm already has from elsewhere is a ConfigError naming
    both models, never a silent skip."""
    register_notrace_layers()
    module = sys.modules[__name__]
    names = timm_models()
    module.default_cfgs = {name: _pretrained_cfg(model, variant) for name, (model, variant) in names.items()}
    for name, (model, variant) in names.items():
        if not is_model(name):
            setattr(module, name, register_model(_timm_entrypoint(name, model, variant)))
            continue
        other = model_entrypoint(name)
        if other.__module__ != __name__:
            raise ConfigError(
                f"timm already has a model {name!r} ({other.__module__}.{other.__qualname__}), the name of aaconv's "
                f"{model} with attention {variant!r}: one of the two packages must rename it"
            )
    return list(names)
