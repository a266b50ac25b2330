#!/usr/bin/env bash
# The checks of one lent GPU session, run from the repository root on a CUDA machine:
#   1. the tests marked `gpu` (CUDA equals CPU for every network, loss and the sliding window;
#      training on CUDA writes checkpoints that predict on the CPU);
#   2. the benchmarks that have a GPU meaning (unet, nets3d, losses) -> $OUT/RESULTS_gpu.md;
#   3. the 3D U-Net hippocampus recipe trained through the CLI with --device cuda for a time
#      budget, its validation split predicted and scored (Dice, HD95 in mm);
#   4. DeepResolve at the paper's size (20 layers x 64 filters) trained on two brain templates,
#      the held-out MNI152 template degraded, restored and scored against tricubic (PSNR, SSIM).
# Needs torch with CUDA, nibabel and monai importable, the data under $DENSEMED_DATA.
# For a dry run on the CPU: DEV=cpu HIP_S=5 SR_S=5 SKIP_BENCH=1 (or BENCH_QUICK=1)
#   SR_SIZE="model.depth=3 model.width=8 data.patch_size=[16,16,16] data.batch_size=2"
set -u
OUT=${OUT:-runs/gpu_check}
RUNS=${RUNS:-/tmp/densemed_gpu_runs}
PY=${PYTHON:-python3}
HIP_S=${HIP_S:-60}
SR_S=${SR_S:-120}
DEV=${DEV:-cuda}
SR_SIZE=${SR_SIZE:-"model.depth=20 model.width=64 data.patch_size=[48,48,48] data.batch_size=8"}
mkdir -p "$OUT" "$RUNS"
export PYTHONPATH=$PWD/src:$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
dm() { $PY -m densemed "$@"; }
t0=$SECONDS
stamp() { echo "== $1 (t=$((SECONDS - t0)) s)"; }

stamp "device"
$PY -c "import torch; print(torch.__version__, torch.cuda.is_available() and torch.cuda.get_device_name())"

stamp "tests marked gpu"
timeout 150 $PY -m pytest -q -m gpu -p no:cacheprovider tests/nets/test_registry_contract.py \
  tests/infer/test_sliding_window.py tests/losses/test_properties.py tests/train/test_loop.py \
  tests/augment/test_preview.py 2>&1 | tail -15 | tee "$OUT/pytest_gpu.log"

if [ -z "${SKIP_BENCH:-}" ]; then
  stamp "benchmarks"
  timeout 240 $PY -m benchmarks --only unet nets3d losses ${BENCH_QUICK:+--quick} \
    --results "$OUT/RESULTS_gpu.md" > "$OUT/bench.log" 2>&1; echo "benchmarks rc=$?"
  grep "^|" "$OUT/bench.log" | grep -v "^|---" | cut -c1-220
fi

stamp "3D U-Net hippocampus, $HIP_S s on $DEV"
rm -rf "$RUNS/hip"
dm compare configs/unet3d_hippocampus.yaml --budget "$HIP_S" --device "$DEV" --out "$RUNS/hip" \
  > "$OUT/hip_compare.log" 2>&1; echo "compare rc=$?"
cp "$RUNS/hip/report.md" "$OUT/hip_report.md"; cp "$RUNS/hip/report.html" "$OUT/hip_report.html"
grep "^|" "$OUT/hip_report.md" | head -4

stamp "DeepResolve 20x64, $SR_S s on $DEV"
rm -rf "$RUNS/sr" "$RUNS/hr" "$RUNS/lr" "$RUNS/srout"
# shellcheck disable=SC2086  # SR_SIZE is a list of overrides
dm train configs/deepresolve_brain.yaml --device "$DEV" --set $SR_SIZE data.samples_per_epoch=128 train.epochs=40 \
  train.val_every=1000 train.time_budget_s="$SR_S" train.out="$RUNS/sr" train.progress=false \
  "data.train_files=[colin27_ch2,inia19_macaque_t1]" "data.val_files=[mni152_2009a_t1]" \
  > "$OUT/sr_train.log" 2>&1; echo "train rc=$?"
tail -2 "$OUT/sr_train.log"
mkdir -p "$RUNS/hr" && ln -sf "$(realpath "${DENSEMED_DATA:-../shared/data}")/brain_mri_templates/images/mni152_2009a_t1.nii.gz" "$RUNS/hr/"
dm degrade --input "$RUNS/hr" --output "$RUNS/lr" --factor 2 --axis 2 \
  && dm predict --checkpoint "$RUNS/sr/best.pt" --input "$RUNS/lr" --output "$RUNS/srout" --window 64 64 64 --device "$DEV" \
  && dm evaluate --task sr --pred "$RUNS/srout" --truth "$RUNS/hr" --baseline "$RUNS/lr" --json "$OUT/sr_eval.json" 2>&1 | tail -6
stamp "done"
