#!/usr/bin/env bash
# One command for a CUDA machine: the `gpu`-marked tests, the benchmark tables (classification, RetinaNet at
# 800x1333, the AA layer against timm's attention layers, AA's formulations per map, SDPA backends, the loader) and short bf16 + channels_last + torch.compile
# training runs of AA-ResNet-50 and AA-RetinaNet on the built-in shapes data, all written to one folder:
#
#     bash scripts/gpu_check.sh [OUT_DIR]          # default: $OUT if set, else gpu_check/
#
# Fits one 10-minute call: every step runs under `timeout` within what is left of a 550 s budget
# (GPU_CHECK_BUDGET); a step that runs out is recorded as such and the next one starts; steps the budget leaves
# out are named in the report, and GPU_CHECK_ONLY="<keys>" runs just those in a second call. Writes 6 files:
# report.md (every table; the last 150 lines of each step's output), env.txt, pytest.txt, train.log,
# benchmark_classification.json, benchmark_retinanet.json.
#
# Offline machines: when hydra/omegaconf/pycocotools/pytest are missing, wheels are installed from .whl/ with
# no registry. Fetch them beforehand on a machine that has one (from the project root):
#     bash /path/to/wheels.sh pytest==8.3.4 pluggy==1.5.0 iniconfig==2.0.0 packaging==24.2
# where wheels.sh downloads `hydra-core omegaconf pycocotools` (+ the names given) as Python 3.12 manylinux
# wheels into .whl/ and builds antlr4-python3-runtime's pure-Python wheel; then carry .whl to the GPU machine.
set -uo pipefail
cd "$(dirname "$0")/.."
out=${1:-${OUT:-gpu_check}}
mkdir -p "$out"
report=$out/report.md
tables=$(mktemp)  # the benchmarks' full output; the report keeps it
budget=${GPU_CHECK_BUDGET:-550}
start=$SECONDS
PY=${PYTHON:-python3}

