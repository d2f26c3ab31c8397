// Registration of DCNv2Forward, DCNv2BackwardInput and DCNv2BackwardWeight with their shape
// functions. The optional mask and bias are list inputs of length num_masks / num_biases (0 or 1),
// so callers without them pass nothing rather than dummy tensors.
#include "tensorflow/core/framework/common_shape_fns.h"
#include "tensorflow/core/framework/op.h"
#include "tensorflow/core/framework/shape_inference.h"
#include "tensorflow_dcn/cc/core/problem.h"
#include "tensorflow_dcn/cc/tf/attrs.h"

namespace tensorflow_dcn {
namespace {

using tensorflow::shape_inference::DimensionHandle;
using tensorflow::shape_inference::InferenceContext;
using tensorflow::shape_inference::ShapeHandle;

// c->WithRank with an error that names the operand.
absl::Status WithRankNamed(InferenceContext* c, ShapeHandle shape, int rank, const char* name,
                           ShapeHandle* out) {
  if (!c->WithRank(shape, rank, out).ok()) {
    return InvalidArgument(name, " must be rank ", rank, ", got shape ", c->DebugString(shape));
  }
  return absl::OkStatus();
}

// Output size of one axis, unknown when the input size is.
absl::Status OutputDim(InferenceContext* c, DimensionHandle in, int kernel, int stride, int pad,
                       int dilation, DimensionHandle* out) {
  if (!c->ValueKnown(in)) {
    *out = c->UnknownDim();
    return absl::OkStatus();
  }
  const int64_t size = ConvOutputSize(c->Value(in), kernel, stride, pad, dilation);
  if (size < 1) {
    return InvalidArgument("output size would be < 1: input size ", c->Value(in),
                           " is too small for kernel ", kernel, ", stride ", stride, ", pad ", pad,
                           ", dilation ", dilation);
  }
  *out = c->MakeDim(size);
  return absl::OkStatus();
}

// Requires `dim` to be a multiple of `divisor` when known.
absl::Status CheckDivisible(InferenceContext* c, DimensionHandle dim, int64_t divisor,
                            const char* what, const char* by) {
  if (c->ValueKnown(dim) && c->Value(dim) % divisor != 0) {
    return InvalidArgument(what, " (", c->Value(dim), ") must be divisible by ", by, " (", divisor,
                           ")");
  }
  return absl::OkStatus();
}

// Checks ranks and channel relations of the operands present and returns the output's
// [N, Ho, Wo] and Cout (Cout from the weight or grad_output, whichever the op has).
struct Inferred {
  DimensionHandle batch, out_h, out_w, in_channels, out_channels;
};

// The dims of input `index` when its shape is fully known.
bool KnownDims(InferenceContext* c, int index, Dims* d) {
  ShapeHandle shape = c->input(index);
  if (!c->FullyDefined(shape)) return false;
  d->rank = c->Rank(shape);
  for (int i = 0; i < d->rank && i < 8; ++i) d->size[i] = c->Value(c->Dim(shape, i));
  return true;
}

// When every operand's shape is known, the core's check of the whole problem, so that graph
// construction, the kernels and the XLA lowering reject a problem with the same message.
absl::Status CheckWhenKnown(InferenceContext* c, Op op, const Attrs& a, int input_idx,
                            int offset_idx, int mask_idx, int weight_idx, int bias_idx,
                            int grad_output_idx) {
  OperandDims dims;
  const std::pair<int, Dims*> operands[] = {{input_idx, &dims.input},
                                            {offset_idx, &dims.offset},
                                            {a.has_mask ? mask_idx : -1, &dims.mask},
                                            {weight_idx, &dims.weight},
                                            {bias_idx, &dims.bias},
                                            {grad_output_idx, &dims.grad_output}};
  for (const auto& operand : operands) {
    if (operand.first >= 0 && !KnownDims(c, operand.first, operand.second)) {
      return absl::OkStatus();
    }
  }
  DcnShape s;
  const std::string message = CheckProblem(op, a, dims, &s);
  if (!message.empty()) return absl::InvalidArgumentError(message);
  return absl::OkStatus();
}

absl::Status InferCommon(InferenceContext* c, Op op, int input_idx, int offset_idx, int mask_idx,
                         int weight_idx, int bias_idx, int grad_output_idx, Inferred* r) {
  Attrs a;
  TF_RETURN_IF_ERROR(ReadAttrs(c, op, &a));
  TF_RETURN_IF_ERROR(CheckWhenKnown(c, op, a, input_idx, offset_idx, mask_idx, weight_idx, bias_idx,
                                    grad_output_idx));
  ShapeHandle input, offset;
  TF_RETURN_IF_ERROR(WithRankNamed(c, c->input(input_idx), 4, "input", &input));
  TF_RETURN_IF_ERROR(WithRankNamed(c, c->input(offset_idx), 4, "offset", &offset));
  r->batch = c->Dim(input, 0);
  r->in_channels = c->Dim(input, 3);
  TF_RETURN_IF_ERROR(CheckDivisible(c, r->in_channels, a.groups, "input channels", "groups"));
  TF_RETURN_IF_ERROR(CheckDivisible(c, r->in_channels, a.deformable_groups, "input channels",
                                    "deformable_groups"));
  TF_RETURN_IF_ERROR(
      OutputDim(c, c->Dim(input, 1), a.kernel_h, a.stride_h, a.pad_h, a.dilation_h, &r->out_h));
  TF_RETURN_IF_ERROR(
      OutputDim(c, c->Dim(input, 2), a.kernel_w, a.stride_w, a.pad_w, a.dilation_w, &r->out_w));

  const int64_t mask_channels = int64_t{a.deformable_groups} * a.kernel_h * a.kernel_w;
  ShapeHandle expected_offset =
      c->MakeShape({r->batch, r->out_h, r->out_w, c->MakeDim(2 * mask_channels)});
  if (!c->Merge(offset, expected_offset, &offset).ok()) {
    return InvalidArgument(
        "offset must have shape [N, Ho, Wo, 2*deformable_groups*kernel_h*kernel_w] = ",
        c->DebugString(expected_offset), ", got ", c->DebugString(c->input(offset_idx)));
  }
  if (a.has_mask) {
    ShapeHandle mask;
    TF_RETURN_IF_ERROR(WithRankNamed(c, c->input(mask_idx), 4, "mask", &mask));
    ShapeHandle expected = c->MakeShape({r->batch, r->out_h, r->out_w, c->MakeDim(mask_channels)});
    if (!c->Merge(mask, expected, &mask).ok()) {
      return InvalidArgument(
          "mask must have shape [N, Ho, Wo, deformable_groups*kernel_h*kernel_w] = ",
          c->DebugString(expected), ", got ", c->DebugString(c->input(mask_idx)));
    }
  }
  r->out_channels = c->UnknownDim();
  if (weight_idx >= 0) {
    ShapeHandle weight;
    TF_RETURN_IF_ERROR(WithRankNamed(c, c->input(weight_idx), 4, "weight", &weight));
    DimensionHandle cin_per_group = c->UnknownDim();
    if (c->ValueKnown(r->in_channels))
      cin_per_group = c->MakeDim(c->Value(r->in_channels) / a.groups);
    ShapeHandle expected = c->MakeShape(
        {c->MakeDim(a.kernel_h), c->MakeDim(a.kernel_w), cin_per_group, c->UnknownDim()});
    if (!c->Merge(weight, expected, &weight).ok()) {
      return InvalidArgument(
          "weight must have shape [kernel_h, kernel_w, input channels / groups, Cout] = ",
          c->DebugString(expected), ", got ", c->DebugString(c->input(weight_idx)));
    }
    r->out_channels = c->Dim(weight, 3);
  }
  if (grad_output_idx >= 0) {
    ShapeHandle grad;
    TF_RETURN_IF_ERROR(WithRankNamed(c, c->input(grad_output_idx), 4, "grad_output", &grad));
    ShapeHandle expected = c->MakeShape({r->batch, r->out_h, r->out_w, r->out_channels});
    if (!c->Merge(grad, expected, &grad).ok()) {
      return InvalidArgument("grad_output must have shape ", c->DebugString(expected), ", got ",
                             c->DebugString(c->input(grad_output_idx)));
    }
    r->out_channels = c->Dim(grad, 3);
  }
  return CheckDivisible(c, r->out_channels, a.groups, "output channels", "groups");
}

// Input positions: lists expand in place, so the index of later inputs depends on num_masks.
int NumMasks(InferenceContext* c) {
  int n = 1;
  return c->GetAttr("num_masks", &n).ok() ? n : 1;
}

absl::Status ForwardShape(InferenceContext* c) {
  // input, offset, mask[num_masks], weight, bias[num_biases]
  const int m = NumMasks(c);
  int num_biases = 1;
  TF_RETURN_IF_ERROR(c->GetAttr("num_biases", &num_biases));
  Inferred r;
  TF_RETURN_IF_ERROR(
      InferCommon(c, Op::kForward, 0, 1, 2, 2 + m, num_biases == 1 ? 3 + m : -1, -1, &r));
  if (num_biases == 1) {
    ShapeHandle bias;
    TF_RETURN_IF_ERROR(WithRankNamed(c, c->input(3 + m), 1, "bias", &bias));
    DimensionHandle merged;
    if (!c->Merge(c->Dim(bias, 0), r.out_channels, &merged).ok()) {
      return InvalidArgument("bias must have shape [Cout], got ", c->DebugString(bias));
    }
  }
  c->set_output(0, c->MakeShape({r.batch, r.out_h, r.out_w, r.out_channels}));
  return absl::OkStatus();
}

absl::Status BackwardInputShape(InferenceContext* c) {
  // grad_output, input, offset, mask[num_masks], weight -> grad_input, grad_offset, grad_mask[]
  const int m = NumMasks(c);
  Inferred r;
  TF_RETURN_IF_ERROR(InferCommon(c, Op::kBackwardInput, 1, 2, 3, 3 + m, -1, 0, &r));
  c->set_output(0, c->input(1));
  c->set_output(1, c->input(2));
  if (m == 1) c->set_output(2, c->input(3));
  return absl::OkStatus();
}

absl::Status BackwardWeightShape(InferenceContext* c) {
  // grad_output, input, offset, mask[num_masks] -> grad_weight, grad_bias[num_grad_biases]
  Inferred r;
  TF_RETURN_IF_ERROR(InferCommon(c, Op::kBackwardWeight, 1, 2, 3, -1, -1, 0, &r));
  Attrs a;
  TF_RETURN_IF_ERROR(ReadAttrs(c, Op::kBackwardWeight, &a));
  DimensionHandle cin_per_group = c->UnknownDim();
  if (c->ValueKnown(r.in_channels)) cin_per_group = c->MakeDim(c->Value(r.in_channels) / a.groups);
  c->set_output(0, c->MakeShape({c->MakeDim(a.kernel_h), c->MakeDim(a.kernel_w), cin_per_group,
                                 r.out_channels}));
  if (a.has_bias) c->set_output(1, c->MakeShape({r.out_channels}));
  return absl::OkStatus();
}

}  // namespace
}  // namespace tensorflow_dcn

