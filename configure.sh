#!/usr/bin/env bash
# Writes .tf_configure.bazelrc from the TensorFlow that `python3` imports (no prompts).
#   ./configure.sh          CUDA kernels too when nvcc is found (CUDA_TOOLKIT_PATH, default /usr/local/cuda)
#   ./configure.sh --cpu    CPU kernels only
# PYTHON_BIN_PATH overrides python3.
set -euo pipefail
cd "$(dirname "$0")"
PY="${PYTHON_BIN_PATH:-python3}"
CUDA="${CUDA_TOOLKIT_PATH:-/usr/local/cuda}"
NEED_CUDA=1
[[ "${1:-}" == "--cpu" ]] && NEED_CUDA=0
if [[ $NEED_CUDA == 1 && ! -x "$CUDA/bin/nvcc" ]]; then
  echo "configure.sh: no nvcc at $CUDA/bin/nvcc; building the CPU kernels only" >&2
  NEED_CUDA=0
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
} > .tf_configure.bazelrc
cat .tf_configure.bazelrc
