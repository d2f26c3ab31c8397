// OpKernels for DCNv2Forward, DCNv2BackwardInput and DCNv2BackwardWeight: read and check the
// operands, allocate the results, hand raw pointers to the device functor.
#define EIGEN_USE_THREADS
#if GOOGLE_CUDA
#define EIGEN_USE_GPU
#endif

#include "tensorflow/core/framework/op_kernel.h"
#include "tensorflow/core/framework/register_types.h"
#include "tensorflow/core/framework/tensor.h"
#include "tensorflow_dcn/cc/kernels/dcn_v2_functors.h"
#include "tensorflow_dcn/cc/kernels/dcn_v2_params.h"

namespace tensorflow_dcn {

using tensorflow::OpInputList;
using tensorflow::OpKernel;
using tensorflow::OpKernelConstruction;
using tensorflow::OpKernelContext;
using tensorflow::OpOutputList;
using tensorflow::Tensor;

namespace {

template <typename T>
const T* DataOrNull(const OpInputList& list) {
  return list.size() == 0 ? nullptr : list[0].flat<T>().data();
}

// Attributes are checked once, when the kernel is built.
class DcnOpBase : public OpKernel {
 public:
  explicit DcnOpBase(OpKernelConstruction* ctx) : OpKernel(ctx) {
    OP_REQUIRES_OK(ctx, ReadDcnAttrs(ctx, &attrs_));
    OP_REQUIRES_OK(ctx, ValidateDcnAttrs(attrs_));
  }

 protected:
  DcnAttrs attrs_;
};

}  // namespace

template <typename Device, typename T>
class DCNv2ForwardOp : public DcnOpBase {
 public:
  using DcnOpBase::DcnOpBase;

  void Compute(OpKernelContext* ctx) override {
    const Tensor& input = ctx->input(0);
    const Tensor& offset = ctx->input(1);
    OpInputList masks, biases;
    OP_REQUIRES_OK(ctx, ctx->input_list("mask", &masks));
    OP_REQUIRES_OK(ctx, ctx->input_list("bias", &biases));
    const Tensor* weight;
    OP_REQUIRES_OK(ctx, ctx->input("weight", &weight));

    DcnOperands ops;
    ops.input = &input.shape();
    ops.offset = &offset.shape();
    ops.mask = masks.size() ? &masks[0].shape() : nullptr;
    ops.weight = &weight->shape();
    ops.bias = biases.size() ? &biases[0].shape() : nullptr;
    DcnShape s;
    OP_REQUIRES_OK(ctx, MakeDcnShape(attrs_, ops, &s));

    Tensor* output;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, {s.batch, s.out_h, s.out_w, s.out_channels},
                                             &output));
    if (s.batch == 0) return;
    OP_REQUIRES_OK(ctx, DcnForward<Device, T>()(
                            ctx, s, input.flat<T>().data(), offset.flat<T>().data(),
                            DataOrNull<T>(masks), weight->flat<T>().data(),
                            DataOrNull<T>(biases), output->flat<T>().data()));
  }
};

template <typename Device, typename T>
class DCNv2BackwardInputOp : public DcnOpBase {
 public:
  using DcnOpBase::DcnOpBase;

  void Compute(OpKernelContext* ctx) override {
    const Tensor& grad_output = ctx->input(0);
    const Tensor& input = ctx->input(1);
    const Tensor& offset = ctx->input(2);
    OpInputList masks;
    OP_REQUIRES_OK(ctx, ctx->input_list("mask", &masks));
    const Tensor* weight;
    OP_REQUIRES_OK(ctx, ctx->input("weight", &weight));

    DcnOperands ops;
    ops.input = &input.shape();
    ops.offset = &offset.shape();
    ops.mask = masks.size() ? &masks[0].shape() : nullptr;
    ops.weight = &weight->shape();
    ops.grad_output = &grad_output.shape();
    DcnShape s;
    OP_REQUIRES_OK(ctx, MakeDcnShape(attrs_, ops, &s));

    Tensor *grad_input, *grad_offset, *grad_mask = nullptr;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, input.shape(), &grad_input));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(1, offset.shape(), &grad_offset));
    OpOutputList grad_masks;
    OP_REQUIRES_OK(ctx, ctx->output_list("grad_mask", &grad_masks));
    if (s.has_mask) OP_REQUIRES_OK(ctx, grad_masks.allocate(0, masks[0].shape(), &grad_mask));
    if (s.batch == 0) return;
    OP_REQUIRES_OK(ctx, DcnBackwardInput<Device, T>()(
                            ctx, s, grad_output.flat<T>().data(), input.flat<T>().data(),
                            offset.flat<T>().data(), DataOrNull<T>(masks),
                            weight->flat<T>().data(), grad_input->flat<T>().data(),
                            grad_offset->flat<T>().data(),
                            grad_mask ? grad_mask->flat<T>().data() : nullptr));
  }
};

