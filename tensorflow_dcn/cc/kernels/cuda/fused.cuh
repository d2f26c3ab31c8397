// Fused (implicit-GEMM) DCNv2 kernels for sm_80+ and fp16, bf16, fp32: no column buffers.
//   Forward          output = gather(input) x weight + bias: the bilinear samples are produced
//                    straight into the tensor cores' A tiles (needs ~150-190 KB of shared
//                    memory per block: sm_80 and sm_90, not sm_86/sm_89).
//   BackwardInput    column gradients = grad_output x weight^T tile by tile; each tile's epilogue
//                    scatters them into grad_input (float atomics) and accumulates the offset and
//                    mask gradients (float atomics). Not deterministic.
// dcn_v2_cuda.cu.cc picks these where *Supported says so and the im2col kernels elsewhere.
#ifndef TENSORFLOW_DCN_CC_KERNELS_CUDA_FUSED_CUH_
#define TENSORFLOW_DCN_CC_KERNELS_CUDA_FUSED_CUH_

#include <cuda_runtime.h>

#include "tensorflow_dcn/cc/kernels/cuda/dcn_v2_cuda.h"
#include "tensorflow_dcn/cc/kernels/cuda/device_util.cuh"

namespace tensorflow_dcn {
namespace cuda {
namespace fused {

template <typename T>
bool ForwardSupported(const DcnShape& s, const Options& o);
template <typename T>
bool BackwardSupported(const DcnShape& s, const Options& o);

template <typename T>
cudaError_t Forward(const DcnShape& s, const T* input, const T* offset, const T* mask,
                    const T* weight, const T* bias, T* output, const Options& o,
                    cudaStream_t stream);

// grad_input_acc (input-shaped) and coord_acc ([pixels, dg * taps, 3]: m * d/dy, m * d/dx,
// d/dmask) must be zero; both are added to.
template <typename T>
cudaError_t BackwardInput(const DcnShape& s, const T* grad_output, const T* input,
                          const T* offset, const T* mask, const T* weight,
                          AccumulatorOf<T>* grad_input_acc, float* coord_acc, const Options& o,
                          cudaStream_t stream);

}  // namespace fused
}  // namespace cuda
}  // namespace tensorflow_dcn

#endif  // TENSORFLOW_DCN_CC_KERNELS_CUDA_FUSED_CUH_
