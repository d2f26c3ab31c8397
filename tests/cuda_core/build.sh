#!/usr/bin/env bash
# Builds the CUDA core with its C entry point into .devbuild/libdcn_core.so for check_core.py (no
# TensorFlow involved): //tests/cuda_core:libdcn_core.so, the op library's CUDA objects (same
# compilers, flags and GPU targets, tensorflow_dcn/cuda_targets.bzl) plus core_capi.cu.cc; and
# .devbuild/core_smoke, a PyTorch-free driver for compute-sanitizer and ncu.
set -euo pipefail
cd "$(dirname "$0")/../.."
bazel build //tests/cuda_core:libdcn_core.so //tests/cuda_core:core_smoke
mkdir -p .devbuild
cp -f bazel-bin/tests/cuda_core/libdcn_core.so bazel-bin/tests/cuda_core/core_smoke .devbuild/
chmod u+w .devbuild/libdcn_core.so .devbuild/core_smoke
echo ".devbuild/libdcn_core.so .devbuild/core_smoke"
