// XLA lowerings of DCNv2Forward, DCNv2BackwardInput and DCNv2BackwardWeight: each op becomes one
// typed-FFI custom call (custom_calls.h) that the handlers in dcn_ffi_handlers.cc run on the
// same core as the TensorFlow kernels. The problem is checked when the op is compiled, so bad
// operands fail the compilation with the message the TensorFlow kernels give. The GPU math
// settings (TF32, determinism) are read at compile time and travel as attributes.
#include <string>
#include <vector>

#include "tensorflow/compiler/tf2xla/xla_op_kernel.h"
#include "tensorflow/compiler/tf2xla/xla_op_registry.h"
#include "tensorflow/core/platform/tensor_float_32_utils.h"
#include "tensorflow/core/util/determinism.h"
#include "tensorflow_dcn/cc/core/problem.h"
#include "tensorflow_dcn/cc/tf/attrs.h"
#include "tensorflow_dcn/cc/xla/custom_calls.h"
#include "xla/hlo/builder/xla_builder.h"
#include "xla/literal_util.h"
#include "xla/shape_util.h"

namespace tensorflow_dcn {
namespace {

using tensorflow::XlaOpKernelContext;

// Row-major (descending) layout: the layout the core's pointers assume.
xla::Shape RowMajor(xla::PrimitiveType type, const std::vector<int64_t>& dims) {
  return xla::ShapeUtil::MakeShapeWithDescendingLayout(type, dims);
}

std::vector<int64_t> DimsVector(const Dims& d) {
  return std::vector<int64_t>(d.size, d.size + d.rank);
}

class DcnXlaKernel : public tensorflow::XlaOpKernel {
 public:
  DcnXlaKernel(tensorflow::OpKernelConstruction* ctx, Op op) : XlaOpKernel(ctx), op_(op) {
    OP_REQUIRES_OK(ctx, ReadAttrs(ctx, op_, &attrs_));
  }

  void Compile(XlaOpKernelContext* ctx) override {
    xla::XlaBuilder* builder = ctx->builder();
    const xla::PrimitiveType type = ctx->input_xla_type(0);
    // Gather the operands, then check the problem before anything is emitted.
    OperandDims dims;
    std::vector<xla::XlaOp> operands;
    std::vector<xla::Shape> operand_shapes;
    for (const char* name : OperandNames(op_)) {
      if (name == nullptr) continue;
      std::vector<xla::XlaOp> handles;
      std::vector<tensorflow::TensorShape> shapes;
      OP_REQUIRES_OK(ctx, ctx->InputList(name, &handles, &shapes));
      if (handles.empty()) {
        // An absent optional operand travels as an empty array.
        operands.push_back(
            xla::Broadcast(xla::ConstantLiteral(builder, xla::LiteralUtil::Zero(type)), {0}));
        operand_shapes.push_back(RowMajor(type, {0}));
        continue;
      }
      Dims* slot = DimsField(&dims, name);
      *slot = DimsOf(shapes[0]);
      operands.push_back(handles[0]);
      operand_shapes.push_back(RowMajor(type, DimsVector(*slot)));
    }
    DcnShape s;
    const std::string message = CheckProblem(op_, attrs_, dims, &s);
    OP_REQUIRES(ctx, message.empty(), InvalidArgument(OpName(op_), ": ", message));

    const xla::Shape result = ResultShape(type, dims, s);
    xla_lowering::MathSettings math;
    math.allow_tf32 = tensorflow::tensor_float_32_execution_enabled();
    math.deterministic = tensorflow::OpDeterminismRequired();
    xla::XlaOp call = xla::CustomCallWithLayout(
        builder, xla_lowering::TargetName(op_), operands, result, operand_shapes,
        xla_lowering::BackendConfig(attrs_, math), /*has_side_effect=*/false,
        /*output_operand_aliasing=*/{}, /*literal=*/nullptr, xla::CustomCallSchedule::SCHEDULE_NONE,
        xla::CustomCallApiVersion::API_VERSION_TYPED_FFI);
    SetOutputs(ctx, call, s);
  }

 private:
  // The custom call's result: the output, or a tuple of the gradients (an empty array for a
  // gradient not wanted).
  xla::Shape ResultShape(xla::PrimitiveType type, const OperandDims& dims,
                         const DcnShape& s) const {
    switch (op_) {
      case Op::kForward:
        return RowMajor(type, {s.batch, s.out_h, s.out_w, s.out_channels});
      case Op::kBackwardInput:
        return xla::ShapeUtil::MakeTupleShape(
            {RowMajor(type, DimsVector(dims.input)), RowMajor(type, DimsVector(dims.offset)),
             RowMajor(type, s.has_mask ? DimsVector(dims.mask) : std::vector<int64_t>{0})});
      case Op::kBackwardWeight:
        break;
    }
    return xla::ShapeUtil::MakeTupleShape(
        {RowMajor(type, {s.kernel_h, s.kernel_w, s.in_channels_per_group(), s.out_channels}),
         RowMajor(type, {s.has_bias ? s.out_channels : 0})});
  }

  void SetOutputs(XlaOpKernelContext* ctx, xla::XlaOp call, const DcnShape& s) const {
    switch (op_) {
      case Op::kForward:
        ctx->SetOutput(0, call);
        return;
      case Op::kBackwardInput:
        ctx->SetOutput(0, xla::GetTupleElement(call, 0));
        ctx->SetOutput(1, xla::GetTupleElement(call, 1));
        if (s.has_mask) ctx->SetOutput(2, xla::GetTupleElement(call, 2));
        return;
      case Op::kBackwardWeight:
        ctx->SetOutput(0, xla::GetTupleElement(call, 0));
        if (s.has_bias) ctx->SetOutput(1, xla::GetTupleElement(call, 1));
        return;
    }
  }

  const Op op_;
  Attrs attrs_;
};

template <Op kOp>
class DcnXlaKernelFor : public DcnXlaKernel {
 public:
  explicit DcnXlaKernelFor(tensorflow::OpKernelConstruction* ctx) : DcnXlaKernel(ctx, kOp) {}
};

#define REGISTER_DCN_XLA_KERNELS(DEVICE)                                                           \
  REGISTER_XLA_OP(Name("DCNv2Forward").Device(DEVICE), DcnXlaKernelFor<Op::kForward>);             \
  REGISTER_XLA_OP(Name("DCNv2BackwardInput").Device(DEVICE), DcnXlaKernelFor<Op::kBackwardInput>); \
  REGISTER_XLA_OP(Name("DCNv2BackwardWeight").Device(DEVICE), DcnXlaKernelFor<Op::kBackwardWeight>);

REGISTER_DCN_XLA_KERNELS(tensorflow::DEVICE_CPU_XLA_JIT)
#if GOOGLE_CUDA
// Only where the library has CUDA kernels: the "CUDA" handlers exist then.
REGISTER_DCN_XLA_KERNELS(tensorflow::DEVICE_GPU_XLA_JIT)
#endif

}  // namespace
}  // namespace tensorflow_dcn
