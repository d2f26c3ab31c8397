#!/usr/bin/env bash
# Writes .tf_configure.bazelrc from the TensorFlow that `python3` imports (no prompts).
#   ./configure.sh          CUDA kernels too when nvcc is found (CUDA_TOOLKIT_PATH, default /usr/local/cuda)
#   ./configure.sh --cpu    CPU kernels only
# The CUDA build has two toolchains (tensorflow_dcn/cuda_targets.bzl): nvcc 13 from
# CUDA_TOOLKIT_PATH (sm_90a kernels, fatbinary) and clang-16 (CUDA_CLANG_PATH, default clang++-16)
# with the CUDA 12.9 directory CUDA12_PATH (default ~/.cache/tensorflow_dcn/cuda-12.9) for the
# portable kernels; scripts/setup_env.sh (make setup) installs both.
# PYTHON_BIN_PATH overrides python3.
set -euo pipefail
cd "$(dirname "$0")"
PY="${PYTHON_BIN_PATH:-python3}"
CUDA="${CUDA_TOOLKIT_PATH:-/usr/local/cuda}"
CUDA12="${CUDA12_PATH:-$HOME/.cache/tensorflow_dcn/cuda-12.9}"
CLANG="${CUDA_CLANG_PATH:-clang++-16}"
NEED_CUDA=1
[[ "${1:-}" == "--cpu" ]] && NEED_CUDA=0
if [[ $NEED_CUDA == 1 && ! -x "$CUDA/bin/nvcc" ]]; then
  echo "configure.sh: no nvcc at $CUDA/bin/nvcc; building the CPU kernels only" >&2
  NEED_CUDA=0
fi
if [[ $NEED_CUDA == 1 ]]; then
  CLANG_FOUND=$(command -v "$CLANG" || true)
  if [[ -z "$CLANG_FOUND" || ! -x "$CUDA12/bin/ptxas" ]]; then
    echo "configure.sh: the CUDA build needs $CLANG and the CUDA 12.9 directory $CUDA12;" \
      "scripts/setup_env.sh (make setup) installs both. Or: ./configure.sh --cpu" >&2
    exit 1
  fi
  CUDA12=$(cd "$CUDA12" && pwd)
  CLANG="$CLANG_FOUND"
fi
read -r HDR LIBDIR LIBNAME DEFINES < <(TF_CPP_MIN_LOG_LEVEL=3 "$PY" -c '
import tensorflow as tf
c, l = tf.sysconfig.get_compile_flags(), tf.sysconfig.get_link_flags()
print([f[2:] for f in c if f.startswith("-I")][0], [f[2:] for f in l if f.startswith("-L")][0],
      [f[3:] for f in l if f.startswith("-l:")][0], ",".join(f[2:] for f in c if f.startswith("-D")))
' 2>/dev/null) || { echo "configure.sh: '$PY' cannot import tensorflow" >&2; exit 1; }
{
  echo "build --action_env TF_HEADER_DIR=$HDR"
  echo "build --action_env TF_SHARED_LIBRARY_DIR=$LIBDIR"
  echo "build --action_env TF_SHARED_LIBRARY_NAME=$LIBNAME"
  echo "build --action_env TF_DEFINES=$DEFINES"
  echo "build --action_env TF_NEED_CUDA=$NEED_CUDA"
  echo "build --action_env CUDA_TOOLKIT_PATH=$CUDA"
  if [[ $NEED_CUDA == 1 ]]; then
    echo "build --action_env CUDA12_PATH=$CUDA12"
    echo "build --action_env CUDA_CLANG_PATH=$CLANG"
  fi
} > .tf_configure.bazelrc
cat .tf_configure.bazelrc
