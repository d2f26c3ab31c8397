#!/usr/bin/env bash
# Builds the CUDA core with its C entry point into .devbuild/libdcn_core.so for check_core.py
# (no TensorFlow involved). ARCHS overrides the targets (default sm_90).
set -euo pipefail
cd "$(dirname "$0")/../.."
NVCC=${NVCC:-/usr/local/cuda/bin/nvcc}
ARCHS=${ARCHS:--gencode=arch=compute_90,code=sm_90}
mkdir -p .devbuild
FLAGS="-x cu -std=c++17 -O3 -I. --expt-relaxed-constexpr -Xcompiler -fPIC -Xcompiler -fvisibility=hidden $ARCHS"
pids=()
for src in tensorflow_dcn/cc/kernels/cuda/*.cu.cc tests/cuda_core/core_capi.cu.cc; do
  obj=.devbuild/$(basename "$src" .cu.cc).o
  $NVCC $FLAGS -c "$src" -o "$obj" & pids+=($!)
done
for p in "${pids[@]}"; do wait "$p"; done
# The C entry points must stay visible.
$NVCC -shared -o .devbuild/libdcn_core.so .devbuild/*.o $ARCHS
echo ".devbuild/libdcn_core.so"
