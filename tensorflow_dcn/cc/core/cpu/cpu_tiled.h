// The tiled implementation of the CPU core (cpu_core.h): per tile of output pixels, the bilinear
// samples are gathered into a cache-resident block and multiplied at once in register-blocked
// micro-kernels; the backward pass likewise in tiles (cpu_tiled_kernels.h says how). float, half
// and bfloat16, all accumulating in float; double runs on the im2col implementation.
//
// The kernels are compiled for AVX-512 (F, BW, DQ, VL), AVX2+FMA+F16C and the x86-64 baseline
// (SSE2), and the widest the CPU supports runs (other architectures and compilers: the baseline
// source with 16-byte vectors). The environment variable TFDCN_CPU_ISA=avx2 or =baseline caps the
// choice, so that the narrower variants can be tested on any machine; it is read once per process
// and other values leave the choice alone.
#ifndef TENSORFLOW_DCN_CC_CORE_CPU_CPU_TILED_H_
#define TENSORFLOW_DCN_CC_CORE_CPU_CPU_TILED_H_

#include <cstddef>

#include "tensorflow_dcn/cc/core/cpu/cpu_core.h"
#include "tensorflow_dcn/cc/core/problem.h"

namespace tensorflow_dcn {
namespace cpu {
namespace tiled {

bool Supports(DType dtype);

// "avx512", "avx2" or "baseline": the variant that runs in this process.
const char* InstructionSet();

template <typename T>
size_t WorkspaceBytes(Op op, const DcnShape& s);

template <typename T>
void Forward(const DcnShape& s, const T* input, const T* offset, const T* mask, const T* weight,
             const T* bias, T* output, void* workspace, const ParallelFor& parallel_for);
template <typename T>
void BackwardInput(const DcnShape& s, const T* grad_output, const T* input, const T* offset,
                   const T* mask, const T* weight, T* grad_input, T* grad_offset, T* grad_mask,
                   void* workspace, const ParallelFor& parallel_for);
template <typename T>
void BackwardWeight(const DcnShape& s, const T* grad_output, const T* input, const T* offset,
                    const T* mask, T* grad_weight, T* grad_bias, void* workspace,
                    const ParallelFor& parallel_for);

}  // namespace tiled
}  // namespace cpu
}  // namespace tensorflow_dcn

#endif  // TENSORFLOW_DCN_CC_CORE_CPU_CPU_TILED_H_
