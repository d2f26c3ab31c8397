// C entry points to the CUDA core (and its GEMM) for tests/cuda_core/check_core.py, which drives
// them through ctypes with PyTorch tensors on a GPU machine that has no TensorFlow, and for
// core_smoke.cu.cc (compute-sanitizer runs without PyTorch).
//
// Every run plans as a binding does: cuda::QueryDevice, cuda::MakePlan, then the plan's op.
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include "tensorflow_dcn/cc/core/cuda/cuda_core.h"
#include "tensorflow_dcn/cc/core/cuda/device_util.cuh"
#include "tensorflow_dcn/cc/core/cuda/gemm.cuh"
#include "tensorflow_dcn/cc/core/cuda/wgmma_sm90a.cuh"
#include "tensorflow_dcn/cc/core/plan.h"

namespace tdc = tensorflow_dcn::cuda;
using tensorflow_dcn::DcnShape;
using tensorflow_dcn::DType;
using tensorflow_dcn::KernelChoice;
using tensorflow_dcn::Op;
using tensorflow_dcn::Plan;

namespace {

// dims: batch, in_h, in_w, in_c, out_h, out_w, out_c, kh, kw, sh, sw, ph, pw, dh, dw, groups,
// deformable_groups, has_mask, has_bias
DcnShape ToShape(const long long* d) {
  DcnShape s;
  s.batch = d[0];
  s.in_h = d[1];
  s.in_w = d[2];
  s.in_channels = d[3];
  s.out_h = d[4];
  s.out_w = d[5];
  s.out_channels = d[6];
  s.kernel_h = d[7];
  s.kernel_w = d[8];
  s.stride_h = d[9];
  s.stride_w = d[10];
  s.pad_h = d[11];
  s.pad_w = d[12];
  s.dilation_h = d[13];
  s.dilation_w = d[14];
  s.groups = d[15];
  s.deformable_groups = d[16];
  s.has_mask = d[17];
  s.has_bias = d[18];
  return s;
}

// flags: bit 0 allow TF32, bit 1 deterministic, bits 2-3 the kernel choice (0 auto, 1 im2col,
// 2 portable).
tdc::Options ToOptions(int flags) {
  tdc::Options o;
  tdc::QueryDevice(&o);
  o.allow_tf32 = flags & 1;
  o.deterministic = flags & 2;
  const int choice = (flags >> 2) & 3;
  o.choice = choice == 1   ? KernelChoice::kIm2col
             : choice == 2 ? KernelChoice::kPortable
                           : KernelChoice::kAuto;
  return o;
}

DType ToDType(int dtype) {
  switch (dtype) {
    case 0:
      return DType::kHalf;
    case 1:
      return DType::kBFloat16;
    case 2:
      return DType::kFloat;
    default:
      return DType::kDouble;
  }
}

Op ToOp(int op) {
  return op == 0 ? Op::kForward : op == 1 ? Op::kBackwardInput : Op::kBackwardWeight;
}

template <typename T>
int Gemm(int variant, int mode, long long m, long long n, long long k, void* a, long long lda,
         void* b, long long ldb, void* c, long long ldc, cudaStream_t st) {
  using Acc = tensorflow_dcn::AccumulatorOf<T>;
  const auto math = static_cast<tdc::MathMode>(mode);
  auto fill = [&](auto& g) {
    g.m = m;
    g.n = n;
    g.k = k;
    g.a = static_cast<const T*>(a);
    g.lda = lda;
    g.b = static_cast<const T*>(b);
    g.ldb = ldb;
    g.ldc = ldc;
  };
  if (variant == 0) {
    tdc::GemmArgs<T, T> g;
    fill(g);
    g.c = static_cast<T*>(c);
    return tdc::LaunchGemm<T, T, tdc::Layout::kRowMajor, tdc::Layout::kRowMajor>(g, math, st);
  }
  tdc::GemmArgs<T, Acc> g;
  fill(g);
  g.c = static_cast<Acc*>(c);
  if (variant == 1)
    return tdc::LaunchGemm<T, Acc, tdc::Layout::kRowMajor, tdc::Layout::kColMajor>(g, math, st);
  return tdc::LaunchGemm<T, Acc, tdc::Layout::kColMajor, tdc::Layout::kRowMajor>(g, math, st);
}

}  // namespace

