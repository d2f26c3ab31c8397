// The CUDA core's planner and entry points: which implementation runs a problem, and the dtype
// dispatch into it. See cuda_core.h.
#include "tensorflow_dcn/cc/core/cuda/cuda_core.h"

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <algorithm>
#include <string>

#include "tensorflow_dcn/cc/core/cuda/device_util.cuh"
#include "tensorflow_dcn/cc/core/cuda/fused_sm80.cuh"
#include "tensorflow_dcn/cc/core/cuda/im2col.cuh"
#include "tensorflow_dcn/cc/core/cuda/wgmma_sm90a.cuh"

// The GPU targets and driver this library was built for, set by the build (tensorflow_dcn/BUILD).
#ifndef TFDCN_CUDA_TARGETS
#define TFDCN_CUDA_TARGETS "(unknown)"
#endif
#ifndef TFDCN_CUDA_MIN_DRIVER
#define TFDCN_CUDA_MIN_DRIVER "(unknown)"
#endif

namespace tensorflow_dcn {
namespace cuda {
namespace {

template <typename T>
constexpr bool kHasTensorCoreKernels = !std::is_same_v<T, double>;

// Where the sm_90a kernels pay: everywhere but the fp16/bf16 backward input with at most 128
// output channels per group. There its GEMM is two K steps and the scatter, the same code in
// both, is nearly the whole time; the fused kernel's is faster (H200, 8x64x64x128: fp16 0.286
// against 0.272 ms, bf16 0.280 against 0.272; at 256 channels 0.140 against 0.144, at 512 0.152
// against 0.180; notes of 2026-12-03, runs 20 and 21).
template <typename T>
bool Sm90aPays(Op op, const DcnShape& s) {
  return op != Op::kBackwardInput || std::is_same_v<T, float> || s.out_channels_per_group() > 128;
}

template <typename T>
Plan MakePlanFor(Op op, const DcnShape& s, const Options& o) {
  Plan plan{Implementation::kCudaIm2col, 0};
  if constexpr (kHasTensorCoreKernels<T>) {
    // Whether the sm_90a module loads (older drivers, other GPUs) is asked only for problems
    // the kernel supports.
    if (o.choice == KernelChoice::kAuto && wgmma_sm90a::Supported<T>(op, s, o) &&
        Sm90aPays<T>(op, s) && wgmma_sm90a::Available()) {
      plan.implementation = Implementation::kCudaWgmmaSm90a;
      plan.workspace_bytes = wgmma_sm90a::WorkspaceBytes<T>(op, s, o);
      return plan;
    }
    if (o.choice == KernelChoice::kAuto || o.choice == KernelChoice::kPortable) {
      if (op == Op::kForward && fused_sm80::ForwardSupported<T>(s, o)) {
        plan.implementation = Implementation::kCudaFusedSm80;
        return plan;  // no workspace
      }
      if (op == Op::kBackwardInput && fused_sm80::BackwardInputSupported<T>(s, o)) {
        plan.implementation = Implementation::kCudaFusedSm80;
        plan.workspace_bytes = fused_sm80::BackwardInputWorkspaceBytes<T>(s);
        return plan;
      }
      // The fused backward weight gathers the columns again for every tile of output channels:
      // beyond one tile, im2col's single gather and GEMM is as fast or faster (H200: the fused
      // kernel takes 0.8x im2col's time at 128 output channels, 1.0-1.6x at 256 and 512).
      if (op == Op::kBackwardWeight &&
          s.out_channels_per_group() <= fused_sm80::kWeightTileOutChannels &&
          fused_sm80::BackwardWeightSupported<T>(s, o)) {
        plan.implementation = Implementation::kCudaFusedSm80;
        plan.workspace_bytes = fused_sm80::BackwardWeightWorkspaceBytes<T>(s);
        return plan;
      }
    }
  }
  plan.workspace_bytes = im2col::WorkspaceBytes<T>(op, s, o);
  return plan;
}

}  // namespace

cudaError_t QueryDevice(Options* o) {
  int device = 0, major = 0, minor = 0, sms = 0;
  DCN_RETURN_IF_ERROR(cudaGetDevice(&device));
  DCN_RETURN_IF_ERROR(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device));
  DCN_RETURN_IF_ERROR(cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, device));
  DCN_RETURN_IF_ERROR(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device));
  DCN_RETURN_IF_ERROR(cudaDeviceGetAttribute(&o->shared_memory_per_block,
                                             cudaDevAttrMaxSharedMemoryPerBlockOptin, device));
  o->compute_capability = major * 10 + minor;
  o->multiprocessors = sms;
  return cudaSuccess;
}

Plan MakePlan(Op op, DType dtype, const DcnShape& s, const Options& o) {
  return WithElementType<__half, __nv_bfloat16>(
      dtype, [&](auto t) { return MakePlanFor<decltype(t)>(op, s, o); });
}

