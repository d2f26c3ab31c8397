// The fused (implicit-GEMM) implementation of the CUDA core for sm_80+ and fp16, bf16, fp32,
// on mma.sync tensor cores: no column buffers.
//   Forward          output = gather(input) x weight + bias: the bilinear samples are produced
//                    straight into the tensor cores' A tiles (needs ~150-190 KB of shared
//                    memory per block: sm_80 and sm_90, not sm_86/sm_89).
//   BackwardInput    column gradients = grad_output x weight^T tile by tile; each tile's epilogue
//                    (input_scatter.cuh) scatters them into grad_input (float atomics) and
//                    accumulates the offset and mask gradients (float atomics). Not deterministic.
//                    A pass per group of images whose float buffers fit in 16 MiB (fp16/bf16
//                    grad_input in float, the offset and mask sums): the workspace does not grow
//                    with the batch.
//   BackwardWeight   grad_weight = gather(input)^T x grad_output with K over pixels: the samples
//                    are produced straight into the A tiles, the pixels split over blocks whose
//                    partial sums meet in float atomics. Not deterministic. Each block covers
//                    kWeightTileOutChannels output channels and gathers its columns itself.
#ifndef TENSORFLOW_DCN_CC_CORE_CUDA_FUSED_SM80_CUH_
#define TENSORFLOW_DCN_CC_CORE_CUDA_FUSED_SM80_CUH_

#include <cuda_runtime.h>

#include <cstddef>

#include "tensorflow_dcn/cc/core/cuda/cuda_core.h"

namespace tensorflow_dcn {
namespace cuda {
namespace fused_sm80 {

// Whether the kernels run this problem on this device (can_implement).
template <typename T>
bool ForwardSupported(const DcnShape& s, const Options& o);
template <typename T>
bool BackwardInputSupported(const DcnShape& s, const Options& o);
template <typename T>
bool BackwardWeightSupported(const DcnShape& s, const Options& o);
inline constexpr int kWeightTileOutChannels = 128;

template <typename T>
size_t BackwardInputWorkspaceBytes(const DcnShape& s);
template <typename T>
size_t BackwardWeightWorkspaceBytes(const DcnShape& s);

template <typename T>
cudaError_t Forward(const DcnShape& s, const T* input, const T* offset, const T* mask,
                    const T* weight, const T* bias, T* output, const Options& o,
                    cudaStream_t stream);
template <typename T>
cudaError_t BackwardInput(const DcnShape& s, const T* grad_output, const T* input, const T* offset,
                          const T* mask, const T* weight, T* grad_input, T* grad_offset,
                          T* grad_mask, void* workspace, const Options& o, cudaStream_t stream);
template <typename T>
cudaError_t BackwardWeight(const DcnShape& s, const T* grad_output, const T* input, const T* offset,
                           const T* mask, T* grad_weight, T* grad_bias, void* workspace,
                           const Options& o, cudaStream_t stream);

}  // namespace fused_sm80
}  // namespace cuda
}  // namespace tensorflow_dcn

#endif  // TENSORFLOW_DCN_CC_CORE_CUDA_FUSED_SM80_CUH_
