#!/usr/bin/env bash
# Builds the CUDA core with its C entry point into .devbuild/libdcn_core.so for check_core.py (no
# TensorFlow involved): //tests/cuda_core:libdcn_core.so, the op library's CUDA objects (same
# compilers, flags and GPU targets, tensorflow_dcn/cuda_targets.bzl) plus core_capi.cu.cc.
set -euo pipefail
cd "$(dirname "$0")/../.."
bazel build //tests/cuda_core:libdcn_core.so
mkdir -p .devbuild
cp -f bazel-bin/tests/cuda_core/libdcn_core.so .devbuild/libdcn_core.so
chmod u+w .devbuild/libdcn_core.so
echo ".devbuild/libdcn_core.so"
