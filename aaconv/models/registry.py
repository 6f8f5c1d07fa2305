"""Model names -> builders, and the same models in timm's registry.

`create_model(name, attention)` looks `name` up in BUILDERS. `register_timm_models()` adds one timm
entry point per backbone and attention variant, named `<variant>_<backbone>`:

    plain_resnet50  se_resnet50  aa_resnet50  aw_resnet50  aa_se_resnet50  aw_se_resnet50  aw_aa_resnet50

(likewise for resnet18/34/101/152, mnasnet_a1, mnasnet_b1; the prefix is the `attention=` config option,
`plain` for `none`, which would otherwise clash with timm's own `resnet50`). So `timm.create_model(
"aa_resnet50")` builds exactly `create_model("resnet50", "aa")`, `timm.list_models("aa_*")` lists them, and
`features_only=True` returns every stage of the model's `feature_info` (aaconv.models.backbone). Their
`pretrained_cfg` names no weights: none are published. timm loads an exported `.safetensors` file
(scripts/export.py) with `checkpoint_path=`.

`import aaconv` registers the models as soon as timm is imported, without importing timm itself.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import importlib.util
import sys
from collections.abc import Callable, Mapping, Sequence
from functools import partial
from types import ModuleType
from typing import Any

from torch import nn

from aaconv.errors import CheckpointError, ConfigError
from aaconv.models.mnasnet import MNASNETS, build_mnasnet
from aaconv.models.resnet import RESNETS, build_resnet
from aaconv.models.wrn import WRNS, build_wrn

BUILDERS: dict[str, Callable[..., nn.Module]] = {
    **{name: partial(build_resnet, name) for name in RESNETS},
    **{name: partial(build_mnasnet, name) for name in MNASNETS},
    **{name: partial(build_wrn, name) for name in WRNS},
}


def create_model(
    name: str, attention: str | Mapping[str, Any] = "none", num_classes: int = 1000, **kwargs: Any
) -> nn.Module:
    """Builds classifier `name` (a key of BUILDERS) with `attention` (a variant name such as "aa+se" or the
    `attention` config mapping {variant, aa, aw, se}); kwargs go to the network (ResNet / MnasNet / WideResNet)."""
    if name not in BUILDERS:
        raise ConfigError(f"unknown model {name!r}; available: {', '.join(BUILDERS)}")
    return BUILDERS[name](attention, num_classes=num_classes, **kwargs)


def backbone_options(backbone: Mapping[str, Any]) -> dict[str, Any]:
    """The `backbone` config group's constructor keywords: all but `name` and `weights` (loaded after building)."""
    return {key: value for key, value in backbone.items() if key not in ("name", "weights")}


# timm name prefix -> attention variant (the prefixes are the `attention=` config options).
TIMM_VARIANTS = {
    "plain": "none",
    "se": "se",
    "aa": "aa",
    "aw": "aw",
    "aa_se": "aa+se",
    "aw_se": "aw+se",
    "aw_aa": "aw+aa",
}
# The ImageNet networks: Backbone protocol (detection, timm's features_only) and ImageNet preprocessing. The
# CIFAR Wide ResNets are classifiers only, built by create_model and the configs.
IMAGENET_BACKBONES: tuple[str, ...] = RESNETS + MNASNETS
TIMM_MODELS: dict[str, tuple[str, str]] = {
    f"{prefix}_{model}": (model, variant) for model in IMAGENET_BACKBONES for prefix, variant in TIMM_VARIANTS.items()
}
# How timm's feature extraction walks each family: ResNet's stages are top-level modules, MnasNet's are
# children of `blocks` (flattened); by default every stage of `feature_info` is returned.
_FEATURE_CFG = {
    **{name: {"out_indices": (0, 1, 2, 3, 4)} for name in RESNETS},
    **{name: {"out_indices": (0, 1, 2, 3, 4, 5, 6), "flatten_sequential": True} for name in MNASNETS},
}
_PAPERS = {"aa": "arXiv:1904.09925", "aw": "arXiv:2108.08205", "se": "arXiv:1709.01507"}


def _pretrained_cfg(model: str, variant: str) -> dict[str, Any]:
    """timm's per-model defaults: ImageNet eval preprocessing as configs/data/imagenet.yaml, no weights."""
    resnet = model in RESNETS
    papers = [_PAPERS[part] for part in variant.split("+") if part in _PAPERS]
    return {
        "url": "",
        "num_classes": 1000,
        "input_size": (3, 224, 224),
        "pool_size": (7, 7),
        "crop_pct": 0.875,
        "interpolation": "bicubic",
        "mean": (0.485, 0.456, 0.406),
        "std": (0.229, 0.224, 0.225),
        "first_conv": "conv1" if resnet else "conv_stem",
        "classifier": "fc" if resnet else "classifier",
        "license": "apache-2.0",
        "paper_ids": ", ".join(papers) or None,
        "notes": ("No pretrained weights are published; train with aaconv and export with scripts/export.py.",),
    }


default_cfgs = {name: _pretrained_cfg(model, variant) for name, (model, variant) in TIMM_MODELS.items()}


def _timm_entrypoint(name: str, model: str, variant: str) -> Callable[..., nn.Module]:
    """timm entry point `name`: timm's build_model_with_cfg over create_model(model, variant, ...)."""
    from timm.models import build_model_with_cfg

    def entrypoint(pretrained: bool = False, **kwargs: Any) -> nn.Module:
        if pretrained:
            raise CheckpointError(
                f"no pretrained weights are published for {name}; pass pretrained=False, "
                "or checkpoint_path=<model.safetensors written by scripts/export.py>"
            )
        if kwargs.pop("in_chans", 3) != 3:
            raise ConfigError(f"{name} takes RGB images (in_chans=3)")
        kwargs.setdefault("attention", variant)
        return build_model_with_cfg(
            partial(create_model, model),
            name,
            pretrained,
            feature_cfg=dict(_FEATURE_CFG[model]),
            kwargs_filter=("in_chans",),
            **kwargs,
        )

    entrypoint.__name__ = entrypoint.__qualname__ = name  # timm registers a function under its __name__,
    entrypoint.__module__ = __name__  # with the pretrained cfg from its module's `default_cfgs`
    return entrypoint


def register_timm_models() -> list[str]:
    """Registers every TIMM_MODELS name with timm (idempotent: names already registered are left as they
    are) and returns the names."""
    from timm.models import is_model, register_model

    module = sys.modules[__name__]
    for name, (model, variant) in TIMM_MODELS.items():
        if not is_model(name):
            setattr(module, name, register_model(_timm_entrypoint(name, model, variant)))
    return list(TIMM_MODELS)


class _RegisterWhenTimmLoads(importlib.abc.MetaPathFinder):
    """Finds `timm` through the other finders and runs register_timm_models() once its import completes."""

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname != "timm":
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec("timm")
        if spec is not None and spec.loader is not None:
            exec_timm = spec.loader.exec_module

            def exec_module(module: ModuleType) -> None:
                exec_timm(module)
                register_timm_models()

            spec.loader.exec_module = exec_module  # type: ignore[method-assign]
        return spec


def register_timm_models_on_import() -> None:
    """register_timm_models() now if timm is imported, else right after its import (timm's import costs
    seconds; `import aaconv` should not pay them)."""
    if "timm" in sys.modules:
        register_timm_models()
    elif not any(isinstance(finder, _RegisterWhenTimmLoads) for finder in sys.meta_path):
        sys.meta_path.insert(0, _RegisterWhenTimmLoads())
