// The im2col implementation of the CPU core (cpu_core.h), per element type.
#ifndef TENSORFLOW_DCN_CC_CORE_CPU_CPU_IM2COL_H_
#define TENSORFLOW_DCN_CC_CORE_CPU_CPU_IM2COL_H_

#include <cstddef>

#include "tensorflow_dcn/cc/core/cpu/cpu_core.h"
#include "tensorflow_dcn/cc/core/problem.h"

namespace tensorflow_dcn {
namespace cpu {
namespace im2col {

template <typename T>
size_t WorkspaceBytes(Op op, const DcnShape& s);

template <typename T>
void Forward(const DcnShape& s, const T* input, const T* offset, const T* mask, const T* weight,
             const T* bias, T* output, const ParallelFor& parallel_for);
template <typename T>
void BackwardInput(const DcnShape& s, const T* grad_output, const T* input, const T* offset,
                   const T* mask, const T* weight, T* grad_input, T* grad_offset, T* grad_mask,
                   void* workspace, const ParallelFor& parallel_for);
template <typename T>
void BackwardWeight(const DcnShape& s, const T* grad_output, const T* input, const T* offset,
                    const T* mask, T* grad_weight, T* grad_bias, void* workspace,
                    const ParallelFor& parallel_for);

}  // namespace im2col
}  // namespace cpu
}  // namespace tensorflow_dcn

#endif  // TENSORFLOW_DCN_CC_CORE_CPU_CPU_IM2COL_H_
