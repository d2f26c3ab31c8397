#include "tensorflow_dcn/cc/core/cpu/cpu_core.h"

#include <type_traits>

#include "Eigen/Core"
#include "tensorflow_dcn/cc/core/cpu/cpu_im2col.h"
#include "tensorflow_dcn/cc/core/cpu/cpu_tiled.h"

namespace tensorflow_dcn {
namespace cpu {
namespace {

// Calls fn(T()) with the host type of `dtype`.
template <typename Fn>
auto WithHostType(DType dtype, Fn&& fn) {
  switch (dtype) {
    case DType::kHalf:
      return fn(Eigen::half());
    case DType::kBFloat16:
      return fn(Eigen::bfloat16());
    case DType::kFloat:
      return fn(float());
    case DType::kDouble:
      break;
  }
  return fn(double());
}

template <typename T>
const T* In(const void* p) {
  return static_cast<const T*>(p);
}
template <typename T>
T* Out(void* p) {
  return static_cast<T*>(p);
}

}  // namespace

// The tiled kernels for float, half and bfloat16 unless only im2col is allowed; im2col for double.
Plan MakePlan(Op op, DType dtype, const DcnShape& s, const Options& o) {
  Plan plan;
  const bool use_tiled = o.choice == KernelChoice::kAuto && tiled::Supports(dtype);
  plan.implementation = use_tiled ? Implementation::kCpuTiled : Implementation::kCpuIm2col;
  plan.workspace_bytes = WithHostType(dtype, [&](auto t) {
    using T = decltype(t);
    if constexpr (std::is_same_v<T, double>) {
      return im2col::WorkspaceBytes<T>(op, s);
    } else {
      return use_tiled ? tiled::WorkspaceBytes<T>(op, s) : im2col::WorkspaceBytes<T>(op, s);
    }
  });
  return plan;
}

void Forward(const Plan& plan, DType dtype, const DcnShape& s, const ForwardArgs& a,
             void* workspace, const ParallelFor& parallel_for) {
  RecordRun(Op::kForward, plan.implementation);
  WithHostType(dtype, [&](auto t) {
    using T = decltype(t);
    if constexpr (!std::is_same_v<T, double>) {
      if (plan.implementation == Implementation::kCpuTiled) {
        return tiled::Forward(s, In<T>(a.input), In<T>(a.offset), In<T>(a.mask), In<T>(a.weight),
                              In<T>(a.bias), Out<T>(a.output), workspace, parallel_for);
      }
    }
    im2col::Forward(s, In<T>(a.input), In<T>(a.offset), In<T>(a.mask), In<T>(a.weight),
                    In<T>(a.bias), Out<T>(a.output), parallel_for);
  });
}

void BackwardInput(const Plan& plan, DType dtype, const DcnShape& s, const BackwardInputArgs& a,
                   void* workspace, const ParallelFor& parallel_for) {
  RecordRun(Op::kBackwardInput, plan.implementation);
  WithHostType(dtype, [&](auto t) {
    using T = decltype(t);
    if constexpr (!std::is_same_v<T, double>) {
      if (plan.implementation == Implementation::kCpuTiled) {
        return tiled::BackwardInput(s, In<T>(a.grad_output), In<T>(a.input), In<T>(a.offset),
                                    In<T>(a.mask), In<T>(a.weight), Out<T>(a.grad_input),
                                    Out<T>(a.grad_offset), Out<T>(a.grad_mask), workspace,
                                    parallel_for);
      }
    }
    im2col::BackwardInput(s, In<T>(a.grad_output), In<T>(a.input), In<T>(a.offset), In<T>(a.mask),
                          In<T>(a.weight), Out<T>(a.grad_input), Out<T>(a.grad_offset),
                          Out<T>(a.grad_mask), workspace, parallel_for);
  });
}

void BackwardWeight(const Plan& plan, DType dtype, const DcnShape& s, const BackwardWeightArgs& a,
                    void* workspace, const ParallelFor& parallel_for) {
  RecordRun(Op::kBackwardWeight, plan.implementation);
  WithHostType(dtype, [&](auto t) {
    using T = decltype(t);
    if constexpr (!std::is_same_v<T, double>) {
      if (plan.implementation == Implementation::kCpuTiled) {
        return tiled::BackwardWeight(s, In<T>(a.grad_output), In<T>(a.input), In<T>(a.offset),
                                     In<T>(a.mask), Out<T>(a.grad_weight), Out<T>(a.grad_bias),
                                     workspace, parallel_for);
      }
    }
    im2col::BackwardWeight(s, In<T>(a.grad_output), In<T>(a.input), In<T>(a.offset), In<T>(a.mask),
                           Out<T>(a.grad_weight), Out<T>(a.grad_bias), workspace, parallel_for);
  });
}

}  // namespace cpu
}  // namespace tensorflow_dcn
