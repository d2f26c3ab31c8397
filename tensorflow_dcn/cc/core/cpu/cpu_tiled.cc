// The tiled CPU implementation, compiled once per instruction set: cpu_tiled_kernels.h is
// included in a namespace per instruction set, inside a `#pragma GCC target` region on x86-64.
// Everything defined in a region (the kernels, their lambdas and templates) is compiled for its
// instruction set; everything defined outside (bilinear.h, Eigen, the standard library) keeps the
// baseline and may be inlined into the kernels. So no function shared between variants carries
// wider instructions, and the .so loads and runs on any x86-64 CPU; the variant is chosen at run
// time from the CPU's features.
#include "tensorflow_dcn/cc/core/cpu/cpu_tiled.h"

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <type_traits>
#include <vector>

#include "Eigen/Core"
#include "tensorflow_dcn/cc/core/bilinear.h"
#include "tensorflow_dcn/cc/core/workspace.h"

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define TFDCN_X86_VARIANTS 1
#include <immintrin.h>
#else
#define TFDCN_X86_VARIANTS 0
#endif

namespace tensorflow_dcn {
namespace cpu {
namespace tiled {

#if TFDCN_X86_VARIANTS
#pragma GCC diagnostic push
// GCC 12 warns inside its own _mm512_cvtph_ps/_mm512_cvtps_ph (their "undefined" pass-through).
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC push_options
#pragma GCC target("avx512f,avx512bw,avx512dq,avx512vl,avx2,fma,f16c,bmi,bmi2")
namespace avx512 {
#define TFDCN_VECTOR_BYTES 64
#define TFDCN_F16C 1
#include "tensorflow_dcn/cc/core/cpu/cpu_tiled_kernels.h"
#undef TFDCN_VECTOR_BYTES
#undef TFDCN_F16C
}  // namespace avx512
#pragma GCC pop_options

#pragma GCC push_options
#pragma GCC target("avx2,fma,f16c,bmi,bmi2")
namespace avx2 {
#define TFDCN_VECTOR_BYTES 32
#define TFDCN_F16C 1
#include "tensorflow_dcn/cc/core/cpu/cpu_tiled_kernels.h"
#undef TFDCN_VECTOR_BYTES
#undef TFDCN_F16C
}  // namespace avx2
#pragma GCC pop_options
#pragma GCC diagnostic pop
#endif  // TFDCN_X86_VARIANTS

namespace baseline {
#define TFDCN_VECTOR_BYTES 16
#define TFDCN_F16C 0
#include "tensorflow_dcn/cc/core/cpu/cpu_tiled_kernels.h"
#undef TFDCN_VECTOR_BYTES
#undef TFDCN_F16C
}  // namespace baseline

namespace {

enum class Variant { kBaseline, kAvx2, kAvx512 };

Variant Detect() {
  Variant best = Variant::kBaseline;
#if TFDCN_X86_VARIANTS
  __builtin_cpu_init();
  const bool avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
                    __builtin_cpu_supports("f16c") && __builtin_cpu_supports("bmi") &&
                    __builtin_cpu_supports("bmi2");
  const bool avx512 = avx2 && __builtin_cpu_supports("avx512f") &&
                      __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512dq") &&
                      __builtin_cpu_supports("avx512vl");
  best = avx512 ? Variant::kAvx512 : avx2 ? Variant::kAvx2 : Variant::kBaseline;
#endif
  const char* cap = std::getenv("TFDCN_CPU_ISA");
  if (cap != nullptr && std::strcmp(cap, "avx2") == 0) return std::min(best, Variant::kAvx2);
  if (cap != nullptr && std::strcmp(cap, "baseline") == 0) return Variant::kBaseline;
  return best;
}

Variant Selected() {
  static const Variant variant = Detect();
  return variant;
}

}  // namespace

// Calls the selected variant's `call`.
#if TFDCN_X86_VARIANTS
#define TFDCN_DISPATCH(call) \
  switch (Selected()) {      \
    case Variant::kAvx512:   \
      return avx512::call;   \
    case Variant::kAvx2:     \
      return avx2::call;     \
    case Variant::kBaseline: \
      break;                 \
  }                          \
  return baseline::call
#else
#define TFDCN_DISPATCH(call) return baseline::call
#endif

bool Supports(DType dtype) { return dtype != DType::kDouble; }

const char* InstructionSet() {
  switch (Selected()) {
    case Variant::kAvx512:
      return "avx512";
    case Variant::kAvx2:
      return "avx2";
    case Variant::kBaseline:
      break;
  }
  return "baseline";
}

template <typename T>
size_t WorkspaceBytes(Op op, const DcnShape& s) {
  TFDCN_DISPATCH(WorkspaceBytes<T>(op, s));
}

template <typename T>
void Forward(const DcnShape& s, const T* input, const T* offset, const T* mask, const T* weight,
             const T* bias, T* output, void* workspace, const ParallelFor& parallel_for) {
  TFDCN_DISPATCH(Forward(s, input, offset, mask, weight, bias, output, workspace, parallel_for));
}

template <typename T>
void BackwardInput(const DcnShape& s, const T* grad_output, const T* input, const T* offset,
                   const T* mask, const T* weight, T* grad_input, T* grad_offset, T* grad_mask,
                   void* workspace, const ParallelFor& parallel_for) {
  TFDCN_DISPATCH(BackwardInput(s, grad_output, input, offset, mask, weight, grad_input, grad_offset,
                               grad_mask, workspace, parallel_for));
}

template <typename T>
void BackwardWeight(const DcnShape& s, const T* grad_output, const T* input, const T* offset,
                    const T* mask, T* grad_weight, T* grad_bias, void* workspace,
                    const ParallelFor& parallel_for) {
  TFDCN_DISPATCH(BackwardWeight(s, grad_output, input, offset, mask, grad_weight, grad_bias,
                                workspace, parallel_for));
}

#undef TFDCN_DISPATCH

#define INSTANTIATE(T)                                                                             \
  template size_t WorkspaceBytes<T>(Op, const DcnShape&);                                          \
  template void Forward<T>(const DcnShape&, const T*, const T*, const T*, const T*, const T*, T*,  \
                           void*, const ParallelFor&);                                             \
  template void BackwardInput<T>(const DcnShape&, const T*, const T*, const T*, const T*,          \
                                 const T*, T*, T*, T*, void*, const ParallelFor&);                 \
  template void BackwardWeight<T>(const DcnShape&, const T*, const T*, const T*, const T*, T*, T*, \
                                  void*, const ParallelFor&);
INSTANTIATE(Eigen::half)
INSTANTIATE(Eigen::bfloat16)
INSTANTIATE(float)
#undef INSTANTIATE

}  // namespace tiled
}  // namespace cpu
}  // namespace tensorflow_dcn
