// The CUDA core of DCNv2: raw device pointers, a DcnShape, a workspace and a stream. It knows
// nothing of TensorFlow; dcn_v2_gpu.cc adapts it to OpKernels, and tests/cuda_core drives it
// directly.
//
// T is __half, __nv_bfloat16, float or double. Every call is asynchronous on `stream`, allocates
// nothing (scratch memory comes from `workspace`, at least *WorkspaceBytes(...) bytes, 256-byte
// aligned) and returns the first CUDA error it meets (launch errors included).
//
// Two implementations: fused implicit-GEMM kernels (fused.cuh) for fp16/bf16/fp32 on sm_80+ where
// the channel counts allow, which need no column buffers, and the im2col kernels everywhere else.
// Extra memory is bounded: im2col column buffers are processed in chunks of output pixels holding
// at most kColumnBufferBytes (32 MiB, see dcn_v2_cuda.cu.cc); gradients summed in float for
// half/bfloat16 (grad_input, grad_weight) and the offset/mask gradients of the fused backward
// take a float buffer of their size.
#ifndef TENSORFLOW_DCN_CC_KERNELS_CUDA_DCN_V2_CUDA_H_
#define TENSORFLOW_DCN_CC_KERNELS_CUDA_DCN_V2_CUDA_H_

#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

#include "tensorflow_dcn/cc/kernels/dcn_v2_shape.h"

namespace tensorflow_dcn {
namespace cuda {

struct Options {
  int compute_capability = 0;  // major * 10 + minor of the device the stream runs on
  int multiprocessors = 1;
  int shared_memory_per_block = 0;  // opt-in maximum of dynamic shared memory, bytes
  bool allow_tf32 = true;      // fp32 products may round operands to TF32 (else 3xTF32)
  bool deterministic = false;  // no floating-point atomics: results bit-identical run to run
  // Use the im2col kernels even where the fused ones apply: the simple path the fused kernels
  // are tested against.
  bool force_im2col = false;
};

// Fills `options` for the current device.
cudaError_t QueryDevice(Options* options);

template <typename T>
size_t ForwardWorkspaceBytes(const DcnShape& s, const Options& o);
template <typename T>
cudaError_t Forward(const DcnShape& s, const T* input, const T* offset, const T* mask,
                    const T* weight, const T* bias, T* output, void* workspace,
                    const Options& o, cudaStream_t stream);

template <typename T>
size_t BackwardInputWorkspaceBytes(const DcnShape& s, const Options& o);
template <typename T>
cudaError_t BackwardInput(const DcnShape& s, const T* grad_output, const T* input,
                          const T* offset, const T* mask, const T* weight, T* grad_input,
                          T* grad_offset, T* grad_mask, void* workspace, const Options& o,
                          cudaStream_t stream);

template <typename T>
size_t BackwardWeightWorkspaceBytes(const DcnShape& s, const Options& o);
template <typename T>
cudaError_t BackwardWeight(const DcnShape& s, const T* grad_output, const T* input,
                           const T* offset, const T* mask, T* grad_weight, T* grad_bias,
                           void* workspace, const Options& o, cudaStream_t stream);

}  // namespace cuda
}  // namespace tensorflow_dcn

#endif  // TENSORFLOW_DCN_CC_KERNELS_CUDA_DCN_V2_CUDA_H_
