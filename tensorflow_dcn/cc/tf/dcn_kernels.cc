// The TensorFlow OpKernels of DCNv2Forward, DCNv2BackwardInput and DCNv2BackwardWeight: thin
// adapters over the core. Each reads its operands, has the core check the problem, allocates the
// results, and runs the core's plan on TensorFlow's thread pool (CPU) or stream (GPU) with a
// workspace from allocate_temp.
#define EIGEN_USE_THREADS
#if GOOGLE_CUDA
#define EIGEN_USE_GPU
#endif

#include <algorithm>
#include <map>
#include <string>

#include "tensorflow/core/framework/op_kernel.h"
#include "tensorflow/core/framework/register_types.h"
#include "tensorflow/core/framework/tensor.h"
#include "tensorflow/core/platform/tensor_float_32_utils.h"
#include "tensorflow/core/util/determinism.h"
#include "tensorflow_dcn/cc/core/cpu/cpu_core.h"
#include "tensorflow_dcn/cc/core/plan.h"
#include "tensorflow_dcn/cc/core/problem.h"
#include "tensorflow_dcn/cc/tf/attrs.h"
#if GOOGLE_CUDA
#include "tensorflow_dcn/cc/core/cuda/cuda_core.h"
#endif

namespace tensorflow_dcn {
namespace {

using tensorflow::OpInputList;
using tensorflow::OpKernelContext;
using tensorflow::Tensor;
using tensorflow::TensorShape;

DType DTypeOf(tensorflow::DataType t) {
  switch (t) {
    case tensorflow::DT_HALF:
      return DType::kHalf;
    case tensorflow::DT_BFLOAT16:
      return DType::kBFloat16;
    case tensorflow::DT_FLOAT:
      return DType::kFloat;
    default:
      return DType::kDouble;  // the ops' type constraint admits no other
  }
}

void* DataOrNull(Tensor* t) { return t == nullptr ? nullptr : t->data(); }

// The workspace of a plan, as a temporary of TensorFlow's allocator.
absl::Status AllocateWorkspace(OpKernelContext* ctx, const Plan& plan, Tensor* workspace) {
  const int64_t bytes = std::max<int64_t>(static_cast<int64_t>(plan.workspace_bytes), 1);
  return ctx->allocate_temp(tensorflow::DT_UINT8, {bytes}, workspace);
}

// The core of one device: plans and runs a checked problem. The problem's args are the op's
// tensors; the CPU core runs on TensorFlow's intra-op thread pool, the CUDA core on the op's
// stream.
struct CpuCore {
  template <typename Args>
  static absl::Status Run(OpKernelContext* ctx, Op op, DType dtype, const DcnShape& s,
                          const Args& args) {
    cpu::Options options;
    const std::string bad_choice = ReadKernelChoice(&options.choice);
    if (!bad_choice.empty()) return absl::InvalidArgumentError(bad_choice);
    const Plan plan = cpu::MakePlan(op, dtype, s, options);
    Tensor workspace;
    TF_RETURN_IF_ERROR(AllocateWorkspace(ctx, plan, &workspace));
    auto* pool = ctx->device()->tensorflow_cpu_worker_threads()->workers;
    const cpu::ParallelFor parallel_for = [pool](int64_t units, int64_t cost,
                                                 const std::function<void(int64_t, int64_t)>& fn) {
      pool->ParallelFor(units, tsl::thread::ThreadPool::SchedulingParams::Adaptive(cost), fn);
    };
    cpu::Run(plan, dtype, s, args, workspace.data(), parallel_for);
    return absl::OkStatus();
  }
};

#if GOOGLE_CUDA
struct CudaCore {
  template <typename Args>
  static absl::Status Run(OpKernelContext* ctx, Op op, DType dtype, const DcnShape& s,
                          const Args& args) {
    cuda::Options options;
    TF_RETURN_IF_ERROR(Status(cuda::QueryDevice(&options), op));
    const std::string bad_choice = ReadKernelChoice(&options.choice);
    if (!bad_choice.empty()) return absl::InvalidArgumentError(bad_choice);
    options.allow_tf32 = tensorflow::tensor_float_32_execution_enabled();
    options.deterministic = tensorflow::OpDeterminismRequired();
    const Plan plan = cuda::MakePlan(op, dtype, s, options);
    Tensor workspace;
    TF_RETURN_IF_ERROR(AllocateWorkspace(ctx, plan, &workspace));
    const cudaStream_t stream = ctx->eigen_device<Eigen::GpuDevice>().stream();
    return Status(cuda::Run(plan, dtype, s, args, workspace.data(), options, stream), op);
  }

