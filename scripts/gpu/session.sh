#!/usr/bin/env bash
# The GPU session on a lent machine with two H200s (the `device` tool, kind nvidia-h200-x2):
# TensorFlow is carried there in chunks (../shared/gpu/README.md), our wheel in artifacts/. One
# or more stages per call, each writing its logs and results to $OUT/<stage>.tar.gz and a short
# summary last. Independent measurements run side by side, one per GPU.
#
#   bash scripts/gpu/session.sh install     # after the chunks are stashed: TF + our wheel
#   bash scripts/gpu/session.sh tests       # cubins; GPU tests (default and portable kernels)
#   bash scripts/gpu/session.sh check       # cubins; GPU tests (default kernels) beside the core's
#                                           # checks, timings and profile (carry .devbuild)
#   bash scripts/gpu/session.sh bench       # op/layer and model-level (fp32, bf16) benchmarks
#                                           # (OP_DTYPES: the op benchmark's dtypes, OP_ARGS:
#                                           # more of its options)
#   bash scripts/gpu/session.sh model       # model-level benchmark alone (MODEL_DTYPES,
#                                           # MODEL_LIST)
#   bash scripts/gpu/session.sh model_kernels # the model step's GPU time per kernel and kind
#                                           # (MODEL_LIST, MODEL_DTYPES; default fp32)
#   bash scripts/gpu/session.sh determinism # the DCN models' losses, fp32, TF32 off, deterministic
#   bash scripts/gpu/session.sh op_core     # op/layer benchmark beside the core's checks and
#                                           # timings (carry .devbuild): a kernel change's run
#   bash scripts/gpu/session.sh bench_portable  # the portable kernels' op alone
#   bash scripts/gpu/session.sh train       # model-level fp16; training on one GPU (float32,
#                                           # mixed_float16), long run, threads
#   bash scripts/gpu/session.sh mirrored    # MirroredStrategy over every visible GPU (after
#                                           # train: it compares with the one-GPU float32 run)
#   bash scripts/gpu/session.sh train_nojit # one GPU, float32, XLA off: the mirrored baseline
#   bash scripts/gpu/session.sh profile     # the CUDA core alone: sanitizers, ncu per kernel,
#                                           # checks, timings (carry .devbuild)
#   bash scripts/gpu/session.sh core        # the core's checks and timings alone (carry .devbuild;
#                                           # CORE_CONFIGS: NxHxWxC,... to time instead)
#   bash scripts/gpu/session.sh ncu         # ncu's time per kernel of one fwd+bwd (carry .devbuild;
#                                           # CORE_CONFIGS)
#   bash scripts/gpu/session.sh sanitize    # memcheck and racecheck over core_smoke (carry .devbuild)
#   bash scripts/gpu/session.sh compare     # builds of the core side by side (carry .devbuild with
#                                           # variants.tar.xz)
#   bash scripts/gpu/session.sh probe       # ncu's full set (stalls, memory tables, SASS) of one
#                                           # launch per kernel in PROBE (GPU 0; carry .devbuild)
#   bash scripts/gpu/session.sh op_kernels  # the kernels the op launches per call through
#                                           # TensorFlow, timed by ncu (after install; OP_KERNELS)
#   bash scripts/gpu/session.sh op_memory   # each op's and the fwd+bwd's peak memory beyond what
#                                           # they return (after install; OP_MEMORY)
#   bash scripts/gpu/session.sh precision   # output and gradient errors against float64, ours and
#                                           # the pure-TF DCN per dtype (after install;
#                                           # PRECISION_CONFIGS, PRECISION_DTYPES)
#
# Several stages in one call: `session.sh install tests`. Nothing here changes the GPU's
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
  (cd /tmp && python3 -c "import tensorflow as tf, tensorflow_dcn as t; print('tf', \
tf.__version__, 'gpus', len(tf.config.list_physical_devices('GPU')), 'tfdcn', t.__file__)")
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
}

