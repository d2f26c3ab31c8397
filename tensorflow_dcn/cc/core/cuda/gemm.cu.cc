// See gemm.cuh. The tensor-core engine lives in mma_core.cuh; this file adds the plain GEMM
// kernel (both operands copied with cp.async) and the SIMT engine.
#include "tensorflow_dcn/cc/core/cuda/gemm.cuh"

#include <algorithm>

#include "tensorflow_dcn/cc/core/cuda/mma_core.cuh"

namespace tensorflow_dcn {
namespace cuda {
namespace {

using mma::kTileM;
using mma::kTileN;

template <typename TIn, typename TOut, Layout kLayoutA, Layout kLayoutB, MathMode kMode>
__global__ void __launch_bounds__(mma::kThreads)
    MmaGemmKernel(GemmArgs<TIn, TOut> args, bool a_vector_ok, bool b_vector_ok) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  constexpr bool kAK = kLayoutA == Layout::kRowMajor;
  constexpr bool kBK = kLayoutB == Layout::kColMajor;
  constexpr int kStepK = mma::Tile<TIn, kAK, kTileM>::kStepK;
  extern __shared__ __align__(128) char smem[];

  const int batch = blockIdx.z / args.splits, split = blockIdx.z % args.splits;
  const int64_t m0 = int64_t{blockIdx.y} * kTileM, n0 = int64_t{blockIdx.x} * kTileN;
  const int64_t k_begin = args.splits > 1 ? split * args.k_per_split : 0;
  const int64_t k_end = args.splits > 1 ? min(args.k, k_begin + args.k_per_split) : args.k;
  const int ktiles =
      k_end > k_begin ? static_cast<int>((k_end - k_begin + kStepK - 1) / kStepK) : 0;
  mma::CopyProducer<TIn, kAK, kTileM> pa{
      args.a + batch * args.a_batch_stride, args.lda, m0, args.m, k_begin, k_end, a_vector_ok};
  mma::CopyProducer<TIn, kBK, kTileN> pb{
      args.b + batch * args.b_batch_stride, args.ldb, n0, args.n, k_begin, k_end, b_vector_ok};
  float acc[4][4][4] = {};
  mma::MainLoop<TIn, kMode, kAK, kBK>(ktiles, pa, pb, smem, acc);

