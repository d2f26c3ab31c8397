// A C entry point to the CUDA core (and its GEMM) for tests/cuda_core/test_core.py, which drives
// it through ctypes with PyTorch tensors on a GPU machine that has no TensorFlow.
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include "tensorflow_dcn/cc/kernels/cuda/dcn_v2_cuda.h"
#include "tensorflow_dcn/cc/kernels/cuda/device_util.cuh"
#include "tensorflow_dcn/cc/kernels/cuda/gemm.cuh"

namespace tdc = tensorflow_dcn::cuda;
using tensorflow_dcn::DcnShape;

namespace {

// dims: batch, in_h, in_w, in_c, out_h, out_w, out_c, kh, kw, sh, sw, ph, pw, dh, dw, groups,
// deformable_groups, has_mask, has_bias
DcnShape ToShape(const long long* d) {
  DcnShape s;
  s.batch = d[0]; s.in_h = d[1]; s.in_w = d[2]; s.in_channels = d[3];
  s.out_h = d[4]; s.out_w = d[5]; s.out_channels = d[6];
  s.kernel_h = d[7]; s.kernel_w = d[8]; s.stride_h = d[9]; s.stride_w = d[10];
  s.pad_h = d[11]; s.pad_w = d[12]; s.dilation_h = d[13]; s.dilation_w = d[14];
  s.groups = d[15]; s.deformable_groups = d[16]; s.has_mask = d[17]; s.has_bias = d[18];
  return s;
}

// flags: 1 allow TF32, 2 deterministic, 4 force the im2col kernels.
tdc::Options ToOptions(int flags) {
  tdc::Options o;
  tdc::QueryDevice(&o);
  o.allow_tf32 = flags & 1;
  o.deterministic = flags & 2;
  o.force_im2col = flags & 4;
  return o;
}

template <typename T>
int Run(int op, const DcnShape& s, void** p, void* ws, const tdc::Options& o, cudaStream_t st) {
  auto c = [](void* x) { return static_cast<const T*>(x); };
  auto m = [](void* x) { return static_cast<T*>(x); };
  switch (op) {
    case 0:  // input, offset, mask, weight, bias, output
      return tdc::Forward<T>(s, c(p[0]), c(p[1]), c(p[2]), c(p[3]), c(p[4]), m(p[5]), ws, o, st);
    case 1:  // grad_output, input, offset, mask, weight, grad_input, grad_offset, grad_mask
      return tdc::BackwardInput<T>(s, c(p[0]), c(p[1]), c(p[2]), c(p[3]), c(p[4]), m(p[5]),
                                   m(p[6]), m(p[7]), ws, o, st);
    default:  // grad_output, input, offset, mask, grad_weight, grad_bias
      return tdc::BackwardWeight<T>(s, c(p[0]), c(p[1]), c(p[2]), c(p[3]), m(p[4]), m(p[5]), ws,
                                    o, st);
  }
}

template <typename T>
size_t Bytes(int op, const DcnShape& s, const tdc::Options& o) {
  if (op == 0) return tdc::ForwardWorkspaceBytes<T>(s, o);
  if (op == 1) return tdc::BackwardInputWorkspaceBytes<T>(s, o);
  return tdc::BackwardWeightWorkspaceBytes<T>(s, o);
}

template <typename T>
int Gemm(int variant, int mode, long long m, long long n, long long k, void* a, long long lda,
         void* b, long long ldb, void* c, long long ldc, cudaStream_t st) {
  using Acc = tdc::AccumulatorOf<T>;
  const auto math = static_cast<tdc::MathMode>(mode);
  auto fill = [&](auto& g) {
    g.m = m; g.n = n; g.k = k;
    g.a = static_cast<const T*>(a); g.lda = lda;
    g.b = static_cast<const T*>(b); g.ldb = ldb;
    g.ldc = ldc;
  };
  if (variant == 0) {
    tdc::GemmArgs<T, T> g; fill(g); g.c = static_cast<T*>(c);
    return tdc::LaunchGemm<T, T, tdc::Layout::kRowMajor, tdc::Layout::kRowMajor>(g, math, st);
  }
  tdc::GemmArgs<T, Acc> g; fill(g); g.c = static_cast<Acc*>(c);
  if (variant == 1)
    return tdc::LaunchGemm<T, Acc, tdc::Layout::kRowMajor, tdc::Layout::kColMajor>(g, math, st);
  return tdc::LaunchGemm<T, Acc, tdc::Layout::kColMajor, tdc::Layout::kRowMajor>(g, math, st);
}

}  // namespace

#define EXPORT __attribute__((visibility("default")))

extern "C" {

// dtype: 0 half, 1 bfloat16, 2 float, 3 double. op: 0 forward, 1 backward input, 2 backward weight.
EXPORT size_t dcn_workspace_bytes(int dtype, int op, const long long* dims, int flags) {
  const DcnShape s = ToShape(dims);
  const tdc::Options o = ToOptions(flags);
  switch (dtype) {
    case 0: return Bytes<__half>(op, s, o);
    case 1: return Bytes<__nv_bfloat16>(op, s, o);
    case 2: return Bytes<float>(op, s, o);
    default: return Bytes<double>(op, s, o);
  }
}

EXPORT int dcn_run(int dtype, int op, const long long* dims, void** ptrs, void* workspace,
                   int flags, void* stream) {
  const DcnShape s = ToShape(dims);
  const tdc::Options o = ToOptions(flags);
  auto st = static_cast<cudaStream_t>(stream);
  switch (dtype) {
    case 0: return Run<__half>(op, s, ptrs, workspace, o, st);
    case 1: return Run<__nv_bfloat16>(op, s, ptrs, workspace, o, st);
    case 2: return Run<float>(op, s, ptrs, workspace, o, st);
    default: return Run<double>(op, s, ptrs, workspace, o, st);
  }
}

// variant: 0 A row x B row -> T, 1 A row x B col -> Acc, 2 A col x B row -> Acc.
// mode: tdc::MathMode (0 tensor core, 1 3xTF32, 2 SIMT).
EXPORT int dcn_gemm(int dtype, int variant, int mode, long long m, long long n, long long k, void* a,
             long long lda, void* b, long long ldb, void* c, long long ldc, void* stream) {
  auto st = static_cast<cudaStream_t>(stream);
  switch (dtype) {
    case 0: return Gemm<__half>(variant, mode, m, n, k, a, lda, b, ldb, c, ldc, st);
    case 1: return Gemm<__nv_bfloat16>(variant, mode, m, n, k, a, lda, b, ldb, c, ldc, st);
    case 2: return Gemm<float>(variant, mode, m, n, k, a, lda, b, ldb, c, ldc, st);
    default: return Gemm<double>(variant, mode, m, n, k, a, lda, b, ldb, c, ldc, st);
  }
}

EXPORT const char* dcn_error_string(int err) { return cudaGetErrorString(static_cast<cudaError_t>(err)); }

}  // extern "C"
