// The three DCNv2 computations, one functor each, specialised per device (as in
// tensorflow/custom-op's time_two): dcn_v2_cpu.cc for CPUDevice, dcn_v2_gpu.cc for GPUDevice.
// Operands are validated before a functor runs; `mask` and `bias` are null when absent, and so are
// the gradients of absent operands.
#ifndef TENSORFLOW_DCN_CC_KERNELS_DCN_V2_FUNCTORS_H_
#define TENSORFLOW_DCN_CC_KERNELS_DCN_V2_FUNCTORS_H_

#include "tensorflow/core/framework/op_kernel.h"
#include "tensorflow_dcn/cc/kernels/dcn_v2_shape.h"

namespace tensorflow_dcn {

template <typename Device, typename T>
struct DcnForward {
  absl::Status operator()(tensorflow::OpKernelContext* ctx, const DcnShape& s, const T* input,
                          const T* offset, const T* mask, const T* weight, const T* bias,
                          T* output);
};

template <typename Device, typename T>
struct DcnBackwardInput {
  absl::Status operator()(tensorflow::OpKernelContext* ctx, const DcnShape& s,
                          const T* grad_output, const T* input, const T* offset, const T* mask,
                          const T* weight, T* grad_input, T* grad_offset, T* grad_mask);
};

template <typename Device, typename T>
struct DcnBackwardWeight {
  absl::Status operator()(tensorflow::OpKernelContext* ctx, const DcnShape& s,
                          const T* grad_output, const T* input, const T* offset, const T* mask,
                          T* grad_weight, T* grad_bias);
};

}  // namespace tensorflow_dcn

#endif  // TENSORFLOW_DCN_CC_KERNELS_DCN_V2_FUNCTORS_H_