template <typename Device, typename T>
class DCNv2BackwardWeightOp : public DcnOpBase {
 public:
  using DcnOpBase::DcnOpBase;

  void Compute(OpKernelContext* ctx) override {
    const Tensor& grad_output = ctx->input(0);
    const Tensor& input = ctx->input(1);
    const Tensor& offset = ctx->input(2);
    OpInputList masks;
    OP_REQUIRES_OK(ctx, ctx->input_list("mask", &masks));

    DcnOperands ops;
    ops.input = &input.shape();
    ops.offset = &offset.shape();
    ops.mask = masks.size() ? &masks[0].shape() : nullptr;
    ops.grad_output = &grad_output.shape();
    // BackwardWeight has no bias operand; its presence only decides whether grad_bias is made.
    DcnAttrs attrs = attrs_;
    const int num_biases = attrs.num_biases;
    attrs.num_biases = 0;
    DcnShape s;
    OP_REQUIRES_OK(ctx, MakeDcnShape(attrs, ops, &s));
    s.has_bias = num_biases == 1;

    Tensor *grad_weight, *grad_bias = nullptr;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(
                            0, {s.kernel_h, s.kernel_w, s.in_channels_per_group(), s.out_channels},
                            &grad_weight));
    OpOutputList grad_biases;
    OP_REQUIRES_OK(ctx, ctx->output_list("grad_bias", &grad_biases));
    if (s.has_bias) OP_REQUIRES_OK(ctx, grad_biases.allocate(0, {s.out_channels}, &grad_bias));
    OP_REQUIRES_OK(ctx, DcnBackwardWeight<Device, T>()(
                            ctx, s, grad_output.flat<T>().data(), input.flat<T>().data(),
                            offset.flat<T>().data(), DataOrNull<T>(masks),
                            grad_weight->flat<T>().data(),
                            grad_bias ? grad_bias->flat<T>().data() : nullptr));
  }
};

#define REGISTER_DCN_KERNELS(DEVICE, DEVICE_TYPE, T)                                           \
  REGISTER_KERNEL_BUILDER(                                                                     \
      Name("DCNv2Forward").Device(tensorflow::DEVICE).TypeConstraint<T>("T"),                  \
      DCNv2ForwardOp<DEVICE_TYPE, T>);                                                          \
  REGISTER_KERNEL_BUILDER(                                                                     \
      Name("DCNv2BackwardInput").Device(tensorflow::DEVICE).TypeConstraint<T>("T"),            \
      DCNv2BackwardInputOp<DEVICE_TYPE, T>);                                                    \
  REGISTER_KERNEL_BUILDER(                                                                     \
      Name("DCNv2BackwardWeight").Device(tensorflow::DEVICE).TypeConstraint<T>("T"),           \
      DCNv2BackwardWeightOp<DEVICE_TYPE, T>);

#define REGISTER_CPU(T) REGISTER_DCN_KERNELS(DEVICE_CPU, Eigen::ThreadPoolDevice, T)
TF_CALL_half(REGISTER_CPU);
TF_CALL_bfloat16(REGISTER_CPU);
TF_CALL_float(REGISTER_CPU);
TF_CALL_double(REGISTER_CPU);
#undef REGISTER_CPU

#if GOOGLE_CUDA
#define REGISTER_GPU(T) REGISTER_DCN_KERNELS(DEVICE_GPU, Eigen::GpuDevice, T)
TF_CALL_half(REGISTER_GPU);
TF_CALL_bfloat16(REGISTER_GPU);
TF_CALL_float(REGISTER_GPU);
TF_CALL_double(REGISTER_GPU);
#undef REGISTER_GPU
#endif  // GOOGLE_CUDA

}  // namespace tensorflow_dcn
