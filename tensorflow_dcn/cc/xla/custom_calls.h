// What the XLA lowering (dcn_xla_kernels.cc) and the FFI handlers (dcn_ffi_handlers.cc) agree
// on: the custom-call targets, their operands and results, and the attributes they carry.
//
// Each op becomes one typed-FFI custom call with a fixed signature, so that absent optional
// operands travel as empty [0] arrays (the attributes say which are real):
//   tfdcn_dcn_v2_forward          (input, offset, mask, weight, bias) -> output
//   tfdcn_dcn_v2_backward_input   (grad_output, input, offset, mask, weight)
//                                     -> (grad_input, grad_offset, grad_mask)
//   tfdcn_dcn_v2_backward_weight  (grad_output, input, offset, mask) -> (grad_weight, grad_bias)
// Attributes (all i64): the ops' ten integer attributes, has_mask, has_bias, and the GPU math
// settings read when the op is compiled, allow_tf32 and deterministic.
#ifndef TENSORFLOW_DCN_CC_XLA_CUSTOM_CALLS_H_
#define TENSORFLOW_DCN_CC_XLA_CUSTOM_CALLS_H_

#include <cstdint>
#include <string>
#include <utility>

#include "tensorflow_dcn/cc/core/problem.h"

namespace tensorflow_dcn {
namespace xla_lowering {

inline const char* TargetName(Op op) {
  switch (op) {
    case Op::kForward:
      return "tfdcn_dcn_v2_forward";
    case Op::kBackwardInput:
      return "tfdcn_dcn_v2_backward_input";
    case Op::kBackwardWeight:
      return "tfdcn_dcn_v2_backward_weight";
  }
  return "";
}

// The GPU math settings of a compiled op.
struct MathSettings {
  bool allow_tf32 = true;
  bool deterministic = false;
};

// (name, value) of every attribute, in one list for writing and reading.
template <typename Fn>
void ForEachAttribute(Attrs& a, MathSettings& m, Fn&& fn) {
  fn("kernel_h", a.kernel_h);
  fn("kernel_w", a.kernel_w);
  fn("stride_h", a.stride_h);
  fn("stride_w", a.stride_w);
  fn("pad_h", a.pad_h);
  fn("pad_w", a.pad_w);
  fn("dilation_h", a.dilation_h);
  fn("dilation_w", a.dilation_w);
  fn("groups", a.groups);
  fn("deformable_groups", a.deformable_groups);
  fn("has_mask", a.has_mask);
  fn("has_bias", a.has_bias);
  fn("allow_tf32", m.allow_tf32);
  fn("deterministic", m.deterministic);
}

// The backend config of a typed-FFI custom call: an MLIR attribute dictionary.
inline std::string BackendConfig(Attrs a, MathSettings m) {
  std::string config;
  ForEachAttribute(a, m, [&](const char* name, auto value) {
    config += (config.empty() ? "{" : ", ") + std::string(name) + " = " +
              std::to_string(static_cast<int64_t>(value)) + " : i64";
  });
  return config + "}";
}

}  // namespace xla_lowering
}  // namespace tensorflow_dcn

#endif  // TENSORFLOW_DCN_CC_XLA_CUSTOM_CALLS_H_