  // FailedPrecondition when the kernels cannot run on this driver or GPU, else Internal.
  static absl::Status Status(cudaError_t err, Op op) {
    if (err == cudaSuccess) return absl::OkStatus();
    bool unavailable = false;
    const std::string message = cuda::ErrorMessage(err, OpName(op), &unavailable);
    return unavailable ? absl::FailedPreconditionError(message) : absl::InternalError(message);
  }
};
#endif  // GOOGLE_CUDA

// The operands of one call: their tensors by name (null when absent) and dims.
struct Operands {
  std::map<std::string, const Tensor*> tensors;
  OperandDims dims;

  const void* data(const std::string& name) const {
    const Tensor* t = tensors.at(name);
    return t == nullptr ? nullptr : t->data();
  }
  const Tensor& operator[](const std::string& name) const { return *tensors.at(name); }
};

// Attributes are read and checked once, when the kernel is built; operands on every call.
template <typename Core>
class DcnOpKernel : public tensorflow::OpKernel {
 public:
  DcnOpKernel(tensorflow::OpKernelConstruction* ctx, Op op) : OpKernel(ctx), op_(op) {
    OP_REQUIRES_OK(ctx, ReadAttrs(ctx, op_, &attrs_));
  }

 protected:
  // The op's operands, and the core's check of the problem they make.
  absl::Status ReadAndCheck(OpKernelContext* ctx, Operands* o, DcnShape* s) const {
    for (const char* name : OperandNames(op_)) {
      if (name == nullptr) continue;
      OpInputList list;
      TF_RETURN_IF_ERROR(ctx->input_list(name, &list));
      o->tensors[name] = list.size() == 0 ? nullptr : &list[0];
      if (list.size() != 0) *DimsField(&o->dims, name) = DimsOf(list[0].shape());
    }
    const std::string message = CheckProblem(op_, attrs_, o->dims, s);
    if (!message.empty()) return absl::InvalidArgumentError(message);
    return absl::OkStatus();
  }

  template <typename Args>
  absl::Status Run(OpKernelContext* ctx, const DcnShape& s, const Args& args) const {
    return Core::Run(ctx, op_, DTypeOf(ctx->input_dtype(0)), s, args);
  }

  const Op op_;
  Attrs attrs_;
};

template <typename Core>
class ForwardOp : public DcnOpKernel<Core> {
 public:
  explicit ForwardOp(tensorflow::OpKernelConstruction* ctx)
      : DcnOpKernel<Core>(ctx, Op::kForward) {}

  void Compute(OpKernelContext* ctx) override {
    Operands o;
    DcnShape s;
    OP_REQUIRES_OK(ctx, this->ReadAndCheck(ctx, &o, &s));
    Tensor* output;
    OP_REQUIRES_OK(ctx,
                   ctx->allocate_output(0, {s.batch, s.out_h, s.out_w, s.out_channels}, &output));
    if (s.pixels() == 0) return;
    const ForwardArgs args{o.data("input"),  o.data("offset"), o.data("mask"),
                           o.data("weight"), o.data("bias"),   output->data()};
    OP_REQUIRES_OK(ctx, this->Run(ctx, s, args));
  }
};

template <typename Core>
class BackwardInputOp : public DcnOpKernel<Core> {
 public:
  explicit BackwardInputOp(tensorflow::OpKernelConstruction* ctx)
      : DcnOpKernel<Core>(ctx, Op::kBackwardInput) {}

