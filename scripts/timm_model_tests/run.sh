#!/bin/bash
# timm's own tests/test_models.py over aaconv's registered names (docs/models.md, "timm's model contract").
# usage: scripts/timm_model_tests/run.sh <timm sdist tests dir> <comma-separated names> [pytest args, e.g. -k fx]
set -e
here=$(cd "$(dirname "$0")" && pwd)
export TIMM_TESTS=$(cd "$1" && pwd) TIMM_MODELS=$2 PYTHONPATH=$(dirname "$(dirname "$here")"):$here
shift 2
cd "$TIMM_TESTS"
exec python -m pytest -p aaconv_timm_plugin -p no:cacheprovider test_models.py "$here/test_intermediates_over_aaconv.py" \
    -v -rs -W ignore "$@"
