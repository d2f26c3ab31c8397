// The im2col implementation of the CUDA core (cuda_core.h), as in the original design and
// torchvision: deformable im2col into column buffers, our GEMM, col2im. It runs every problem on
// every GPU in every dtype; the faster implementations are tested against it.
#ifndef TENSORFLOW_DCN_CC_CORE_CUDA_IM2COL_CUH_
#define TENSORFLOW_DCN_CC_CORE_CUDA_IM2COL_CUH_

#include <cuda_runtime.h>

#include <algorithm>
#include <cstddef>

#include "tensorflow_dcn/cc/core/cuda/cuda_core.h"
#include "tensorflow_dcn/cc/core/cuda/device_util.cuh"
#include "tensorflow_dcn/cc/core/workspace.h"

namespace tensorflow_dcn {
namespace cuda {
namespace im2col {

// grad_bias = grad_output summed over pixels in a fixed order (per-split partials, then their
// sum): the backward weight of every implementation computes it this way.
template <typename T>
struct BiasGradient {
  int splits;
  int64_t rows_per_split;
  AccumulatorOf<T>* partials;
  BiasGradient(const DcnShape& s, WorkspaceLayout* w)
      : splits(static_cast<int>(std::clamp<int64_t>(CeilDiv(s.pixels(), 256), 1, 1024))),
        rows_per_split(CeilDiv(std::max<int64_t>(s.pixels(), 1), splits)),
        partials(w->Take<AccumulatorOf<T>>(splits * s.out_channels)) {}
  cudaError_t Run(const DcnShape& s, const T* grad_output, T* grad_bias, cudaStream_t stream) const;
};

template <typename T>
size_t WorkspaceBytes(Op op, const DcnShape& s, const Options& o);

template <typename T>
cudaError_t Forward(const DcnShape& s, const T* input, const T* offset, const T* mask,
                    const T* weight, const T* bias, T* output, void* workspace, const Options& o,
                    cudaStream_t stream);
template <typename T>
cudaError_t BackwardInput(const DcnShape& s, const T* grad_output, const T* input, const T* offset,
                          const T* mask, const T* weight, T* grad_input, T* grad_offset,
                          T* grad_mask, void* workspace, const Options& o, cudaStream_t stream);
template <typename T>
cudaError_t BackwardWeight(const DcnShape& s, const T* grad_output, const T* input, const T* offset,
                           const T* mask, T* grad_weight, T* grad_bias, void* workspace,
                           const Options& o, cudaStream_t stream);

}  // namespace im2col
}  // namespace cuda
}  // namespace tensorflow_dcn

#endif  // TENSORFLOW_DCN_CC_CORE_CUDA_IM2COL_CUH_