  void Compute(OpKernelContext* ctx) override {
    Operands o;
    DcnShape s;
    OP_REQUIRES_OK(ctx, this->ReadAndCheck(ctx, &o, &s));
    Tensor *grad_input, *grad_offset, *grad_mask = nullptr;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, o["input"].shape(), &grad_input));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(1, o["offset"].shape(), &grad_offset));
    tensorflow::OpOutputList grad_masks;
    OP_REQUIRES_OK(ctx, ctx->output_list("grad_mask", &grad_masks));
    if (s.has_mask) OP_REQUIRES_OK(ctx, grad_masks.allocate(0, o["mask"].shape(), &grad_mask));
    if (s.pixels() == 0) return;
    const BackwardInputArgs args{o.data("grad_output"), o.data("input"),      o.data("offset"),
                                 o.data("mask"),        o.data("weight"),     grad_input->data(),
                                 grad_offset->data(),   DataOrNull(grad_mask)};
    OP_REQUIRES_OK(ctx, this->Run(ctx, s, args));
  }
};

template <typename Core>
class BackwardWeightOp : public DcnOpKernel<Core> {
 public:
  explicit BackwardWeightOp(tensorflow::OpKernelConstruction* ctx)
      : DcnOpKernel<Core>(ctx, Op::kBackwardWeight) {}

  void Compute(OpKernelContext* ctx) override {
    Operands o;
    DcnShape s;
    OP_REQUIRES_OK(ctx, this->ReadAndCheck(ctx, &o, &s));
    Tensor *grad_weight, *grad_bias = nullptr;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(
                            0, {s.kernel_h, s.kernel_w, s.in_channels_per_group(), s.out_channels},
                            &grad_weight));
    tensorflow::OpOutputList grad_biases;
    OP_REQUIRES_OK(ctx, ctx->output_list("grad_bias", &grad_biases));
    if (s.has_bias) OP_REQUIRES_OK(ctx, grad_biases.allocate(0, {s.out_channels}, &grad_bias));
    // With an empty batch the gradients are zero: the core writes them.
    const BackwardWeightArgs args{o.data("grad_output"), o.data("input"),
                                  o.data("offset"),      o.data("mask"),
                                  grad_weight->data(),   DataOrNull(grad_bias)};
    OP_REQUIRES_OK(ctx, this->Run(ctx, s, args));
  }
};

#define REGISTER_DCN_KERNELS(DEVICE, CORE, T)                                                     \
  REGISTER_KERNEL_BUILDER(Name("DCNv2Forward").Device(tensorflow::DEVICE).TypeConstraint<T>("T"), \
                          ForwardOp<CORE>);                                                       \
  REGISTER_KERNEL_BUILDER(                                                                        \
      Name("DCNv2BackwardInput").Device(tensorflow::DEVICE).TypeConstraint<T>("T"),               \
      BackwardInputOp<CORE>);                                                                     \
  REGISTER_KERNEL_BUILDER(                                                                        \
      Name("DCNv2BackwardWeight").Device(tensorflow::DEVICE).TypeConstraint<T>("T"),              \
      BackwardWeightOp<CORE>);

#define REGISTER_CPU(T) REGISTER_DCN_KERNELS(DEVICE_CPU, CpuCore, T)
TF_CALL_half(REGISTER_CPU);
TF_CALL_bfloat16(REGISTER_CPU);
TF_CALL_float(REGISTER_CPU);
TF_CALL_double(REGISTER_CPU);
#undef REGISTER_CPU

#if GOOGLE_CUDA
#define REGISTER_GPU(T) REGISTER_DCN_KERNELS(DEVICE_GPU, CudaCore, T)
TF_CALL_half(REGISTER_GPU);
TF_CALL_bfloat16(REGISTER_GPU);
TF_CALL_float(REGISTER_GPU);
TF_CALL_double(REGISTER_GPU);
#undef REGISTER_GPU
#endif  // GOOGLE_CUDA

}  // namespace
}  // namespace tensorflow_dcn
