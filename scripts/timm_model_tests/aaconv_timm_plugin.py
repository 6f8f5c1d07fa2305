"""pytest plugin: registers aaconv's models with timm before timm's tests collect, and keeps only the items whose
model_name is listed in $TIMM_MODELS (comma-separated). Selection only: the tests run unmodified."""

import os

import timm  # noqa: F401

import aaconv  # noqa: F401  (registers its models with timm)


def pytest_collection_modifyitems(config, items):
    keep = set(os.environ["TIMM_MODELS"].split(","))
    selected = [i for i in items if getattr(i, "callspec", None) and i.callspec.params.get("model_name") in keep]
    deselected = [i for i in items if i not in selected]
    config.hook.pytest_deselected(items=deselected)
    items[:] = selected
