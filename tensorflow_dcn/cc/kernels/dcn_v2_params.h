// Attributes of the DCNv2 ops and the validation of their operands: the TensorFlow side of a
// DcnShape. Shared by the op registrations (shape functions) and the kernels.
#ifndef TENSORFLOW_DCN_CC_KERNELS_DCN_V2_PARAMS_H_
#define TENSORFLOW_DCN_CC_KERNELS_DCN_V2_PARAMS_H_

#include "absl/strings/str_cat.h"
#include "tensorflow/core/framework/tensor_shape.h"
#include "tensorflow/core/platform/status.h"
#include "tensorflow_dcn/cc/kernels/dcn_v2_shape.h"

namespace tensorflow_dcn {

// An InvalidArgument error whose message concatenates the arguments.
template <typename... Args>
absl::Status InvalidArgument(const Args&... args) {
  return absl::InvalidArgumentError(absl::StrCat(args...));
}

struct DcnAttrs {
  int kernel_h = 1, kernel_w = 1;
  int stride_h = 1, stride_w = 1;
  int pad_h = 0, pad_w = 0;
  int dilation_h = 1, dilation_w = 1;
  int groups = 1, deformable_groups = 1;
  int num_masks = 1, num_biases = 1;  // 0 or 1: the optional inputs present
};

// Reads the attributes from an OpKernelConstruction or a shape InferenceContext. Attributes an op
// does not declare keep their defaults.
template <typename Context>
absl::Status ReadDcnAttrs(Context* ctx, DcnAttrs* a) {
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
  absl::Status s = ctx->GetAttr("num_masks", &a->num_masks);
  if (!s.ok()) return s;
  // DCNv2BackwardInput has no bias operand and so no num_biases attribute.
  if (!ctx->GetAttr("num_biases", &a->num_biases).ok()) a->num_biases = 0;
  return absl::OkStatus();
}

// Ranges of the attributes alone (kernel, stride, dilation >= 1, padding >= 0, ...).
absl::Status ValidateDcnAttrs(const DcnAttrs& a);

// The operands an op sees; absent ones are null. Cout comes from `weight` or `grad_output`.
struct DcnOperands {
  const tensorflow::TensorShape* input = nullptr;
  const tensorflow::TensorShape* offset = nullptr;
  const tensorflow::TensorShape* mask = nullptr;
  const tensorflow::TensorShape* weight = nullptr;
  const tensorflow::TensorShape* bias = nullptr;
  const tensorflow::TensorShape* grad_output = nullptr;
};

// Checks every operand against the attributes and each other and fills `shape`. Every failure is
// InvalidArgument naming the operand or attribute at fault.
absl::Status MakeDcnShape(const DcnAttrs& a, const DcnOperands& ops, DcnShape* shape);

}  // namespace tensorflow_dcn

#endif  // TENSORFLOW_DCN_CC_KERNELS_DCN_V2_PARAMS_H_
