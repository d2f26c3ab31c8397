// The CUDA core of DCNv2: device pointers, a DcnShape, a workspace and a stream. It knows nothing
// of TensorFlow or XLA: tf/dcn_kernels.cc and xla/dcn_ffi_handlers.cc bind it, and
// tests/cuda_core drives it directly.
//
// Every run is asynchronous on `stream`, allocates nothing (scratch memory comes from
// `workspace`, plan.workspace_bytes, 256-byte aligned) and returns the first CUDA error it meets
// (launch errors included). The pointers are of the DType the plan was made for.
//
// Implementations (plan.h):
//   cuda_wgmma_sm90a forward and backward weight for fp16/bf16/fp32 (TF32, or 3xTF32 with TF32
//                    off) on Hopper (compute capability 9.0) where the channel counts allow and
//                    the sm_90a module loads (wgmma_sm90a.cuh)
//   cuda_fused_sm80  implicit-GEMM forward, backward input and backward weight for fp16/bf16/fp32
//                    on sm_80+ where the channel counts allow: no column buffers (fused_sm80.cuh)
//   cuda_im2col      everything else, and every deterministic backward (im2col.cuh): column
//                    buffers in chunks of at most 32 MiB
// Gradients summed in float for half/bfloat16 take a float buffer in the workspace: of their
// size, but for cuda_fused_sm80's grad_input, which takes one for a pass of images (16 MiB at
// most with the offset and mask sums). cuda_wgmma_sm90a's fp32 backward weight takes grad_output
// transposed for a chunk of pixels (8 MiB at most); fp16/bf16 take a copy with padded rows only
// when a group's output channels are not a multiple of 8.
#ifndef TENSORFLOW_DCN_CC_CORE_CUDA_CUDA_CORE_H_
#define TENSORFLOW_DCN_CC_CORE_CUDA_CUDA_CORE_H_

#include <cuda_runtime.h>

#include <cstddef>
#include <string>

#include "tensorflow_dcn/cc/core/plan.h"
#include "tensorflow_dcn/cc/core/problem.h"

namespace tensorflow_dcn {
namespace cuda {

struct Options {
  int compute_capability = 0;  // major * 10 + minor of the device the stream runs on
  int multiprocessors = 1;
  int shared_memory_per_block = 0;  // opt-in maximum of dynamic shared memory, bytes
  bool allow_tf32 = true;           // fp32 products may round operands to TF32 (else 3xTF32)
  bool deterministic = false;       // no floating-point atomics: results bit-identical run to run
  KernelChoice choice = KernelChoice::kAuto;
};

// Fills the device fields of `options` for the current device.
cudaError_t QueryDevice(Options* options);

// The implementation and workspace for `op` on a checked problem.
Plan MakePlan(Op op, DType dtype, const DcnShape& s, const Options& o);

// Run a plan made for the same dtype, shape and options and for the op of `args`.
cudaError_t Run(const Plan& plan, DType dtype, const DcnShape& s, const ForwardArgs& args,
                void* workspace, const Options& o, cudaStream_t stream);
cudaError_t Run(const Plan& plan, DType dtype, const DcnShape& s, const BackwardInputArgs& args,
                void* workspace, const Options& o, cudaStream_t stream);
cudaError_t Run(const Plan& plan, DType dtype, const DcnShape& s, const BackwardWeightArgs& args,
                void* workspace, const Options& o, cudaStream_t stream);

// A message for a CUDA error of `op`: for errors that mean the kernels cannot load on this driver
// or GPU, what the kernels need and how to fall back; `unavailable` tells which kind it was.
std::string ErrorMessage(cudaError_t err, const char* op, bool* unavailable);

}  // namespace cuda
}  // namespace tensorflow_dcn

#endif  // TENSORFLOW_DCN_CC_CORE_CUDA_CUDA_CORE_H_
