#!/usr/bin/env bash
# The GPU session on a lent machine with two H200s (the `device` tool, kind nvidia-h200-x2):
# TensorFlow is carried there in chunks (../shared/gpu/README.md), our wheel in artifacts/. One
# or more stages per call, each writing its logs and results to $OUT/<stage>.tar.gz and a short
# summary last. Independent measurements run side by side, one per GPU.
#
#   bash scripts/gpu/session.sh install     # after the chunks are stashed: TF + our wheel
#   bash scripts/gpu/session.sh testbench   # cubins; GPU tests (default and portable kernels),
#                                           # op/layer and model-level benchmarks
#   bash scripts/gpu/session.sh train       # training runs on one GPU, long run, threads
#   bash scripts/gpu/session.sh mirrored    # MirroredStrategy over every visible GPU
#
# Several stages in one call: `session.sh install testbench`. Nothing here changes the GPU's
# settings.
set -uo pipefail
REPO=$(cd "$(dirname "$0")/../.." && pwd)
OUT=${OUT:-/tmp/out}
WORK=/root/session
mkdir -p "$OUT" "$WORK"
export PYTHONUNBUFFERED=1 TF_CPP_MIN_LOG_LEVEL=2 TF_FORCE_GPU_ALLOW_GROWTH=true
export NCCL_NVLS_ENABLE=0  # never NVLink multicast (the machine's rule)

log() { echo "[session $(date +%H:%M:%S)] $*"; }

stage_install() {
  bash /root/tfparts/install.sh || return 1
  # shellcheck disable=SC1091
  . /root/tfenv.sh
  python3 -m pip install -q --no-deps --no-compile --upgrade --target /root/tfsite \
    "$REPO"/artifacts/tensorflow_dcn-*.whl || return 1
  python3 -c "import tensorflow as tf, tensorflow_dcn as t; print('tf', tf.__version__, \
'gpus', len(tf.config.list_physical_devices('GPU')), 'tfdcn', t.__file__)"
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
}

# pytest on the installed wheel, from outside the checkout (as `make test` does).
run_pytest() {  # name, args...
  local name=$1; shift
  (cd /tmp && timeout 420 python3 -m pytest -q -p no:cacheprovider "$@") \
    > "$WORK/$name.log" 2>&1
  local rc=$?
  log "$name: rc=$rc $(tail -1 "$WORK/$name.log")"
  return $rc
}

check_cubins() {
  python3 "$REPO/scripts/gpu/check_cubins.py" "$REPO"/artifacts/tensorflow_dcn-*.whl \
    > "$WORK/cubins.txt" 2>&1
  log "cubins: rc=$? $(tail -1 "$WORK/cubins.txt")"
}

# The lanes, each for the GPU in CUDA_VISIBLE_DEVICES.
tests_default() {
  local t="$REPO/tests"
  run_pytest tests_default "$t/test_gpu.py" "$t/test_xla.py" "$t/test_forward.py" \
    "$t/test_gradients.py" "$t/test_validation.py" "$t/test_layer.py"
}

# The portable kernels alone (what a driver older than 580 runs), GPU cases only.
tests_portable() {
  local t="$REPO/tests"
  TFDCN_KERNELS=portable run_pytest tests_portable -k "gpu or Gpu" "$t/test_gpu.py" \
    "$t/test_xla.py" "$t/test_forward.py" "$t/test_gradients.py"
}

# The op/layer benchmark, then the portable kernels beside the default ones. From /tmp, so that
# the installed wheel is imported, not the checkout.
op_bench() {
  local b="$WORK/bench"
  mkdir -p "$b"
  cd /tmp || return 1
  timeout 240 python3 -m tensorflow_dcn.benchmark --configs 3,4,5,7 \
    --dtypes tf32,fp32,fp16,bf16 --repeats 5 --round-ms 30 --torch-python python3 \
    --out "$b/op" > "$b/op.log" 2>&1
  log "op benchmark: rc=$? $(tail -4 "$b/op.log" | tr '\n' ' ')"
  TFDCN_KERNELS=portable timeout 60 python3 -m tensorflow_dcn.benchmark --configs 3,7 \
    --dtypes tf32,fp16 --impls tfdcn,tfdcn_layer_xla --repeats 5 --round-ms 30 \
    --out "$b/op_portable" > "$b/op_portable.log" 2>&1
  log "op benchmark, portable kernels: rc=$? $(tail -1 "$b/op_portable.log")"
}

