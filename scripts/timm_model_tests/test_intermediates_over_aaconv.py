"""timm's own forward_intermediates tests (unmodified functions from timm's tests/test_models.py), called over the
names in $TIMM_MODELS: timm selects those tests by its own module names, which aaconv's entry points are not in."""

import os
import sys

import pytest

sys.path.insert(0, os.environ["TIMM_TESTS"])
import test_models as timm_tests  # noqa: E402

NAMES = os.environ["TIMM_MODELS"].split(",")


@pytest.mark.parametrize("model_name", NAMES)
def test_forward_intermediates(model_name):
    timm_tests.test_model_forward_intermediates(model_name, 1)


@pytest.mark.parametrize("model_name", NAMES)
def test_forward_intermediates_features(model_name):
    timm_tests.test_model_forward_intermediates_features(model_name, 1)
