#include "tensorflow_dcn/cc/core/cpu/cpu_core.h"

#include <type_traits>

#include "Eigen/Core"
#include "tensorflow_dcn/cc/core/cpu/cpu_im2col.h"
#include "tensorflow_dcn/cc/core/cpu/cpu_tiled.h"

namespace tensorflow_dcn {
namespace cpu {

// The tiled kernels for float, half and bfloat16 unless only im2col is allowed; im2col for double.
Plan MakePlan(Op op, DType dtype, const DcnShape& s, const Options& o) {
  Plan plan;
  const bool use_tiled = o.choice == KernelChoice::kAuto && tiled::Supports(dtype);
  plan.implementation = use_tiled ? Implementation::kCpuTiled : Implementation::kCpuIm2col;
  plan.workspace_bytes = WithElementType<Eigen::half, Eigen::bfloat16>(dtype, [&](auto t) {
    using T = decltype(t);
    if constexpr (std::is_same_v<T, double>) {
      return im2col::WorkspaceBytes<T>(op, s);
    } else {
      return use_tiled ? tiled::WorkspaceBytes<T>(op, s) : im2col::WorkspaceBytes<T>(op, s);
    }
  });
  return plan;
}

void Run(const Plan& plan, DType dtype, const DcnShape& s, const ForwardArgs& a, void* workspace,
         const ParallelFor& parallel_for) {
  RecordRun(Op::kForward, plan.implementation);
  WithElementType<Eigen::half, Eigen::bfloat16>(dtype, [&](auto t) {
    using T = decltype(t);
    if constexpr (!std::is_same_v<T, double>) {
      if (plan.implementation == Implementation::kCpuTiled) {
        return tiled::Forward(s, Typed<T>(a.input), Typed<T>(a.offset), Typed<T>(a.mask),
                              Typed<T>(a.weight), Typed<T>(a.bias), Typed<T>(a.output), workspace,
                              parallel_for);
      }
    }
    im2col::Forward(s, Typed<T>(a.input), Typed<T>(a.offset), Typed<T>(a.mask), Typed<T>(a.weight),
                    Typed<T>(a.bias), Typed<T>(a.output), parallel_for);
  });
}

void Run(const Plan& plan, DType dtype, const DcnShape& s, const BackwardInputArgs& a,
         void* workspace, const ParallelFor& parallel_for) {
  RecordRun(Op::kBackwardInput, plan.implementation);
  WithElementType<Eigen::half, Eigen::bfloat16>(dtype, [&](auto t) {
    using T = decltype(t);
    if constexpr (!std::is_same_v<T, double>) {
      if (plan.implementation == Implementation::kCpuTiled) {
        return tiled::BackwardInput(s, Typed<T>(a.grad_output), Typed<T>(a.input),
                                    Typed<T>(a.offset), Typed<T>(a.mask), Typed<T>(a.weight),
                                    Typed<T>(a.grad_input), Typed<T>(a.grad_offset),
                                    Typed<T>(a.grad_mask), workspace, parallel_for);
      }
    }
    im2col::BackwardInput(s, Typed<T>(a.grad_output), Typed<T>(a.input), Typed<T>(a.offset),
                          Typed<T>(a.mask), Typed<T>(a.weight), Typed<T>(a.grad_input),
                          Typed<T>(a.grad_offset), Typed<T>(a.grad_mask), workspace, parallel_for);
  });
}

void Run(const Plan& plan, DType dtype, const DcnShape& s, const BackwardWeightArgs& a,
         void* workspace, const ParallelFor& parallel_for) {
  RecordRun(Op::kBackwardWeight, plan.implementation);
  WithElementType<Eigen::half, Eigen::bfloat16>(dtype, [&](auto t) {
    using T = decltype(t);
    if constexpr (!std::is_same_v<T, double>) {
      if (plan.implementation == Implementation::kCpuTiled) {
        return tiled::BackwardWeight(s, Typed<T>(a.grad_output), Typed<T>(a.input),
                                     Typed<T>(a.offset), Typed<T>(a.mask), Typed<T>(a.grad_weight),
                                     Typed<T>(a.grad_bias), workspace, parallel_for);
      }
    }
    im2col::BackwardWeight(s, Typed<T>(a.grad_output), Typed<T>(a.input), Typed<T>(a.offset),
                           Typed<T>(a.mask), Typed<T>(a.grad_weight), Typed<T>(a.grad_bias),
                           workspace, parallel_for);
  });
}

}  // namespace cpu
}  // namespace tensorflow_dcn