missing=$($PY - <<'EOF'
import importlib.util
print(" ".join(m for m in ("hydra", "omegaconf", "pycocotools", "pytest") if importlib.util.find_spec(m) is None))
EOF
)
if [ -n "$missing" ]; then
  if ! ls .whl/*.whl >/dev/null 2>&1; then
    echo "missing Python packages ($missing) and no .whl/ folder; see this script's header" | tee "$report"
    exit 1
  fi
  $PY -m pip install -q --no-index --no-deps --target /tmp/aaconv-site .whl/*.whl
  export PYTHONPATH=/tmp/aaconv-site:${PYTHONPATH:-}
fi
export PYTHONPATH=$PWD:${PYTHONPATH:-}
export AACONV_CACHE=${AACONV_CACHE:-/tmp/aaconv-cache}
if ! $PY -c "import torch, sys; sys.exit(not torch.cuda.is_available())"; then
  echo "no CUDA device visible to torch; this script measures a GPU" | tee "$report"
  exit 1
fi

{
  nvidia-smi
  $PY -c "import torch, torchvision, timm; print('torch', torch.__version__, 'torchvision', torchvision.__version__, \
'timm', timm.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name())"
  echo "installed from .whl: ${missing:-nothing}"
} > "$out/env.txt" 2>&1

# step KEY TITLE MAX_SECONDS LOG COMMAND...: runs COMMAND for at most MAX_SECONDS (and what is left of the
# budget), appending its output to LOG and its last 150 lines to the report. GPU_CHECK_ONLY="key ..." runs only
# those steps (e.g. the ones a first call had no time left for).
step() {
  local key=$1 title=$2 limit=$3 log=$4
  shift 4
  if [ -n "${GPU_CHECK_ONLY:-}" ] && [[ " $GPU_CHECK_ONLY " != *" $key "* ]]; then return; fi
  local left=$((budget - (SECONDS - start)))
  [ "$limit" -gt "$left" ] && limit=$left
  if [ "$limit" -lt 20 ]; then
    printf '\n## %s\n\nskipped: the budget is spent; rerun with GPU_CHECK_ONLY="%s ..."\n' "$title" "$key" >> "$report"
    return
  fi
  local begin=$SECONDS output
  output=$(mktemp)
  timeout --kill-after=10 "$limit" "$@" > "$output" 2>&1
  local rc=$? note
  note="exit $rc"
  if [ $rc -eq 124 ] || [ $rc -eq 137 ]; then note="stopped after $limit s (timeout)"; fi
  { echo "### $title: $*"; cat "$output"; } >> "$log"
  { printf '\n## %s [%s] (%s s, %s)\n\n    %s\n\n' "$title" "$key" $((SECONDS - begin)) "$note" "$*"
    tail -n 150 "$output"; } >> "$report"
  rm -f "$output"
}

echo "# gpu_check $(date -u +%FT%TZ) on $($PY -c 'import torch; print(torch.cuda.get_device_name())')" > "$report"

# In order of importance; the limits add up to more than the budget, so the last steps may need a second call.
step tests "gpu-marked tests" 150 "$out/pytest.txt" \
  $PY -m pytest -m gpu -q -p no:cacheprovider tests/layers tests/models tests/engine

step classification "classification, bf16, channels_last, batch 64, 224 px" 80 "$tables" \
  $PY scripts/benchmark.py --models resnet50:none resnet50:se resnet50:aa resnet50:aw resnet50:aw_aa \
  --batch 64 --image-size 224 --precision bf16 --channels-last --warmup 3 --repeats 5 --steps 3 \
  --json "$out/benchmark_classification.json" --profile 12

step train_aa_resnet50 "train AA-ResNet-50 on shapes (bf16, channels_last, compile)" 90 "$out/train.log" \
  $PY train.py backbone=resnet50 attention=aa trainer.precision=bf16 trainer.channels_last=true \
  trainer.compile=true trainer.epochs=2 data.image_size=64 data.batch_size=128 data.workers=4 \
  hydra.run.dir=/tmp/gpu_check/aa_resnet50

step train_aa_retinanet "train AA-RetinaNet (ResNet-50) on shapes_det (bf16, channels_last, compile)" 90 \
  "$out/train.log" \
  $PY train.py experiment=retinanet_shapes backbone=resnet50 attention=aa trainer.precision=bf16 \
  trainer.channels_last=true trainer.compile=true trainer.epochs=1 trainer.cudnn_benchmark=false \
  data.workers=4 hydra.run.dir=/tmp/gpu_check/aa_retinanet

step retinanet "RetinaNet R50 at 800x1333, batch 8, bf16: ours, AA (auto: fused/flex), torchvision" 80 "$tables" \
  $PY scripts/benchmark.py --task retinanet --models resnet50:none resnet50:aa --batch 8 --image-size 800x1333 \
  --precision bf16 --channels-last --warmup 2 --repeats 3 --json "$out/benchmark_retinanet.json"

step layers "AA layer vs timm's BoTNet / HaloNet / LambdaLayer, AW vs conv (bf16, batch 4, 256 ch, 8 heads)" 60 \
  "$tables" $PY scripts/bench_layers.py --dtype bf16 --sizes 14x14 28x28 56x56 \
  --kinds aa-auto aa-chunked aa-fused aa-flex botnet halonet lambda aw-auto conv

step layers_detection "the same rows at a detection-sized map (bf16, 100x168, batch 1)" 40 "$tables" \
  $PY scripts/bench_layers.py --dtype bf16 --sizes 100x168 --batch 1 \
  --kinds aa-auto aa-chunked aa-fused aa-flex botnet halonet lambda aw-auto conv

step aa_maps "AA formulations per map, AA-ResNet-50's layer (fp32, batch 32, dk 160, dv 24)" 30 "$tables" \
  $PY scripts/bench_layers.py --aa-maps 7x7 14x14 28x28 56x56 --batch 32 --channels 256 --dk 160 --dv 24

step backends "SDPA kernels accepting the fused path (bf16, dk_h 20)" 30 "$tables" \
  $PY scripts/bench_layers.py --dtype bf16 --batch 8 --sizes 28x28 56x56 100x168 \
  --channels 256 --dk 160 --dv 32 --kinds aa-reference aa-fused --backends

step aw_stages "AW formulations per ResNet-50 stage at 224 px, batch 64" 30 "$tables" \
  $PY scripts/bench_layers.py --aw-stages 64x56 128x28 256x14 512x7 --batch 64

step retinanet_reference "RetinaNet R50 AA, the reference path's memory (800x1333, batch 8)" 40 "$tables" \
  $PY scripts/benchmark.py --task retinanet --models resnet50:aa --no-peers --set attention.aa.impl=reference \
  --batch 8 --image-size 800x1333 --precision bf16 --channels-last --warmup 1 --repeats 1 --modes train

step loader "ImageNet-style loader: PIL vs GPU decode (generated JPEGs: 500x375, a tenth 2000x1500)" 60 "$tables" \
  $PY scripts/benchmark.py --models --loader --synthetic-jpeg 1024 --batch 128 --image-size 224 \
  --workers 1 4 8 --decode pil gpu --loader-batches 6 --no-peers

echo "done in $((SECONDS - start)) s; see $report"