  TOut* c = args.c + batch * args.c_batch_stride + split * args.c_split_stride;
  const TIn* bias = args.bias ? args.bias + batch * args.bias_batch_stride : nullptr;
  mma::ForEachAccumulatorPair(acc, [&](int r, int col, float v0, float v1) {
    const int64_t row = m0 + r, n = n0 + col;
    if (row >= args.m) return;
    const float pair[2] = {v0, v1};
#pragma unroll
    for (int e = 0; e < 2; ++e) {
      if (n + e >= args.n) continue;
      float v = pair[e];
      if (bias) v += static_cast<float>(bias[n + e]);
      c[row * args.ldc + n + e] = FromFloat<TOut>(v);
    }
  });
#else
  __trap();  // launched only on sm_80+
#endif
}

// ---------------------------------------------------------------------------------------------
// SIMT engine: 64 x 64 tiles, 4 x 4 outputs per thread.
// ---------------------------------------------------------------------------------------------

constexpr int kSimtTile = 64, kSimtStepK = 16;

template <typename TIn, typename TOut, Layout kLayoutA, Layout kLayoutB>
__global__ void __launch_bounds__(256) SimtGemmKernel(GemmArgs<TIn, TOut> args) {
  using Acc = AccumulatorOf<TIn>;
  __shared__ Acc as[kSimtStepK][kSimtTile + 1];
  __shared__ Acc bs[kSimtStepK][kSimtTile + 1];
  const int batch = blockIdx.z / args.splits, split = blockIdx.z % args.splits;
  const int64_t m0 = int64_t{blockIdx.y} * kSimtTile, n0 = int64_t{blockIdx.x} * kSimtTile;
  const int64_t k_begin = args.splits > 1 ? split * args.k_per_split : 0;
  const int64_t k_end = args.splits > 1 ? min(args.k, k_begin + args.k_per_split) : args.k;
  const TIn* a = args.a + batch * args.a_batch_stride;
  const TIn* b = args.b + batch * args.b_batch_stride;
  const int tx = threadIdx.x % 16, ty = threadIdx.x / 16;
  Acc acc[4][4] = {};
  for (int64_t k0 = k_begin; k0 < k_end; k0 += kSimtStepK) {
    for (int e = threadIdx.x; e < kSimtTile * kSimtStepK; e += 256) {
      // Consecutive threads walk the contiguous dimension (coalesced).
      int mn, k;
      if (kLayoutA == Layout::kRowMajor) {
        mn = e / kSimtStepK;
        k = e % kSimtStepK;
      } else {
        k = e / kSimtTile;
        mn = e % kSimtTile;
      }
      const int64_t gm = m0 + mn, gk = k0 + k;
      as[k][mn] =
          (gm < args.m && gk < k_end)
              ? static_cast<Acc>(
                    a[kLayoutA == Layout::kRowMajor ? gm * args.lda + gk : gk * args.lda + gm])
              : Acc(0);
      if (kLayoutB == Layout::kColMajor) {
        mn = e / kSimtStepK;
        k = e % kSimtStepK;
      } else {
        k = e / kSimtTile;
        mn = e % kSimtTile;
      }
      const int64_t gn = n0 + mn, gk2 = k0 + k;
      bs[k][mn] =
          (gn < args.n && gk2 < k_end)
              ? static_cast<Acc>(
                    b[kLayoutB == Layout::kRowMajor ? gk2 * args.ldb + gn : gn * args.ldb + gk2])
              : Acc(0);
    }
    __syncthreads();
#pragma unroll
    for (int k = 0; k < kSimtStepK; ++k) {
      Acc av[4], bv[4];
#pragma unroll
      for (int i = 0; i < 4; ++i) av[i] = as[k][ty * 4 + i];
#pragma unroll
      for (int j = 0; j < 4; ++j) bv[j] = bs[k][tx * 4 + j];
#pragma unroll
      for (int i = 0; i < 4; ++i)
#pragma unroll
        for (int j = 0; j < 4; ++j) acc[i][j] += av[i] * bv[j];
    }
    __syncthreads();
  }
  TOut* c = args.c + batch * args.c_batch_stride + split * args.c_split_stride;
  const TIn* bias = args.bias ? args.bias + batch * args.bias_batch_stride : nullptr;
  for (int i = 0; i < 4; ++i) {
    const int64_t row = m0 + ty * 4 + i;
    if (row >= args.m) continue;
    for (int j = 0; j < 4; ++j) {
      const int64_t col = n0 + tx * 4 + j;
      if (col >= args.n) continue;
      Acc v = acc[i][j];
      if (bias) v += static_cast<Acc>(bias[col]);
      c[row * args.ldc + col] = static_cast<TOut>(v);
    }
  }
}

}  // namespace

template <typename TIn, typename TOut, Layout kLayoutA, Layout kLayoutB>
cudaError_t LaunchGemm(const GemmArgs<TIn, TOut>& args, MathMode mode, cudaStream_t stream) {
  if (args.m <= 0 || args.n <= 0) return cudaSuccess;
  const unsigned z = static_cast<unsigned>(args.batches * args.splits);
  if (mode == MathMode::kSimt || std::is_same_v<TIn, double>) {
    const dim3 grid((args.n + kSimtTile - 1) / kSimtTile, (args.m + kSimtTile - 1) / kSimtTile, z);
    SimtGemmKernel<TIn, TOut, kLayoutA, kLayoutB><<<grid, 256, 0, stream>>>(args);
    return cudaGetLastError();
  }
  if constexpr (!std::is_same_v<TIn, double>) {
    constexpr bool kAK = kLayoutA == Layout::kRowMajor, kBK = kLayoutB == Layout::kColMajor;
    constexpr int kSmem = mma::kPipelineBytes<TIn, kAK, kBK>;
    const dim3 grid((args.n + kTileN - 1) / kTileN, (args.m + kTileM - 1) / kTileM, z);
    const bool a_ok = VectorOk(args.a, args.lda, args.a_batch_stride, sizeof(TIn));
    const bool b_ok = VectorOk(args.b, args.ldb, args.b_batch_stride, sizeof(TIn));
    auto launch = [&](auto mode_tag) {
      constexpr auto kernel =
          MmaGemmKernel<TIn, TOut, kLayoutA, kLayoutB, decltype(mode_tag)::value>;
      cudaError_t err = mma::AllowSharedMemory<kernel>(kSmem);
      if (err != cudaSuccess) return err;
      kernel<<<grid, mma::kThreads, kSmem, stream>>>(args, a_ok, b_ok);
      return cudaGetLastError();
    };
    if constexpr (std::is_same_v<TIn, float>) {
      if (mode == MathMode::kTensorCore3x) {
        return launch(std::integral_constant<MathMode, MathMode::kTensorCore3x>());
      }
    }
    return launch(std::integral_constant<MathMode, MathMode::kTensorCore>());
  }
  return cudaErrorInvalidValue;
}

// The three products DCNv2 needs, per type (see dcn_v2_cuda.cu.cc):
//   forward        cols (row) x weight (row)      -> T output
//   backward input grad_out (row) x weight^T (col) -> accumulator grad_cols
//   backward weight cols^T (col) x grad_out (row)   -> accumulator partials
#define INSTANTIATE_GEMMS(T)                                                                  \
  template cudaError_t LaunchGemm<T, T, Layout::kRowMajor, Layout::kRowMajor>(                \
      const GemmArgs<T, T>&, MathMode, cudaStream_t);                                         \
  template cudaError_t LaunchGemm<T, AccumulatorOf<T>, Layout::kRowMajor, Layout::kColMajor>( \
      const GemmArgs<T, AccumulatorOf<T>>&, MathMode, cudaStream_t);                          \
  template cudaError_t LaunchGemm<T, AccumulatorOf<T>, Layout::kColMajor, Layout::kRowMajor>( \
      const GemmArgs<T, AccumulatorOf<T>>&, MathMode, cudaStream_t);
INSTANTIATE_GEMMS(__half)
INSTANTIATE_GEMMS(__nv_bfloat16)
INSTANTIATE_GEMMS(float)
INSTANTIATE_GEMMS(double)
#undef INSTANTIATE_GEMMS

}  // namespace cuda
}  // namespace tensorflow_dcn
