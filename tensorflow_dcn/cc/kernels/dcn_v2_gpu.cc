// GPU functors: adapt the TensorFlow-free CUDA core (cuda/dcn_v2_cuda.h) to OpKernels. Scratch
// memory comes from allocate_temp, work goes on TensorFlow's stream, the host never waits.
#if GOOGLE_CUDA
#define EIGEN_USE_GPU

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdlib>

#include "tensorflow/core/framework/op_kernel.h"
#include "tensorflow/core/platform/tensor_float_32_utils.h"
#include "tensorflow/core/util/determinism.h"
#include "tensorflow_dcn/cc/kernels/cuda/dcn_v2_cuda.h"
#include "tensorflow_dcn/cc/kernels/dcn_v2_functors.h"
#include "tensorflow_dcn/cc/kernels/dcn_v2_params.h"

namespace tensorflow_dcn {
namespace {

using GPUDevice = Eigen::GpuDevice;

// TensorFlow's 16-bit types and CUDA's share their bit layout.
template <typename T>
struct CudaTypeOf {
  using type = T;
};
template <>
struct CudaTypeOf<Eigen::half> {
  using type = __half;
};
template <>
struct CudaTypeOf<Eigen::bfloat16> {
  using type = __nv_bfloat16;
};
template <typename T>
using CudaType = typename CudaTypeOf<T>::type;

template <typename T>
const CudaType<T>* Cuda(const T* p) {
  return reinterpret_cast<const CudaType<T>*>(p);
}
template <typename T>
CudaType<T>* Cuda(T* p) {
  return reinterpret_cast<CudaType<T>*>(p);
}

absl::Status CudaStatus(cudaError_t err, const char* op) {
  switch (err) {
    case cudaSuccess:
      return absl::OkStatus();
    case cudaErrorNoKernelImageForDevice:
    case cudaErrorInvalidKernelImage:
    case cudaErrorUnsupportedPtxVersion:
    case cudaErrorInsufficientDriver:
    case cudaErrorCompatNotSupportedOnDevice: {
      cuda::Options o;
      cuda::QueryDevice(&o);
      return absl::FailedPreconditionError(absl::StrCat(
          op, ": tensorflow_dcn's CUDA kernels cannot run here (", cudaGetErrorString(err),
          "). They are built with CUDA 13 for compute capability 7.5, 8.0, 8.6, 8.9 and 9.0 "
          "(plus PTX for newer GPUs) and need an NVIDIA driver >= 580. This GPU has compute "
          "capability ", o.compute_capability / 10, ".", o.compute_capability % 10,
          ". Update the driver, or run the op on the CPU (with tf.device('/CPU:0'))."));
    }
    default:
      return absl::InternalError(absl::StrCat(op, ": CUDA error ", cudaGetErrorName(err), ": ",
                                              cudaGetErrorString(err)));
  }
}

// The device, math and determinism settings of this call, and its workspace.
struct GpuCall {
  cuda::Options options;
  cudaStream_t stream;
  tensorflow::Tensor workspace;

  void* workspace_data() { return workspace.flat<uint8_t>().data(); }
};

template <typename SizeFn>
absl::Status PrepareCall(tensorflow::OpKernelContext* ctx, const char* op, SizeFn size_of,
                         GpuCall* call) {
  TF_RETURN_IF_ERROR(CudaStatus(cuda::QueryDevice(&call->options), op));
  call->options.allow_tf32 = tensorflow::tensor_float_32_execution_enabled();
  call->options.deterministic = tensorflow::OpDeterminismRequired();
  // A debugging and testing switch: the simple im2col kernels the fused ones are tested against.
  const char* force = std::getenv("TFDCN_FORCE_IM2COL");
  call->options.force_im2col = force != nullptr && force[0] == '1';
  call->stream = ctx->eigen_device<GPUDevice>().stream();
  const int64_t bytes = static_cast<int64_t>(size_of(call->options));
  return ctx->allocate_temp(tensorflow::DT_UINT8, {std::max<int64_t>(bytes, 1)}, &call->workspace);
}

}  // namespace

template <typename T>
struct DcnForward<GPUDevice, T> {
  absl::Status operator()(tensorflow::OpKernelContext* ctx, const DcnShape& s, const T* input,
                          const T* offset, const T* mask, const T* weight, const T* bias,
                          T* output) {
    GpuCall call;
    TF_RETURN_IF_ERROR(PrepareCall(ctx, "DCNv2Forward", [&](const cuda::Options& o) {
      return cuda::ForwardWorkspaceBytes<CudaType<T>>(s, o);
    }, &call));
    return CudaStatus(cuda::Forward(s, Cuda(input), Cuda(offset), Cuda(mask), Cuda(weight),
                                    Cuda(bias), Cuda(output), call.workspace_data(),
                                    call.options, call.stream),
                      "DCNv2Forward");
  }
};

template <typename T>
struct DcnBackwardInput<GPUDevice, T> {
  absl::Status operator()(tensorflow::OpKernelContext* ctx, const DcnShape& s,
                          const T* grad_output, const T* input, const T* offset, const T* mask,
                          const T* weight, T* grad_input, T* grad_offset, T* grad_mask) {
    GpuCall call;
    TF_RETURN_IF_ERROR(PrepareCall(ctx, "DCNv2BackwardInput", [&](const cuda::Options& o) {
      return cuda::BackwardInputWorkspaceBytes<CudaType<T>>(s, o);
    }, &call));
    return CudaStatus(
        cuda::BackwardInput(s, Cuda(grad_output), Cuda(input), Cuda(offset), Cuda(mask),
                            Cuda(weight), Cuda(grad_input), Cuda(grad_offset), Cuda(grad_mask),
                            call.workspace_data(), call.options, call.stream),
        "DCNv2BackwardInput");
  }
};

template <typename T>
struct DcnBackwardWeight<GPUDevice, T> {
  absl::Status operator()(tensorflow::OpKernelContext* ctx, const DcnShape& s,
                          const T* grad_output, const T* input, const T* offset, const T* mask,
                          T* grad_weight, T* grad_bias) {
    GpuCall call;
    TF_RETURN_IF_ERROR(PrepareCall(ctx, "DCNv2BackwardWeight", [&](const cuda::Options& o) {
      return cuda::BackwardWeightWorkspaceBytes<CudaType<T>>(s, o);
    }, &call));
    return CudaStatus(
        cuda::BackwardWeight(s, Cuda(grad_output), Cuda(input), Cuda(offset), Cuda(mask),
                             Cuda(grad_weight), Cuda(grad_bias), call.workspace_data(),
                             call.options, call.stream),
        "DCNv2BackwardWeight");
  }
};

#define INSTANTIATE(T)                             \
  template struct DcnForward<GPUDevice, T>;        \
  template struct DcnBackwardInput<GPUDevice, T>;  \
  template struct DcnBackwardWeight<GPUDevice, T>;
INSTANTIATE(Eigen::half)
INSTANTIATE(Eigen::bfloat16)
INSTANTIATE(float)
INSTANTIATE(double)
#undef INSTANTIATE

}  // namespace tensorflow_dcn

#endif  // GOOGLE_CUDA
