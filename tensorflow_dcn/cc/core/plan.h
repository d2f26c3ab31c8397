// How a problem runs: the implementations the core has, the plan that names one and its
// workspace, the kernel choice a user or test can force, and a count of what actually ran.
//
// A binding (TensorFlow OpKernel, XLA FFI handler, test harness) checks a problem
// (problem.h: CheckProblem), asks the device's core for a plan (cpu/cpu_core.h,
// cuda/cuda_core.h), provides `plan.workspace_bytes` of scratch memory and runs the plan.
#ifndef TENSORFLOW_DCN_CC_CORE_PLAN_H_
#define TENSORFLOW_DCN_CC_CORE_PLAN_H_

#include <cstddef>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "tensorflow_dcn/cc/core/problem.h"

namespace tensorflow_dcn {

enum class Implementation {
  kCpuIm2col,       // CPU: deformable im2col, GEMM, col2im (the simple path, kept as oracle)
  kCpuTiled,        // CPU: samples gathered per pixel tile into cache, register-blocked GEMM
  kCudaIm2col,      // GPU: the same with column buffers; every GPU, every dtype
  kCudaFusedSm80,   // GPU: implicit GEMM on mma.sync tensor cores, no column buffers (sm_80+)
  kCudaWgmmaSm90a,  // GPU: Hopper kernels on wgmma + TMA (sm_90a), all three ops
};
inline constexpr int kNumImplementations = 5;

const char *ImplementationName(Implementation implementation);  // "cpu_im2col", ...

struct Plan {
  Implementation implementation;
  size_t workspace_bytes = 0;  // scratch the run needs, 256-byte aligned at its start
};

// The operands of a run, by op: device pointers (host pointers on the CPU) of the DType the plan
// was made for. Absent operands (mask, bias) and unwanted results (grad_mask without a mask,
// grad_bias) are null.
struct ForwardArgs {
  const void *input, *offset, *mask, *weight, *bias;
  void *output;
};
struct BackwardInputArgs {
  const void *grad_output, *input, *offset, *mask, *weight;
  void *grad_input, *grad_offset, *grad_mask;
};
struct BackwardWeightArgs {
  const void *grad_output, *input, *offset, *mask;
  void *grad_weight, *grad_bias;
};

// Calls fn(T()) with the element type of `dtype`: the device's own types for half and bfloat16
// (Eigen's on the host, CUDA's on the GPU), float, double.
template <typename Half, typename BFloat16, typename Fn>
auto WithElementType(DType dtype, Fn &&fn) {
  switch (dtype) {
    case DType::kHalf:
      return fn(Half());
    case DType::kBFloat16:
      return fn(BFloat16());
    case DType::kFloat:
      return fn(float());
    case DType::kDouble:
      break;
  }
  return fn(double());
}

// A run's operand as the element type.
template <typename T>
const T *Typed(const void *p) {
  return static_cast<const T *>(p);
}
template <typename T>
T *Typed(void *p) {
  return static_cast<T *>(p);
}

// Which kernels the planner may choose, from the environment variable TFDCN_KERNELS:
//   auto (default)  the fastest implementation that supports the problem on this device
//   im2col          only the im2col implementations: the simple path the others are tested
//                   against
//   portable        as auto, but never the architecture-specific (sm_90a) kernels
enum class KernelChoice { kAuto, kIm2col, kPortable };
// Reads TFDCN_KERNELS into `choice`; returns "" or a message saying what the value may be.
std::string ReadKernelChoice(KernelChoice *choice);

// Every run of a plan is counted per (op, implementation), so that tests and the benchmark can
// see what ran, also inside XLA-compiled programs.
void RecordRun(Op op, Implementation implementation);
// ("DCNv2Forward/cuda_fused_sm80", count) for every pair that ran since the last reset.
std::vector<std::pair<std::string, int64_t>> RunCounts();
void ResetRunCounts();

}  // namespace tensorflow_dcn

#endif  // TENSORFLOW_DCN_CC_CORE_PLAN_H_
