// Reading the ops' attributes and operand shapes into the core's types (core/problem.h), for the
// OpKernels, the shape functions and the XLA lowerings alike.
#ifndef TENSORFLOW_DCN_CC_TF_ATTRS_H_
#define TENSORFLOW_DCN_CC_TF_ATTRS_H_

#include <array>
#include <string>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "tensorflow_dcn/cc/core/problem.h"

namespace tensorflow_dcn {

// An InvalidArgument error whose message concatenates the arguments.
template <typename... Args>
absl::Status InvalidArgument(const Args&... args) {
  return absl::InvalidArgumentError(absl::StrCat(args...));
}

// The list-length attribute that says whether the op's bias operand is given (forward) or
// grad_bias is wanted (backward weight); the backward input has none.
inline const char* BiasAttrName(Op op) {
  switch (op) {
    case Op::kForward:
      return "num_biases";
    case Op::kBackwardWeight:
      return "num_grad_biases";
    case Op::kBackwardInput:
      break;
  }
  return nullptr;
}

// Reads the attributes of `op` from an OpKernelConstruction, a shape InferenceContext or an
// XLA op's construction context, and checks them (core CheckAttrs).
template <typename Context>
absl::Status ReadAttrs(Context* ctx, Op op, Attrs* a) {
  const std::pair<const char*, int*> fields[] = {
      {"kernel_h", &a->kernel_h},     {"kernel_w", &a->kernel_w},
      {"stride_h", &a->stride_h},     {"stride_w", &a->stride_w},
      {"pad_h", &a->pad_h},           {"pad_w", &a->pad_w},
      {"dilation_h", &a->dilation_h}, {"dilation_w", &a->dilation_w},
      {"groups", &a->groups},         {"deformable_groups", &a->deformable_groups},
  };
  for (const auto& f : fields) {
    absl::Status s = ctx->GetAttr(f.first, f.second);
    if (!s.ok()) return s;
  }
  std::pair<const char*, bool*> lists[] = {{"num_masks", &a->has_mask},
                                           {BiasAttrName(op), &a->has_bias}};
  a->has_bias = false;
  for (const auto& list : lists) {
    if (list.first == nullptr) continue;
    int n = 0;
    absl::Status s = ctx->GetAttr(list.first, &n);
    if (!s.ok()) return s;
    if (n != 0 && n != 1) {
      return absl::InvalidArgumentError(absl::StrCat(list.first, " must be 0 or 1, got ", n));
    }
    *list.second = n == 1;
  }
  const std::string message = CheckAttrs(*a);
  if (!message.empty()) return absl::InvalidArgumentError(message);
  return absl::OkStatus();
}

// The op's operands by name, in the order of its inputs (and of its XLA custom call); absent
// entries are null. mask and bias are list inputs of length 0 or 1.
inline const std::array<const char*, 5>& OperandNames(Op op) {
  static constexpr std::array<const char*, 5> kNames[] = {
      {"input", "offset", "mask", "weight", "bias"},
      {"grad_output", "input", "offset", "mask", "weight"},
      {"grad_output", "input", "offset", "mask", nullptr},
  };
  return kNames[static_cast<int>(op)];
}

// The OperandDims field that holds the operand `name`.
inline Dims* DimsField(OperandDims* dims, const std::string& name) {
  if (name == "input") return &dims->input;
  if (name == "offset") return &dims->offset;
  if (name == "mask") return &dims->mask;
  if (name == "weight") return &dims->weight;
  if (name == "bias") return &dims->bias;
  return &dims->grad_output;
}

// Dims of a TensorShape or xla::Shape (anything with dims() and dim_size(i) / dimensions(i)).
template <typename Shape>
Dims DimsOf(const Shape& shape) {
  Dims d;
  d.rank = static_cast<int>(shape.dims());
  for (int i = 0; i < d.rank && i < 8; ++i) d.size[i] = shape.dim_size(i);
  return d;
}

}  // namespace tensorflow_dcn

#endif  // TENSORFLOW_DCN_CC_TF_ATTRS_H_