#define EXPORT __attribute__((visibility("default")))

extern "C" {

// dtype: 0 half, 1 bfloat16, 2 float, 3 double. op: 0 forward, 1 backward input, 2 backward weight.
EXPORT size_t dcn_workspace_bytes(int dtype, int op, const long long* dims, int flags) {
  return tdc::MakePlan(ToOp(op), ToDType(dtype), ToShape(dims), ToOptions(flags)).workspace_bytes;
}

// The name of the implementation the planner picks ("cuda_wgmma_sm90a", ...).
EXPORT const char* dcn_implementation(int dtype, int op, const long long* dims, int flags) {
  const Plan plan = tdc::MakePlan(ToOp(op), ToDType(dtype), ToShape(dims), ToOptions(flags));
  return tensorflow_dcn::ImplementationName(plan.implementation);
}

// Whether the sm_90a module loads on the current device (and is not switched off by
// TFDCN_SIMULATE_SM90A_UNAVAILABLE=1).
EXPORT int dcn_sm90a_available() { return tdc::wgmma_sm90a::Available(); }

// ptrs by op: forward input, offset, mask, weight, bias, output; backward input grad_output,
// input, offset, mask, weight, grad_input, grad_offset, grad_mask; backward weight grad_output,
// input, offset, mask, grad_weight, grad_bias. `workspace` holds dcn_workspace_bytes.
EXPORT int dcn_run(int dtype, int op, const long long* dims, void** p, void* workspace, int flags,
                   void* stream) {
  const DcnShape s = ToShape(dims);
  const tdc::Options o = ToOptions(flags);
  const Plan plan = tdc::MakePlan(ToOp(op), ToDType(dtype), s, o);
  auto st = static_cast<cudaStream_t>(stream);
  switch (op) {
    case 0:
      return tdc::Run(plan, ToDType(dtype), s,
                      tensorflow_dcn::ForwardArgs{p[0], p[1], p[2], p[3], p[4], p[5]}, workspace, o,
                      st);
    case 1:
      return tdc::Run(
          plan, ToDType(dtype), s,
          tensorflow_dcn::BackwardInputArgs{p[0], p[1], p[2], p[3], p[4], p[5], p[6], p[7]},
          workspace, o, st);
    default:
      return tdc::Run(plan, ToDType(dtype), s,
                      tensorflow_dcn::BackwardWeightArgs{p[0], p[1], p[2], p[3], p[4], p[5]},
                      workspace, o, st);
  }
}

// variant: 0 A row x B row -> T, 1 A row x B col -> Acc, 2 A col x B row -> Acc.
// mode: tdc::MathMode (0 tensor core, 1 3xTF32, 2 SIMT).
EXPORT int dcn_gemm(int dtype, int variant, int mode, long long m, long long n, long long k,
                    void* a, long long lda, void* b, long long ldb, void* c, long long ldc,
                    void* stream) {
  auto st = static_cast<cudaStream_t>(stream);
  switch (dtype) {
    case 0:
      return Gemm<__half>(variant, mode, m, n, k, a, lda, b, ldb, c, ldc, st);
    case 1:
      return Gemm<__nv_bfloat16>(variant, mode, m, n, k, a, lda, b, ldb, c, ldc, st);
    case 2:
      return Gemm<float>(variant, mode, m, n, k, a, lda, b, ldb, c, ldc, st);
    default:
      return Gemm<double>(variant, mode, m, n, k, a, lda, b, ldb, c, ldc, st);
  }
}

EXPORT const char* dcn_error_string(int err) {
  return cudaGetErrorString(static_cast<cudaError_t>(err));
}

}  // extern "C"
