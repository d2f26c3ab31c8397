#!/usr/bin/env bash
# Builds the CUDA core with its C entry points into .devbuild/libdcn_core.so for check_core.py,
# and .devbuild/core_smoke (a PyTorch-free driver for compute-sanitizer), without TensorFlow.
# ARCHS overrides the targets of the portable kernels (default sm_90); files ending in
# _sm90a.cu.cc are built for sm_90a alone, as tensorflow_dcn/BUILD does.
set -euo pipefail
cd "$(dirname "$0")/../.."
NVCC=${NVCC:-/usr/local/cuda/bin/nvcc}
ARCHS=${ARCHS:--gencode=arch=compute_90,code=sm_90}
SM90A_ARCHS="-gencode=arch=compute_90a,code=sm_90a"
JOBS=${JOBS:-2}
mkdir -p .devbuild
FLAGS="-std=c++17 -O3 -DNDEBUG -I. --expt-relaxed-constexpr -lineinfo -Xcompiler -fPIC -Xcompiler -fvisibility=hidden"
compile() {  # src
  local src=$1 obj=.devbuild/$(basename "$1" | sed 's/\.cu\.cc$//; s/\.cc$//').o archs=$ARCHS
  case "$src" in *_sm90a.cu.cc) archs=$SM90A_ARCHS ;; esac
  case "$src" in
    *.cu.cc) $NVCC -x cu $FLAGS $archs -c "$src" -o "$obj" ;;
    *) $NVCC $FLAGS -c "$src" -o "$obj" ;;
  esac
}
export -f compile
export NVCC ARCHS SM90A_ARCHS FLAGS
rm -f .devbuild/*.o
ls tensorflow_dcn/cc/core/*.cc tensorflow_dcn/cc/core/cuda/*.cu.cc tests/cuda_core/core_capi.cu.cc |
  xargs -P "$JOBS" -I{} bash -c 'compile {}'
# The C entry points must stay visible.
$NVCC -shared -o .devbuild/libdcn_core.so .devbuild/*.o $ARCHS $SM90A_ARCHS
$NVCC -x cu -std=c++17 -O2 -I. tests/cuda_core/core_smoke.cu.cc -o .devbuild/core_smoke \
  -L.devbuild -ldcn_core -Xlinker -rpath -Xlinker '$ORIGIN'
echo ".devbuild/libdcn_core.so .devbuild/core_smoke"
