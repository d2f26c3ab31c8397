#include "tensorflow_dcn/cc/core/problem.h"

#include <limits>
#include <type_traits>
#include <utility>

namespace tensorflow_dcn {
namespace {

// Kernels index within one image with 32-bit integers and place samples with float coordinates.
constexpr int64_t kMaxImageElements = (int64_t{1} << 31) - 1;
constexpr int64_t kMaxExactCoordinate = int64_t{1} << 24;  // float32 holds integers exactly to here

// The message of a failed check: the arguments in order (strings as they are, numbers in
// decimal). No iostreams: the library keeps to the C++ runtime of manylinux_2_27.
std::string Piece(const std::string& s) { return s; }
std::string Piece(const char* s) { return s; }
template <typename Number, typename = std::enable_if_t<std::is_arithmetic_v<Number>>>
std::string Piece(Number n) {
  return std::to_string(n);
}

template <typename... Args>
std::string Message(const Args&... args) {
  return (std::string() + ... + Piece(args));
}

#define DCN_RETURN_IF_MESSAGE(expr)                 \
  do {                                              \
    std::string dcn_message_ = (expr);              \
    if (!dcn_message_.empty()) return dcn_message_; \
  } while (0)

std::string CheckRank(const Dims& t, int rank, const char* name) {
  if (t.rank != rank) return Message(name, " must be rank ", rank, ", got shape ", t.DebugString());
  return "";
}

// Product of the factors, or -1 on overflow.
int64_t Product(std::initializer_list<int64_t> factors) {
  int64_t p = 1;
  for (int64_t f : factors) {
    if (f < 0 || (f != 0 && p > std::numeric_limits<int64_t>::max() / f)) return -1;
    p *= f;
  }
  return p;
}

std::string CheckImageSize(std::initializer_list<int64_t> dims, const char* name) {
  const int64_t n = Product(dims);
  if (n < 0 || n > kMaxImageElements) {
    return Message(name, " has ", n < 0 ? std::string("too many") : std::to_string(n),
                   " elements per image; at most ", kMaxImageElements,
                   " (32-bit indexing within an image) are supported");
  }
  return "";
}

std::string CheckSpatial(const Dims& t, int64_t n, int64_t h, int64_t w, const char* name) {
  if (t.size[0] != n) {
    return Message(name, " batch size ", t.size[0], " must equal the input's, ", n);
  }
  if (t.size[1] != h || t.size[2] != w) {
    return Message(name, " spatial size ", t.size[1], "x", t.size[2],
                   " must equal the output size ", h, "x", w);
  }
  return "";
}

}  // namespace

const char* OpName(Op op) {
  switch (op) {
    case Op::kForward:
      return "DCNv2Forward";
    case Op::kBackwardInput:
      return "DCNv2BackwardInput";
    case Op::kBackwardWeight:
      return "DCNv2BackwardWeight";
  }
  return "?";
}

std::string Dims::DebugString() const {
  if (rank < 0) return "<absent>";
  std::string s = "[";
  constexpr int kKept = sizeof(size) / sizeof(size[0]);
  for (int i = 0; i < rank && i < kKept; ++i) s += (i ? "," : "") + std::to_string(size[i]);
  return s + (rank > kKept ? ",...]" : "]");
}

std::string CheckAttrs(const Attrs& a) {
  const std::pair<const char*, int> at_least_one[] = {
      {"kernel_h", a.kernel_h},     {"kernel_w", a.kernel_w},
      {"stride_h", a.stride_h},     {"stride_w", a.stride_w},
      {"dilation_h", a.dilation_h}, {"dilation_w", a.dilation_w},
      {"groups", a.groups},         {"deformable_groups", a.deformable_groups}};
  for (const auto& f : at_least_one) {
    if (f.second < 1) return Message(f.first, " must be at least 1, got ", f.second);
    if (f.second > kMaxExactCoordinate) {
      return Message(f.first, " must be at most ", kMaxExactCoordinate, ", got ", f.second);
    }
  }
  for (const auto& f : {std::make_pair("pad_h", a.pad_h), std::make_pair("pad_w", a.pad_w)}) {
    if (f.second < 0) return Message(f.first, " must not be negative, got ", f.second);
    if (f.second > kMaxExactCoordinate) {
      return Message(f.first, " must be at most ", kMaxExactCoordinate, ", got ", f.second);
    }
  }
  return "";
}

std::string CheckProblem(Op op, const Attrs& a, const OperandDims& ops, DcnShape* s) {
  DCN_RETURN_IF_MESSAGE(CheckAttrs(a));
  const bool takes_weight = op != Op::kBackwardWeight;
  const bool takes_grad_output = op != Op::kForward;
  const bool takes_bias = op == Op::kForward && a.has_bias;
  if (!ops.input.present() || !ops.offset.present() || ops.weight.present() != takes_weight ||
      ops.grad_output.present() != takes_grad_output) {
    return Message(OpName(op), ": the operands given are not the op's");
  }
  if (a.has_mask != ops.mask.present() || takes_bias != ops.bias.present()) {
    return "num_masks/num_biases do not match the operands given";
  }
  const Dims& input = ops.input;
  const Dims& offset = ops.offset;
  DCN_RETURN_IF_MESSAGE(CheckRank(input, 4, "input"));
  DCN_RETURN_IF_MESSAGE(CheckRank(offset, 4, "offset"));
  if (ops.mask.present()) DCN_RETURN_IF_MESSAGE(CheckRank(ops.mask, 4, "mask"));
  if (ops.weight.present()) DCN_RETURN_IF_MESSAGE(CheckRank(ops.weight, 4, "weight"));
  if (ops.bias.present()) DCN_RETURN_IF_MESSAGE(CheckRank(ops.bias, 1, "bias"));
  if (ops.grad_output.present()) {
    DCN_RETURN_IF_MESSAGE(CheckRank(ops.grad_output, 4, "grad_output"));
  }

  s->batch = input.size[0];
  s->in_h = input.size[1];
  s->in_w = input.size[2];
  s->in_channels = input.size[3];
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
  s->has_mask = a.has_mask;
  s->has_bias = op != Op::kBackwardInput && a.has_bias;

  if (s->in_h < 1 || s->in_w < 1 || s->in_channels < 1) {
    return Message("input height, width and channels must be at least 1, got shape ",
                   input.DebugString());
  }
  if (s->in_channels % a.groups != 0) {
    return Message("input channels (", s->in_channels, ") must be divisible by groups (", a.groups,
                   ")");
  }
  if (s->in_channels % a.deformable_groups != 0) {
    return Message("input channels (", s->in_channels, ") must be divisible by deformable_groups (",
                   a.deformable_groups, ")");
  }
  if (s->in_h + 2 * int64_t{a.pad_h} > kMaxExactCoordinate ||
      s->in_w + 2 * int64_t{a.pad_w} > kMaxExactCoordinate) {
    return Message("input height and width plus padding must be at most ", kMaxExactCoordinate,
                   " so that sample coordinates are exact, got ", input.DebugString(), " with pad ",
                   a.pad_h, "x", a.pad_w);
  }

  if (ops.weight.present()) {
    const Dims& w = ops.weight;
    if (w.size[0] != a.kernel_h || w.size[1] != a.kernel_w) {
      return Message("weight spatial size ", w.size[0], "x", w.size[1],
                     " must equal kernel_h x kernel_w = ", a.kernel_h, "x", a.kernel_w);
    }
    if (w.size[2] != s->in_channels / a.groups) {
      return Message("weight input channels (", w.size[2],
                     ") must equal input channels / groups = ", s->in_channels, "/", a.groups,
                     " = ", s->in_channels / a.groups);
    }
    s->out_channels = w.size[3];
  } else {
    s->out_channels = ops.grad_output.size[3];
  }
  if (s->out_channels < 1) {
    return Message("output channels must be at least 1, got ", s->out_channels);
  }
  if (s->out_channels % a.groups != 0) {
    return Message("output channels (", s->out_channels, ") must be divisible by groups (",
                   a.groups, ")");
  }
  if (ops.bias.present() && ops.bias.size[0] != s->out_channels) {
    return Message("bias must have shape [", s->out_channels, "] (output channels), got ",
                   ops.bias.DebugString());
  }

  s->out_h = ConvOutputSize(s->in_h, a.kernel_h, a.stride_h, a.pad_h, a.dilation_h);
  s->out_w = ConvOutputSize(s->in_w, a.kernel_w, a.stride_w, a.pad_w, a.dilation_w);
  if (s->out_h < 1 || s->out_w < 1) {
    return Message("output size would be ", s->out_h, "x", s->out_w, " (< 1): input ", s->in_h, "x",
                   s->in_w, " is too small for kernel ", a.kernel_h, "x", a.kernel_w,
                   " with dilation ", a.dilation_h, "x", a.dilation_w, " and pad ", a.pad_h, "x",
                   a.pad_w);
  }

  const int64_t taps = Product({a.kernel_h, a.kernel_w});
  const int64_t mask_channels = Product({a.deformable_groups, taps});
  DCN_RETURN_IF_MESSAGE(CheckImageSize({s->in_h, s->in_w, s->in_channels}, "input"));
  DCN_RETURN_IF_MESSAGE(CheckImageSize({s->out_h, s->out_w, s->out_channels}, "output"));
  DCN_RETURN_IF_MESSAGE(CheckImageSize({s->out_h, s->out_w, 2, mask_channels}, "offset"));
  DCN_RETURN_IF_MESSAGE(CheckImageSize({taps, s->in_channels}, "weight"));

  DCN_RETURN_IF_MESSAGE(CheckSpatial(offset, s->batch, s->out_h, s->out_w, "offset"));
  if (offset.size[3] != 2 * mask_channels) {
    return Message("offset must have 2*deformable_groups*kernel_h*kernel_w = ", 2 * mask_channels,
                   " channels, got ", offset.size[3]);
  }
  if (ops.mask.present()) {
    DCN_RETURN_IF_MESSAGE(CheckSpatial(ops.mask, s->batch, s->out_h, s->out_w, "mask"));
    if (ops.mask.size[3] != mask_channels) {
      return Message("mask must have deformable_groups*kernel_h*kernel_w = ", mask_channels,
                     " channels, got ", ops.mask.size[3]);
    }
  }
  if (ops.grad_output.present()) {
    const Dims& g = ops.grad_output;
    if (g.size[0] != s->batch || g.size[1] != s->out_h || g.size[2] != s->out_w ||
        g.size[3] != s->out_channels) {
      return Message("grad_output must have shape [", s->batch, ", ", s->out_h, ", ", s->out_w,
                     ", ", s->out_channels, "], got ", g.DebugString());
    }
  }
  return "";
}

}  // namespace tensorflow_dcn
