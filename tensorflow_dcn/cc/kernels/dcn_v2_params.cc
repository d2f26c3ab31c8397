#include "tensorflow_dcn/cc/kernels/dcn_v2_params.h"

#include <string>

#include "absl/strings/str_cat.h"
#include "tensorflow/core/platform/errors.h"
#include "tensorflow/core/util/overflow.h"

namespace tensorflow_dcn {
namespace {

using tensorflow::TensorShape;

// Kernels index within one image with 32-bit integers and place samples with float coordinates.
constexpr int64_t kMaxImageElements = (int64_t{1} << 31) - 1;
constexpr int64_t kMaxExactCoordinate = int64_t{1} << 24;  // float32 holds integers exactly to here

absl::Status CheckRank(const TensorShape& t, int rank, const char* name) {
  if (t.dims() != rank) {
    return InvalidArgument(name, " must be rank ", rank, ", got shape ", t.DebugString());
  }
  return absl::OkStatus();
}

// Product of the factors, or -1 on overflow.
int64_t Product(std::initializer_list<int64_t> factors) {
  int64_t p = 1;
  for (int64_t f : factors) {
    p = tensorflow::MultiplyWithoutOverflow(p, f);
    if (p < 0) return -1;
  }
  return p;
}

absl::Status CheckImageSize(std::initializer_list<int64_t> dims, const char* name) {
  const int64_t n = Product(dims);
  if (n < 0 || n > kMaxImageElements) {
    return InvalidArgument(name, " has ", n < 0 ? std::string("too many") : absl::StrCat(n),
                           " elements per image; at most ", kMaxImageElements,
                           " (32-bit indexing within an image) are supported");
  }
  return absl::OkStatus();
}

absl::Status CheckSpatial(const TensorShape& t, int64_t n, int64_t h, int64_t w, const char* name) {
  if (t.dim_size(0) != n) {
    return InvalidArgument(name, " batch size ", t.dim_size(0), " must equal the input's, ", n);
  }
  if (t.dim_size(1) != h || t.dim_size(2) != w) {
    return InvalidArgument(name, " spatial size ", t.dim_size(1), "x", t.dim_size(2),
                           " must equal the output size ", h, "x", w);
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status ValidateDcnAttrs(const DcnAttrs& a) {
  const std::pair<const char*, int> at_least_one[] = {
      {"kernel_h", a.kernel_h},     {"kernel_w", a.kernel_w},     {"stride_h", a.stride_h},
      {"stride_w", a.stride_w},     {"dilation_h", a.dilation_h}, {"dilation_w", a.dilation_w},
      {"groups", a.groups},         {"deformable_groups", a.deformable_groups}};
  for (const auto& f : at_least_one) {
    if (f.second < 1) return InvalidArgument(f.first, " must be at least 1, got ", f.second);
    if (f.second > kMaxExactCoordinate) {
      return InvalidArgument(f.first, " must be at most ", kMaxExactCoordinate, ", got ", f.second);
    }
  }
  for (const auto& f : {std::make_pair("pad_h", a.pad_h), std::make_pair("pad_w", a.pad_w)}) {
    if (f.second < 0) return InvalidArgument(f.first, " must not be negative, got ", f.second);
    if (f.second > kMaxExactCoordinate) {
      return InvalidArgument(f.first, " must be at most ", kMaxExactCoordinate, ", got ", f.second);
    }
  }
  for (const auto& f : {std::make_pair("num_masks", a.num_masks),
                        std::make_pair("num_biases", a.num_biases)}) {
    if (f.second != 0 && f.second != 1) {
      return InvalidArgument(f.first, " must be 0 or 1, got ", f.second);
    }
  }
  return absl::OkStatus();
}

absl::Status MakeDcnShape(const DcnAttrs& a, const DcnOperands& ops, DcnShape* s) {
  TF_RETURN_IF_ERROR(ValidateDcnAttrs(a));
  const TensorShape& input = *ops.input;
  const TensorShape& offset = *ops.offset;
  TF_RETURN_IF_ERROR(CheckRank(input, 4, "input"));
  TF_RETURN_IF_ERROR(CheckRank(offset, 4, "offset"));
  if (a.num_masks != (ops.mask != nullptr) || a.num_biases != (ops.bias != nullptr)) {
    return InvalidArgument("num_masks/num_biases do not match the operands given");
  }
  if (ops.mask) TF_RETURN_IF_ERROR(CheckRank(*ops.mask, 4, "mask"));
  if (ops.weight) TF_RETURN_IF_ERROR(CheckRank(*ops.weight, 4, "weight"));
  if (ops.bias) TF_RETURN_IF_ERROR(CheckRank(*ops.bias, 1, "bias"));
  if (ops.grad_output) TF_RETURN_IF_ERROR(CheckRank(*ops.grad_output, 4, "grad_output"));

  s->batch = input.dim_size(0);
  s->in_h = input.dim_size(1);
  s->in_w = input.dim_size(2);
  s->in_channels = input.dim_size(3);
  s->kernel_h = a.kernel_h;
  s->kernel_w = a.kernel_w;
  s->stride_h = a.stride_h;
  s->stride_w = a.stride_w;
  s->pad_h = a.pad_h;
  s->pad_w = a.pad_w;
  s->dilation_h = a.dilation_h;
  s->dilation_w = a.dilation_w;
  s->groups = a.groups;
  s->deformable_groups = a.deformable_groups;
  s->has_mask = a.num_masks == 1;
  s->has_bias = a.num_biases == 1;

  if (s->in_h < 1 || s->in_w < 1 || s->in_channels < 1) {
    return InvalidArgument("input height, width and channels must be at least 1, got shape ",
                           input.DebugString());
  }
  if (s->in_channels % a.groups != 0) {
    return InvalidArgument("input channels (", s->in_channels, ") must be divisible by groups (",
                           a.groups, ")");
  }
  if (s->in_channels % a.deformable_groups != 0) {
    return InvalidArgument("input channels (", s->in_channels,
                           ") must be divisible by deformable_groups (", a.deformable_groups, ")");
  }
  if (s->in_h + 2 * int64_t{a.pad_h} > kMaxExactCoordinate ||
      s->in_w + 2 * int64_t{a.pad_w} > kMaxExactCoordinate) {
    return InvalidArgument("input height and width plus padding must be at most ",
                           kMaxExactCoordinate, " so that sample coordinates are exact, got ",
                           input.DebugString(), " with pad ", a.pad_h, "x", a.pad_w);
  }

  if (ops.weight) {
    const TensorShape& w = *ops.weight;
    if (w.dim_size(0) != a.kernel_h || w.dim_size(1) != a.kernel_w) {
      return InvalidArgument("weight spatial size ", w.dim_size(0), "x", w.dim_size(1),
                             " must equal kernel_h x kernel_w = ", a.kernel_h, "x", a.kernel_w);
    }
    if (w.dim_size(2) != s->in_channels / a.groups) {
      return InvalidArgument("weight input channels (", w.dim_size(2),
                             ") must equal input channels / groups = ", s->in_channels, "/",
                             a.groups, " = ", s->in_channels / a.groups);
    }
    s->out_channels = w.dim_size(3);
  } else {
    s->out_channels = ops.grad_output->dim_size(3);
  }
  if (s->out_channels < 1) {
    return InvalidArgument("output channels must be at least 1, got ", s->out_channels);
  }
  if (s->out_channels % a.groups != 0) {
    return InvalidArgument("output channels (", s->out_channels, ") must be divisible by groups (",
                           a.groups, ")");
  }
  if (ops.bias && ops.bias->dim_size(0) != s->out_channels) {
    return InvalidArgument("bias must have shape [", s->out_channels, "] (output channels), got ",
                           ops.bias->DebugString());
  }

  s->out_h = ConvOutputSize(s->in_h, a.kernel_h, a.stride_h, a.pad_h, a.dilation_h);
  s->out_w = ConvOutputSize(s->in_w, a.kernel_w, a.stride_w, a.pad_w, a.dilation_w);
  if (s->out_h < 1 || s->out_w < 1) {
    return InvalidArgument("output size would be ", s->out_h, "x", s->out_w,
                           " (< 1): input ", s->in_h, "x", s->in_w, " is too small for kernel ",
                           a.kernel_h, "x", a.kernel_w, " with dilation ", a.dilation_h, "x",
                           a.dilation_w, " and pad ", a.pad_h, "x", a.pad_w);
  }

  const int64_t taps = Product({a.kernel_h, a.kernel_w});
  const int64_t mask_channels = Product({a.deformable_groups, taps});
  TF_RETURN_IF_ERROR(CheckImageSize({s->in_h, s->in_w, s->in_channels}, "input"));
  TF_RETURN_IF_ERROR(CheckImageSize({s->out_h, s->out_w, s->out_channels}, "output"));
  TF_RETURN_IF_ERROR(CheckImageSize({s->out_h, s->out_w, 2, mask_channels}, "offset"));
  TF_RETURN_IF_ERROR(CheckImageSize({taps, s->in_channels}, "weight"));

  TF_RETURN_IF_ERROR(CheckSpatial(offset, s->batch, s->out_h, s->out_w, "offset"));
  if (offset.dim_size(3) != 2 * mask_channels) {
    return InvalidArgument("offset must have 2*deformable_groups*kernel_h*kernel_w = ",
                           2 * mask_channels, " channels, got ", offset.dim_size(3));
  }
  if (ops.mask) {
    TF_RETURN_IF_ERROR(CheckSpatial(*ops.mask, s->batch, s->out_h, s->out_w, "mask"));
    if (ops.mask->dim_size(3) != mask_channels) {
      return InvalidArgument("mask must have deformable_groups*kernel_h*kernel_w = ",
                             mask_channels, " channels, got ", ops.mask->dim_size(3));
    }
  }
  if (ops.grad_output) {
    const TensorShape& g = *ops.grad_output;
    if (g.dim_size(0) != s->batch || g.dim_size(1) != s->out_h || g.dim_size(2) != s->out_w ||
        g.dim_size(3) != s->out_channels) {
      return InvalidArgument("grad_output must have shape [", s->batch, ", ", s->out_h, ", ",
                             s->out_w, ", ", s->out_channels, "], got ", g.DebugString());
    }
  }
  return absl::OkStatus();
}

}  // namespace tensorflow_dcn