using tensorflow_dcn::BackwardInputShape;
using tensorflow_dcn::BackwardWeightShape;
using tensorflow_dcn::ForwardShape;

// The attribute block is spliced into each registration below.
#define DCN_V2_ATTRS                          \
  .Attr("T: {half, bfloat16, float, double}") \
      .Attr("kernel_h: int")                  \
      .Attr("kernel_w: int")                  \
      .Attr("stride_h: int = 1")              \
      .Attr("stride_w: int = 1")              \
      .Attr("pad_h: int = 0")                 \
      .Attr("pad_w: int = 0")                 \
      .Attr("dilation_h: int = 1")            \
      .Attr("dilation_w: int = 1")            \
      .Attr("groups: int = 1")                \
      .Attr("deformable_groups: int = 1")     \
      .Attr("num_masks: int >= 0 = 1")

REGISTER_OP("DCNv2Forward")
    .Input("input: T")
    .Input("offset: T")
    .Input("mask: num_masks * T")
    .Input("weight: T")
    .Input("bias: num_biases * T")
    .Output("output: T") DCN_V2_ATTRS.Attr("num_biases: int >= 0 = 1")
    .SetShapeFn(ForwardShape)
    .Doc(R"doc(
Modulated deformable convolution (DCNv2), NHWC.

input: [N, H, W, Cin].
offset: [N, Ho, Wo, 2*deformable_groups*kernel_h*kernel_w], (dy, dx) per group and tap.
mask: zero or one tensor [N, Ho, Wo, deformable_groups*kernel_h*kernel_w]; none means 1.
weight: [kernel_h, kernel_w, Cin/groups, Cout].
bias: zero or one tensor [Cout].
output: [N, Ho, Wo, Cout].
)doc");

REGISTER_OP("DCNv2BackwardInput")
    .Input("grad_output: T")
    .Input("input: T")
    .Input("offset: T")
    .Input("mask: num_masks * T")
    .Input("weight: T")
    .Output("grad_input: T")
    .Output("grad_offset: T")
    .Output("grad_mask: num_masks * T") DCN_V2_ATTRS.SetShapeFn(BackwardInputShape)
    .Doc("Gradients of DCNv2Forward with respect to input, offset and mask.");

REGISTER_OP("DCNv2BackwardWeight")
    .Input("grad_output: T")
    .Input("input: T")
    .Input("offset: T")
    .Input("mask: num_masks * T")
    .Output("grad_weight: T")
    .Output("grad_bias: num_grad_biases * T") DCN_V2_ATTRS.Attr("num_grad_biases: int >= 0 = 1")
    .SetShapeFn(BackwardWeightShape)
    .Doc("Gradients of DCNv2Forward with respect to weight and bias.");
