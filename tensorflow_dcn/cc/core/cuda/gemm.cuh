// Our GEMM: C[M, N] (row-major) = A[M, K] * B[K, N] (+ bias[N]), batched and split over K.
// No cuBLAS: a dynamic cuBLAS would tie the library to one CUDA major version, which TensorFlow
// already chooses and loads for itself.
//
// Two engines:
//  - MmaGemm: tensor cores through mma.sync (sm_80+): fp16 and bf16 (m16n8k16), fp32 as TF32
//    (m16n8k8) or, when TF32 is off, as 3xTF32 (each operand split into a TF32 "big" and "small"
//    part, three products): fp32-level accuracy on tensor cores. 128x128 tiles, 64-byte K steps,
//    4-stage cp.async pipeline, ldmatrix fragment loads. Accumulates in fp32.
//  - SimtGemm: plain FMA for double, and for every type on GPUs before sm_80.
// A and B may each be stored either way (see Layout); tiles keep the global orientation in shared
// memory and the fragment loads transpose where needed, so no operand is ever transposed in memory.
#ifndef TENSORFLOW_DCN_CC_CORE_CUDA_GEMM_CUH_
#define TENSORFLOW_DCN_CC_CORE_CUDA_GEMM_CUH_

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <type_traits>

namespace tensorflow_dcn {
namespace cuda {

// Logical A is [M, K] and B is [K, N]. kRowMajor: A(m, k) at m*ld + k, B(k, n) at k*ld + n.
// kColMajor: A(m, k) at k*ld + m, B(k, n) at n*ld + k.
enum class Layout { kRowMajor, kColMajor };

enum class MathMode {
  kTensorCore,    // fp16/bf16 operands as they are; fp32 operands rounded to TF32
  kTensorCore3x,  // fp32 operands as 3xTF32 (fp32 accuracy)
  kSimt,          // FMA in the accumulator type
};

template <typename TIn, typename TOut>
struct GemmArgs {
  int64_t m = 0, n = 0, k = 0;
  const TIn* a = nullptr;
  int64_t lda = 0, a_batch_stride = 0;
  const TIn* b = nullptr;
  int64_t ldb = 0, b_batch_stride = 0;
  TOut* c = nullptr;
  int64_t ldc = 0, c_batch_stride = 0;
  const TIn* bias = nullptr;  // [N] per batch, added in the epilogue (not with splits)
  int64_t bias_batch_stride = 0;
  int batches = 1;
  // Split over K: split s computes K range [s*k_per_split, (s+1)*k_per_split) into
  // c + s*c_split_stride. The caller reduces the splits.
  int splits = 1;
  int64_t k_per_split = 0;
  int64_t c_split_stride = 0;
};

// Launches C = A*B (+bias) for every batch and split on `stream`.
// TIn: __half, __nv_bfloat16, float or double. TOut: TIn or the accumulator type.
template <typename TIn, typename TOut, Layout kLayoutA, Layout kLayoutB>
cudaError_t LaunchGemm(const GemmArgs<TIn, TOut>& args, MathMode mode, cudaStream_t stream);

// K granularity that k_per_split must be a multiple of.
constexpr int kGemmKAlign = 32;

}  // namespace cuda
}  // namespace tensorflow_dcn

#endif  // TENSORFLOW_DCN_CC_CORE_CUDA_GEMM_CUH_
