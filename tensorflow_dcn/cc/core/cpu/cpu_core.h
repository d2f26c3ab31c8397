// The CPU core of DCNv2: host pointers, a DcnShape, a workspace and a parallel-for. It knows
// nothing of TensorFlow or XLA; tf/dcn_kernels.cc and xla/dcn_ffi_handlers.cc bind it.
//
// Half and bfloat16 are computed in float, double in double. Results do not depend on how the
// parallel-for schedules its ranges: every result element has one writer and a fixed summation
// order.
#ifndef TENSORFLOW_DCN_CC_CORE_CPU_CPU_CORE_H_
#define TENSORFLOW_DCN_CC_CORE_CPU_CPU_CORE_H_

#include <cstdint>
#include <functional>
#include <string>

#include "tensorflow_dcn/cc/core/plan.h"
#include "tensorflow_dcn/cc/core/problem.h"

namespace tensorflow_dcn {
namespace cpu {

// Runs fn(begin, end) over disjoint ranges that cover [0, units), possibly on several threads,
// and returns when all have run. cost_per_unit (about the operations per unit) sets how finely
// the range is split.
using ParallelFor = std::function<void(int64_t units, int64_t cost_per_unit,
                                       const std::function<void(int64_t, int64_t)>& fn)>;

struct Options {
  KernelChoice choice = KernelChoice::kAuto;
};

// The implementation and workspace for `op` on a checked problem.
Plan MakePlan(Op op, DType dtype, const DcnShape& s, const Options& o);

// Run a plan made for the same dtype and shape and for the op of `args`; `workspace` holds
// plan.workspace_bytes.
void Run(const Plan& plan, DType dtype, const DcnShape& s, const ForwardArgs& args, void* workspace,
         const ParallelFor& parallel_for);
void Run(const Plan& plan, DType dtype, const DcnShape& s, const BackwardInputArgs& args,
         void* workspace, const ParallelFor& parallel_for);
void Run(const Plan& plan, DType dtype, const DcnShape& s, const BackwardWeightArgs& args,
         void* workspace, const ParallelFor& parallel_for);

}  // namespace cpu
}  // namespace tensorflow_dcn

#endif  // TENSORFLOW_DCN_CC_CORE_CPU_CPU_CORE_H_