# pytest on the installed wheel, from outside the checkout (as `make test` does).
run_pytest() {  # name, args...
  local name=$1; shift
  (cd /tmp && timeout 420 python3 -m pytest -q -rs -p no:cacheprovider "$@") \
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

# Runs two functions side by side, the first on GPU 0, the second on GPU 1, each in its own
# subshell, and waits for both: by PID, since the result saver runs in the background too and a
# bare wait would wait for it until the call's time limit. With one GPU (kind nvidia-h200), one
# after the other on it.
GPUS=$(nvidia-smi -L 2>/dev/null | grep -c '^GPU')
on_both_gpus() {  # lane0, lane1
  if ((GPUS < 2)); then
    (export CUDA_VISIBLE_DEVICES=0; "$1")
    (export CUDA_VISIBLE_DEVICES=0; "$2")
    return
  fi
  (export CUDA_VISIBLE_DEVICES=0; "$1") &
  local lane0=$!
  (export CUDA_VISIBLE_DEVICES=1; "$2") &
  wait "$lane0" $!
}

# The test files in two halves of about equal time, run side by side on one GPU.
TESTS_A=(test_gpu.py test_layer.py)
TESTS_B=(test_xla.py test_forward.py test_gradients.py test_validation.py)

# The default kernels (the whole suite), two pytest processes on this lane's GPU.
tests_default() {
  local t="$REPO/tests"
  run_pytest tests_default_a "${TESTS_A[@]/#/$t/}" &
  run_pytest tests_default_b "${TESTS_B[@]/#/$t/}"
  wait  # in the lane's subshell: only its own pytest
}

# The portable kernels alone (what a driver older than 580 runs), GPU cases.
tests_portable() {
  local t="$REPO/tests"
  export TFDCN_KERNELS=portable
  run_pytest tests_portable_a -k "gpu or Gpu" "${TESTS_A[@]/#/$t/}" &
  run_pytest tests_portable_b -k "gpu or Gpu" "${TESTS_B[@]/#/$t/}"
  wait
}

stage_tests() {
  check_cubins
  on_both_gpus tests_default tests_portable
}

# The op/layer benchmark. From /tmp, so that the installed wheel is imported, not the checkout.
op_bench() {
  local b="$WORK/bench"
  mkdir -p "$b"
  cd /tmp || return 1
  timeout 570 python3 -m tensorflow_dcn.benchmark --configs 3,4,5,7 \
    --dtypes "${OP_DTYPES:-tf32,fp32,fp16,bf16}" --repeats 5 --round-ms 30 \
    --torch-python python3 ${OP_ARGS:-} --out "$b/op" > "$b/op.log" 2>&1
  log "op benchmark: rc=$? $(tail -n 4 "$b/op.log" | tr '\n' ' ')"
}

# The portable kernels' op alone (what a driver older than 580 runs), to set beside op_bench.
op_bench_portable() {
  local b="$WORK/bench"
  mkdir -p "$b"
  cd /tmp || return 1
  TFDCN_KERNELS=portable timeout 90 python3 -m tensorflow_dcn.benchmark --configs 3,4,5,7 \
    --dtypes tf32,fp32,fp16,bf16 --impls tfdcn --repeats 5 --round-ms 30 \
    --out "$b/op_portable" > "$b/op_portable.log" 2>&1
  log "op benchmark, portable kernels: rc=$? $(tail -n 1 "$b/op_portable.log")"
}

# 5 epochs of 50 steps (about 0.5 s each): 3 of 15 steps varied by up to 10% epoch to epoch.
MODEL_ARGS=(--warmup-steps 3 --steps 50 --epochs 5)

# The model-level benchmark, one dtype after another, then one report.
model_bench() {
  local b="$WORK/bench"
  mkdir -p "$b"
  cd /tmp || return 1
  local models=${MODEL_LIST:-conv,pure_tf,tfdcn}
  for dtype in ${MODEL_DTYPES:-fp32 bf16 fp16}; do
    timeout "${MODEL_TIMEOUT:-300}" python3 -m tensorflow_dcn.benchmark model --dtypes "$dtype" \
      --models "$models" "${MODEL_ARGS[@]}" --out "$b/model-$dtype-${models//,/-}" \
      > "$b/model-$dtype-${models//,/-}.log" 2>&1
    log "model benchmark $dtype $models: rc=$? $(tail -n 3 "$b/model-$dtype-${models//,/-}.log" | tr '\n' ' ')"
  done
  python3 -m tensorflow_dcn.benchmark model --merge "$b"/model-*/benchmark.json \
    --out "$b/model" > "$b/model.log" 2>&1
  log "model report: rc=$? $(tail -n 6 "$b/model.log" | tr '\n' ' ')"
}

# GPU 0 the op/layer benchmark, GPU 1 the model-level one in float32 and mixed_bfloat16 (its
# mixed_float16 rows run in the train stage: each model takes a minute, XLA compilation included).
model_bench_fp32_bf16() { MODEL_DTYPES="fp32 bf16" model_bench; }

stage_bench() { on_both_gpus op_bench model_bench_fp32_bf16; }
stage_model() { model_bench; }

# Where the model step's GPU time goes, per kernel and kind (scripts/gpu/model_kernels.py):
# MODEL_LIST, MODEL_DTYPES (default fp32).
stage_model_kernels() {
  local r="$WORK/model_kernels" dtypes=${MODEL_DTYPES:-fp32}
  mkdir -p "$r"
  cd /tmp || return 1
  timeout "${MODEL_TIMEOUT:-500}" python3 "$REPO/scripts/gpu/model_kernels.py" \
    --models "${MODEL_LIST:-conv,tfdcn,pure_tf}" --dtypes "${dtypes// /,}" --out "$r" \
    > "$r/model_kernels.md" 2> "$r/model_kernels.log"
  log "model kernels: rc=$? $(grep -E '^## ' "$r/model_kernels.md" | tr '\n' ' ')"
}

# The two DCN models' losses side by side with every source of run-to-run variation off: float32
# with TF32 off and op determinism (their per-epoch losses are in the JSON, `epoch_losses`).
stage_determinism() {
  local b="$WORK/bench"
  mkdir -p "$b"
  cd /tmp || return 1
  timeout 420 python3 -m tensorflow_dcn.benchmark model --dtypes fp32 --models pure_tf,tfdcn \
    --tf32 off --deterministic "${MODEL_ARGS[@]}" --out "$b/model-deterministic" \
    > "$b/model-deterministic.log" 2>&1
  log "model benchmark, deterministic fp32: rc=$? $(tail -n 4 "$b/model-deterministic.log" | tr '\n' ' ')"
}
stage_bench_portable() { op_bench_portable; }
stage_op() { op_bench; }

TRAIN_ARGS=(--epochs 3 --steps-per-epoch 50 --batch-size 32 --image-size 256 --channels 64
            --layer both --verbose 2)

train_one_gpu() {  # policy
  local policy=$1 extra=() r="$WORK/train"
  mkdir -p "$r"
  [[ $policy != none ]] && extra=(--compare-float32)
  timeout 270 python3 "$REPO/examples/train_segmentation.py" \
    "${TRAIN_ARGS[@]}" --mixed-precision "$policy" "${extra[@]}" \
    --json-out "$r/seg_1gpu_$policy.json" > "$r/seg_1gpu_$policy.log" 2>&1
  log "train $policy: rc=$? $(grep -E 'images/s|^OK|^FAILED' "$r/seg_1gpu_$policy.log" | tr '\n' ' ' | cut -c1-400)"
}

long_run() {
  local r="$WORK/train"
  mkdir -p "$r"
  timeout 150 python3 "$REPO/examples/long_run.py" --dtype float16 \
    --jit-compile --steps 10000 --json-out "$r/long_fp16.json" > "$r/long_fp16.log" 2>&1
  log "long run: rc=$? $(grep -E 'ms/step|finite|thread test|FAILED' "$r/long_fp16.log" | tr '\n' ' ' | cut -c1-400)"
}

# GPU 0: the mixed_float16 model-level rows; GPU 1: float32 (TF32 on) training (the one-GPU run
# `mirrored` compares with), the long run, mixed_float16 training. mixed_bfloat16 training:
# `train_one_gpu mixed_bfloat16`.
train_lane0() { MODEL_DTYPES=fp16 model_bench; }
train_lane1() { train_one_gpu none; long_run; train_one_gpu mixed_float16; }

stage_train() { on_both_gpus train_lane0 train_lane1; }

# One GPU with XLA off: what the MirroredStrategy run scales against (Keras compiles without XLA
# under a strategy, so the one-GPU default run is not a like-for-like baseline).
stage_train_nojit() {
  local r="$WORK/train"
  mkdir -p "$r"
  timeout 270 python3 "$REPO/examples/train_segmentation.py" "${TRAIN_ARGS[@]}" \
    --jit-compile false --json-out "$r/seg_1gpu_none_nojit.json" > "$r/seg_1gpu_none_nojit.log" 2>&1
  log "train float32, XLA off: rc=$? $(grep -E 'images/s|^OK|^FAILED' "$r/seg_1gpu_none_nojit.log" | tr '\n' ' ' | cut -c1-400)"
}

stage_mirrored() {
  local e="$REPO/examples" r="$WORK/train"
  mkdir -p "$r"
  # The same global batch as the one-GPU float32 run, compiled the default way: Keras turns XLA
  # off under a tf.distribute strategy (and jit_compile=True there fails in TensorFlow itself:
  # one XLA program cannot hold the replicas' variables on two GPUs).
  timeout 300 python3 "$e/train_segmentation.py" "${TRAIN_ARGS[@]}" --distribute mirrored \
    --compare-losses "$r/seg_1gpu_none.json" \
    --json-out "$r/seg_2gpu.json" > "$r/seg_2gpu.log" 2>&1
  log "mirrored: rc=$? $(grep -E 'images/s|max rel diff|^OK|^FAILED' "$r/seg_2gpu.log" | tr '\n' ' ' | cut -c1-400)"
}

# The CUDA core without TensorFlow (tests/cuda_core/check_core.py; needs .devbuild/ from
# tests/cuda_core/build.sh carried; torch is the machine's own, so the TensorFlow environment is
# left out): GPU 0 ncu per kernel of one forward + backward (8x64x64x128 and 4x32x32x512 in fp32,
# TF32 and fp16; default and im2col kernels), GPU 1 the parity checks against float64
# and the timings, the two backward ops apart.
CORE=(env -u PYTHONPATH -u LD_LIBRARY_PATH DCN_CORE_LIB="$REPO/.devbuild/libdcn_core.so")
PROFILE="$WORK/profile"
# CORE_CONFIGS (NxHxWxC,...): the shapes of the core's timings and ncu profile instead of
# check_core.py's own.
CONFIG_ARGS=(${CORE_CONFIGS:+--configs "$CORE_CONFIGS"})

core_profile() {
  local metrics=gpu__time_duration.sum,lts__t_sectors_op_red.sum,lts__t_sectors_op_atom.sum
  metrics+=,lts__throughput.avg.pct_of_peak_sustained_elapsed
  metrics+=,sm__pipe_tensor_op_hmma_cycles_active.avg.pct_of_peak_sustained_active
  "${CORE[@]}" timeout 300 ncu --clock-control none --kernel-name-base demangled \
    --kernel-name regex:tensorflow_dcn --section SpeedOfLight --metrics "$metrics" \
    python3 "$REPO/tests/cuda_core/check_core.py" --profile "${CONFIG_ARGS[@]}" \
    > "$PROFILE/ncu.txt" 2>&1
  log "profile: rc=$? $(grep -c 'gpu__time_duration' "$PROFILE/ncu.txt") kernel launches"
}

core_checks() {
  "${CORE[@]}" timeout 400 python3 "$REPO/tests/cuda_core/check_core.py" --hopper --bench \
    "${CONFIG_ARGS[@]}" > "$PROFILE/core.txt" 2>&1
  log "core checks and bench: rc=$? $(grep 'checks done' "$PROFILE/core.txt")"
}

# compute-sanitizer memcheck and racecheck over core_smoke (forward and backward ops, every
# dtype, small shapes).
core_sanitize() {
  local smoke="$REPO/.devbuild/core_smoke"
  { timeout 240 compute-sanitizer --tool memcheck "$smoke"
    timeout 240 compute-sanitizer --tool racecheck --racecheck-report hazard "$smoke"; } \
    > "$PROFILE/sanitizers.txt" 2>&1
  log "sanitizers: rc=$? $(grep -E 'smoke failures|SUMMARY' "$PROFILE/sanitizers.txt" | tr '\n' ' ')"
}

stage_profile() {
  mkdir -p "$PROFILE"
  sanitize_then_profile() { core_sanitize; core_profile; }
  on_both_gpus sanitize_then_profile core_checks
}

# ncu's full section set, with per-instruction SASS, of one launch of each kernel that PROBE
# names (';'-separated regexes over demangled names, where template arguments read `(int)128`;
# default: the fused TF32 backward input and the sm_90a TF32 backward weight) during
# check_core.py --profile (CORE_CONFIGS: its first shape is the one probed).
core_probe() {
  local regexes regex i=0
  IFS=';' read -ra regexes <<< "${PROBE:-InputKernel<float, .*0>;WeightKernel<float, \(int\)128, \(int\)128, \(int\)1>}"
  for regex in "${regexes[@]}"; do
    i=$((i + 1))
    "${CORE[@]}" timeout 200 ncu --clock-control none --kernel-name-base demangled \
      --kernel-name "regex:$regex" --launch-count 1 --set full --import-source no \
      -o "$PROFILE/probe$i" python3 "$REPO/tests/cuda_core/check_core.py" --profile \
      "${CONFIG_ARGS[@]}" > "$PROFILE/probe$i.run.txt" 2>&1
    ncu -i "$PROFILE/probe$i.ncu-rep" --page details > "$PROFILE/probe$i.details.txt" 2>&1
    ncu -i "$PROFILE/probe$i.ncu-rep" --page source --csv --print-source sass \
      > "$PROFILE/probe$i.sass.csv" 2>&1
    log "probe $i ($regex): $(grep -m1 -E 'Duration' "$PROFILE/probe$i.details.txt")"
  done
}

stage_sanitize() {
  mkdir -p "$PROFILE"
  core_sanitize
}

stage_ncu() {
  mkdir -p "$PROFILE"
  core_profile
}

stage_core() {
  mkdir -p "$PROFILE"
  core_checks
}

# Builds of the CUDA core side by side: .devbuild/variants.tar.xz holds variants/<name>.so (see
# docs/DEVELOPING.md). Each build's checks and timings in turn (check_core.py's COMPARE_ARGS,
# default --bench; --hopper --bench adds the sm_90a checks), then its timings again in the
# reverse order (a drift of the clocks cancels in the medians), then one table per timing.
# CORE_CONFIGS: the shapes both passes time.
stage_compare() {
  # The builds outside $WORK, which each stage packs into $OUT.
  local dir="$WORK/compare" builds=/root/variants names=() runs=() name i
  mkdir -p "$dir" "$builds"
  tar xJf "$REPO/.devbuild/variants.tar.xz" -C "$builds" || return 1
  for name in "$builds"/variants/*.so; do names+=("$(basename "$name" .so)"); done
  run_variant() {  # name, pass, check_core's arguments
    env -u PYTHONPATH -u LD_LIBRARY_PATH DCN_CORE_LIB="$builds/variants/$1.so" timeout 200 \
      python3 "$REPO/tests/cuda_core/check_core.py" "${@:3}" > "$dir/$1-$2.txt" 2>&1
    log "compare $1 ($2): rc=$? $(grep 'checks done' "$dir/$1-$2.txt")"
    runs+=("$1=$dir/$1-$2.txt")
  }
  local first_pass
  read -ra first_pass <<< "${COMPARE_ARGS:---bench}"
  for name in "${names[@]}"; do run_variant "$name" 1 "${first_pass[@]}" "${CONFIG_ARGS[@]}"; done
  for ((i = ${#names[@]} - 1; i >= 0; i--)); do
    run_variant "${names[i]}" 2 --bench-only "${CONFIG_ARGS[@]}"
  done
  python3 "$REPO/tests/cuda_core/compare_bench.py" "${runs[@]}" > "$dir/compare.md"
  log "compare: table in compare/compare.md"
}

# The kernels that K calls of the op launch through TensorFlow, with their times (ncu over
# scripts/gpu/op_kernels.py, GPU 0): what runs per call beside the core's kernels. OP_KERNELS:
# config:dtype[:impl][:backward] cases, impl as op_kernels.py --impl (needs `install` in the same
# lease).
stage_op_kernels() {
  local r="$WORK/op_kernels" case cfg dtype extras extra flags
  mkdir -p "$r"
  cd /tmp || return 1
  for case in ${OP_KERNELS:-4x32x32x512:fp16 8x64x64x128:tf32 8x64x64x128:tf32:backward}; do
    IFS=: read -r cfg dtype extras <<< "$case"
    flags=()
    for extra in ${extras//:/ }; do
      if [[ $extra == backward ]]; then flags+=(--backward); else flags+=(--impl "$extra"); fi
    done
    CUDA_VISIBLE_DEVICES=0 timeout 200 ncu --profile-from-start off --clock-control none \
      --print-summary per-kernel --metrics gpu__time_duration.sum \
      python3 "$REPO/scripts/gpu/op_kernels.py" "$cfg" "$dtype" "${flags[@]}" \
      > "$r/${case//:/-}.txt" 2>&1
    log "op kernels $case: rc=$? $(grep -c 'gpu__time_duration' "$r/${case//:/-}.txt") kernel rows"
  done
}

# The allocator's peak growth of each op alone and of the forward+backward, beyond what they
# return (scripts/gpu/op_memory.py, GPU 0): where the op benchmark's workspace figure comes from,
# with TensorFlow's default allocator (BFC, whose peak counts a free chunk handed out whole) and
# with cudaMallocAsync's (whose peak counts the bytes asked for).
# OP_MEMORY: config:dtype cases (needs `install` in the same lease).
stage_op_memory() {
  local r="$WORK/op_memory" allocator
  mkdir -p "$r"
  for allocator in bfc cuda_malloc_async; do
    (cd /tmp && TF_GPU_ALLOCATOR=${allocator/bfc/} CUDA_VISIBLE_DEVICES=0 timeout 300 python3 \
      "$REPO/scripts/gpu/op_memory.py" ${OP_MEMORY:-8x64x64x128:tf32 8x64x64x128:fp16 \
      8x64x64x128:bf16 8x32x32x256:tf32 8x32x32x256:fp32 4x32x32x512:fp16 4x32x32x512:fp32}) \
      > "$r/op_memory-$allocator.txt" 2>&1
    log "op memory ($allocator): rc=$?"
    grep '|' "$r/op_memory-$allocator.txt"
  done
}

stage_precision() {
  local r="$WORK/precision"
  mkdir -p "$r"
  (cd /tmp && CUDA_VISIBLE_DEVICES=0 timeout 400 python3 "$REPO/scripts/gpu/layer_precision.py" \
    ${PRECISION_CONFIGS:-16x64x64x64 16x32x32x64 16x16x16x64} \
    --dtypes "${PRECISION_DTYPES:-fp16,bf16,tf32,fp32}") > "$r/precision.txt" 2>&1
  local rc=$?
  log "precision: rc=$rc"
  grep '^|' "$r/precision.txt"
  return $rc
}

stage_probe() {
  mkdir -p "$PROFILE"
  (export CUDA_VISIBLE_DEVICES=0; core_probe)
}

# GPU 0 the op/layer benchmark; GPU 1 the core's checks and timings.
stage_op_core() {
  mkdir -p "$PROFILE"
  on_both_gpus op_bench core_checks
}

# GPU 0 the whole test suite with the default kernels; GPU 1 the core's checks and timings, then
# its profile.
core_lane() { mkdir -p "$PROFILE"; core_checks; core_profile; }
stage_check() {
  check_cubins
  on_both_gpus tests_default core_lane
}

[[ -f /root/tfenv.sh ]] && . /root/tfenv.sh
# The core carried compressed (scripts/gpu/build_variants.sh): unpacked where the stages look.
if [[ -f $REPO/.devbuild/core.tar.xz && ! -f $REPO/.devbuild/libdcn_core.so ]]; then
  tar xJf "$REPO/.devbuild/core.tar.xz" -C "$REPO/.devbuild"
fi
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