cudaError_t Run(const Plan& plan, DType dtype, const DcnShape& s, const ForwardArgs& a,
                void* workspace, const Options& o, cudaStream_t stream) {
  RecordRun(Op::kForward, plan.implementation);
  return WithElementType<__half, __nv_bfloat16>(dtype, [&](auto t) {
    using T = decltype(t);
    if constexpr (kHasTensorCoreKernels<T>) {
      if (plan.implementation == Implementation::kCudaWgmmaSm90a) {
        return wgmma_sm90a::Forward(s, Typed<T>(a.input), Typed<T>(a.offset), Typed<T>(a.mask),
                                    Typed<T>(a.weight), Typed<T>(a.bias), Typed<T>(a.output),
                                    workspace, o, stream);
      }
      if (plan.implementation == Implementation::kCudaFusedSm80) {
        return fused_sm80::Forward(s, Typed<T>(a.input), Typed<T>(a.offset), Typed<T>(a.mask),
                                   Typed<T>(a.weight), Typed<T>(a.bias), Typed<T>(a.output), o,
                                   stream);
      }
    }
    return im2col::Forward(s, Typed<T>(a.input), Typed<T>(a.offset), Typed<T>(a.mask),
                           Typed<T>(a.weight), Typed<T>(a.bias), Typed<T>(a.output), workspace, o,
                           stream);
  });
}

cudaError_t Run(const Plan& plan, DType dtype, const DcnShape& s, const BackwardInputArgs& a,
                void* workspace, const Options& o, cudaStream_t stream) {
  RecordRun(Op::kBackwardInput, plan.implementation);
  return WithElementType<__half, __nv_bfloat16>(dtype, [&](auto t) {
    using T = decltype(t);
    if constexpr (kHasTensorCoreKernels<T>) {
      if (plan.implementation == Implementation::kCudaWgmmaSm90a) {
        return wgmma_sm90a::BackwardInput(s, Typed<T>(a.grad_output), Typed<T>(a.input),
                                          Typed<T>(a.offset), Typed<T>(a.mask), Typed<T>(a.weight),
                                          Typed<T>(a.grad_input), Typed<T>(a.grad_offset),
                                          Typed<T>(a.grad_mask), workspace, o, stream);
      }
      if (plan.implementation == Implementation::kCudaFusedSm80) {
        return fused_sm80::BackwardInput(s, Typed<T>(a.grad_output), Typed<T>(a.input),
                                         Typed<T>(a.offset), Typed<T>(a.mask), Typed<T>(a.weight),
                                         Typed<T>(a.grad_input), Typed<T>(a.grad_offset),
                                         Typed<T>(a.grad_mask), workspace, o, stream);
      }
    }
    return im2col::BackwardInput(s, Typed<T>(a.grad_output), Typed<T>(a.input), Typed<T>(a.offset),
                                 Typed<T>(a.mask), Typed<T>(a.weight), Typed<T>(a.grad_input),
                                 Typed<T>(a.grad_offset), Typed<T>(a.grad_mask), workspace, o,
                                 stream);
  });
}

cudaError_t Run(const Plan& plan, DType dtype, const DcnShape& s, const BackwardWeightArgs& a,
                void* workspace, const Options& o, cudaStream_t stream) {
  RecordRun(Op::kBackwardWeight, plan.implementation);
  return WithElementType<__half, __nv_bfloat16>(dtype, [&](auto t) {
    using T = decltype(t);
    if constexpr (kHasTensorCoreKernels<T>) {
      if (plan.implementation == Implementation::kCudaWgmmaSm90a) {
        return wgmma_sm90a::BackwardWeight(
            s, Typed<T>(a.grad_output), Typed<T>(a.input), Typed<T>(a.offset), Typed<T>(a.mask),
            Typed<T>(a.grad_weight), Typed<T>(a.grad_bias), workspace, o, stream);
      }
      if (plan.implementation == Implementation::kCudaFusedSm80) {
        return fused_sm80::BackwardWeight(
            s, Typed<T>(a.grad_output), Typed<T>(a.input), Typed<T>(a.offset), Typed<T>(a.mask),
            Typed<T>(a.grad_weight), Typed<T>(a.grad_bias), workspace, o, stream);
      }
    }
    return im2col::BackwardWeight(s, Typed<T>(a.grad_output), Typed<T>(a.input), Typed<T>(a.offset),
                                  Typed<T>(a.mask), Typed<T>(a.grad_weight), Typed<T>(a.grad_bias),
                                  workspace, o, stream);
  });
}

std::string ErrorMessage(cudaError_t err, const char* op, bool* unavailable) {
  switch (err) {
    case cudaErrorNoKernelImageForDevice:
    case cudaErrorInvalidKernelImage:
    case cudaErrorUnsupportedPtxVersion:
    case cudaErrorInsufficientDriver:
    case cudaErrorCompatNotSupportedOnDevice: {
      *unavailable = true;
      Options o;
      const bool known = QueryDevice(&o) == cudaSuccess;
      return std::string(op) + ": tensorflow_dcn's CUDA kernels cannot run here (" +
             cudaGetErrorString(err) + "). They are built for compute capability " +
             TFDCN_CUDA_TARGETS + " and need an NVIDIA driver >= " + TFDCN_CUDA_MIN_DRIVER +
             ". This GPU has compute capability " +
             (known ? std::to_string(o.compute_capability / 10) + "." +
                          std::to_string(o.compute_capability % 10)
                    : std::string("(unknown)")) +
             ". Update the driver, or run the op on the CPU (with tf.device('/CPU:0')).";
    }
    default:
      *unavailable = false;
      return std::string(op) + ": CUDA error " + cudaGetErrorName(err) + ": " +
             cudaGetErrorString(err);
  }
}

}  // namespace cuda
}  // namespace tensorflow_dcn