MODEL_ARGS=(--warmup-steps 3 --steps 15 --epochs 3)

# The model-level benchmark, one dtype after another, then one report.
model_bench() {
  local b="$WORK/bench"
  mkdir -p "$b"
  cd /tmp || return 1
  for dtype in fp32 bf16 fp16; do
    timeout 140 python3 -m tensorflow_dcn.benchmark model --dtypes "$dtype" "${MODEL_ARGS[@]}" \
      --out "$b/model-$dtype" > "$b/model-$dtype.log" 2>&1
    log "model benchmark $dtype: rc=$? $(tail -2 "$b/model-$dtype.log" | tr '\n' ' ')"
  done
  python3 -m tensorflow_dcn.benchmark model --merge "$b"/model-*/benchmark.json \
    --out "$b/model" > "$b/model.log" 2>&1
  log "model report: rc=$? $(tail -6 "$b/model.log" | tr '\n' ' ')"
}

# Tests and benchmarks in one call, two lanes: GPU 0 the default-kernel tests, then the op/layer
# benchmark; GPU 1 the portable-kernel tests, then the model-level benchmark.
stage_testbench() {
  check_cubins
  (export CUDA_VISIBLE_DEVICES=0; tests_default; op_bench) &
  (export CUDA_VISIBLE_DEVICES=1; tests_portable; model_bench) &
  wait
}

TRAIN_ARGS=(--epochs 3 --steps-per-epoch 60 --batch-size 32 --image-size 256 --channels 64
            --layer both --verbose 2)

train_one_gpu() {  # policy, gpu
  local policy=$1 extra=() r="$WORK/train"
  [[ $policy != none ]] && extra=(--compare-float32)
  CUDA_VISIBLE_DEVICES=$2 timeout 300 python3 "$REPO/examples/train_segmentation.py" \
    "${TRAIN_ARGS[@]}" --mixed-precision "$policy" "${extra[@]}" \
    --json-out "$r/seg_1gpu_$policy.json" > "$r/seg_1gpu_$policy.log" 2>&1
  log "train $policy: rc=$? $(grep -E 'images/s|^OK|^FAILED' "$r/seg_1gpu_$policy.log" | tr '\n' ' ' | cut -c1-400)"
}

stage_train() {
  local r="$WORK/train"
  mkdir -p "$r"
  # GPU 0: float32 (TF32 on) then mixed_float16; GPU 1: mixed_bfloat16, then the long run.
  (train_one_gpu none 0; train_one_gpu mixed_float16 0) &
  (
    train_one_gpu mixed_bfloat16 1
    CUDA_VISIBLE_DEVICES=1 timeout 240 python3 "$REPO/examples/long_run.py" --dtype float16 \
      --jit-compile --steps 10000 --json-out "$r/long_fp16.json" > "$r/long_fp16.log" 2>&1
    log "long run: rc=$? $(grep -E 'ms/step|finite|thread test' "$r/long_fp16.log" | tr '\n' ' ' | cut -c1-400)"
  ) &
  wait
}

stage_mirrored() {
  local e="$REPO/examples" r="$WORK/train"
  mkdir -p "$r"
  # The same global batch as the one-GPU float32 run, compiled with XLA on each replica.
  timeout 300 python3 "$e/train_segmentation.py" "${TRAIN_ARGS[@]}" --distribute mirrored \
    --jit-compile true --compare-losses "$r/seg_1gpu_none.json" \
    --json-out "$r/seg_2gpu.json" > "$r/seg_2gpu.log" 2>&1
  log "mirrored: rc=$? $(grep -E 'images/s|max rel diff|^OK|^FAILED' "$r/seg_2gpu.log" | tr '\n' ' ' | cut -c1-400)"
}

[[ -f /root/tfenv.sh ]] && . /root/tfenv.sh
# Results so far, every 20 s: a call cut off by its time limit still brings back what finished.
(while sleep 20; do tar czf "$OUT/partial.tar.gz" -C "$WORK" . 2>/dev/null; done) &
saver=$!
status=0
for stage in "$@"; do
  log "stage $stage"
  "stage_$stage" || status=1
  tar czf "$OUT/$stage.tar.gz" -C "$WORK" . 2>/dev/null
done
kill "$saver" 2>/dev/null
rm -f "$OUT/partial.tar.gz"
log "done (status $status)"
exit $status
