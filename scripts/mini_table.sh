#!/usr/bin/env bash
# The mini reproduction on a CPU: ResNet-18 x {none, se, aa, aw} x 3 seeds on the built-in relations set
# (configs/experiment/mini_relations.yaml), then its table (mean ± std over the seeds) from scripts/paper_table.py.
#   scripts/mini_table.sh [SWEEP_DIR] [extra overrides...]      e.g. scripts/mini_table.sh multirun/mini trainer.epochs=3
#   VARIANTS=none,aa scripts/mini_table.sh                      a subset of the variants (AW takes ~2x none's time)
# One training process at a time on one thread (figures and timings in docs/reproduce.md). PYTHON picks the
# interpreter (default: the `python` on PATH, the activated venv's).
set -euo pipefail
cd "$(dirname "$0")/.."
case "${1:-}" in
    -*|*=*) echo "usage: scripts/mini_table.sh [SWEEP_DIR] [extra overrides...] (SWEEP_DIR first, then key=value)" >&2
            exit 2 ;;
esac
sweep_dir="${1:-multirun/mini_relations}"
shift || true
python="${PYTHON:-python}"
if ! "$python" -c "import hydra, aaconv" 2>/dev/null; then
    echo "error: '$python' cannot import aaconv and its dependencies; activate the venv (source .venv/bin/activate)" \
        "or set PYTHON=.venv/bin/python" >&2
    exit 2
fi
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
"$python" train.py -m experiment=mini_relations seed=0,1,2 attention="${VARIANTS:-none,se,aa,aw}" \
    logger.progress_bar=false hydra.sweep.dir="$sweep_dir" "$@"
"$python" scripts/paper_table.py "$sweep_dir" --table mini
"$python" scripts/paper_table.py --sweep "$sweep_dir"
