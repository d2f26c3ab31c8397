// See gemm.cuh. The fragment layouts are those of the PTX ISA's mma.sync m16n8k16 (16-bit) and
// m16n8k8 (tf32): thread (g = lane / 4, t = lane % 4) holds A rows g and g + 8, B column g and
// C rows g and g + 8, columns 2t and 2t + 1.
#include "tensorflow_dcn/cc/kernels/cuda/gemm.cuh"

#include <algorithm>
#include <atomic>

#include "tensorflow_dcn/cc/kernels/cuda/device_util.cuh"

namespace tensorflow_dcn {
namespace cuda {
namespace {

// ---------------------------------------------------------------------------------------------
// Tensor-core engine
// ---------------------------------------------------------------------------------------------

constexpr int kThreads = 256;                 // 8 warps: 2 along M x 4 along N
constexpr int kTileM = 128, kTileN = 128;     // block tile
constexpr int kWarpM = 64, kWarpN = 32;       // warp tile: 4 x 4 mma tiles of 16 x 8
constexpr int kStepBytes = 64;                // K bytes per pipeline stage (2 mma k-steps)
constexpr int kStages = 4;

// Shared-memory image of one operand's tile for one stage, in the operand's global orientation.
// K-contiguous: R rows of kStepBytes, each padded by 16 bytes so that the 8 rows an ldmatrix reads
// fall into distinct banks. MN-contiguous: kStepK rows of R elements, padded by 8 elements
// (16 bytes for 16-bit types: conflict-free ldmatrix.trans; 32 bytes for fp32: conflict-free
// scalar fragment loads).
template <typename T, bool kKContiguous, int R>
struct Tile {
  static constexpr int kStepK = kStepBytes / sizeof(T);
  static constexpr int kRows = kKContiguous ? R : kStepK;
  static constexpr int kRowBytes = kKContiguous ? kStepBytes + 16 : (R + 8) * sizeof(T);
  static constexpr int kBytes = kRows * kRowBytes;
  static constexpr int kChunksPerRow = (kKContiguous ? kStepBytes : R * int(sizeof(T))) / 16;
  static constexpr int kChunks = kRows * kChunksPerRow;
  static constexpr int kChunkElems = 16 / sizeof(T);

  // Copies the tile whose MN range starts at mn0 and K range at k0 from global memory; elements
  // outside [.., mn_end) x [.., k_end) are zero. 16-byte chunks go through cp.async when whole and
  // aligned, the rest element by element.
  static __device__ void Load(char* tile, const T* g, int64_t ld, int64_t mn0, int64_t mn_end,
                              int64_t k0, int64_t k_end, bool vector_ok) {
    for (int id = threadIdx.x; id < kChunks; id += kThreads) {
      const int r = id / kChunksPerRow, q = id % kChunksPerRow;
      char* dst = tile + r * kRowBytes + q * 16;
      int64_t mn, k;
      if (kKContiguous) {
        mn = mn0 + r;
        k = k0 + q * kChunkElems;
      } else {
        k = k0 + r;
        mn = mn0 + q * kChunkElems;
      }
      const T* src = g + (kKContiguous ? mn * ld + k : k * ld + mn);
      const bool whole = kKContiguous ? (mn < mn_end && k + kChunkElems <= k_end)
                                      : (k < k_end && mn + kChunkElems <= mn_end);
      if (vector_ok && whole) {
        CpAsync16(dst, src);
      } else {
        T* out = reinterpret_cast<T*>(dst);
        for (int e = 0; e < kChunkElems; ++e) {
          const bool in = kKContiguous ? (mn < mn_end && k + e < k_end) : (k < k_end && mn + e < mn_end);
          out[e] = in ? src[e] : T(0.0f);
        }
      }
    }
  }
};

// Fragments of one 32-byte k-step. A: one 16-row subtile (4 registers). B: two 8-column subtiles
// (4 registers: b0, b1 of the first, then of the second).
template <typename T, bool kKContiguous, int R>
__device__ void LoadFragmentA(const char* tile, int m, int step, uint32_t (&frag)[4], int lane) {
  using G = Tile<T, kKContiguous, R>;
  if constexpr (kKContiguous) {
    LdMatrixX4(frag, tile + (m + (lane & 15)) * G::kRowBytes + step * 32 + (lane >> 4) * 16);
  } else if constexpr (sizeof(T) == 2) {
    const int j = lane >> 3, r = lane & 7;
    const int k = step * 16 + (j >> 1) * 8 + r;
    LdMatrixX4Trans(frag, tile + k * G::kRowBytes + (m + (j & 1) * 8) * 2);
  } else {
    const int g = lane >> 2, t = lane & 3, k = step * 8 + t;
    const float* row0 = reinterpret_cast<const float*>(tile + k * G::kRowBytes);
    const float* row4 = reinterpret_cast<const float*>(tile + (k + 4) * G::kRowBytes);
    frag[0] = __float_as_uint(row0[m + g]);
    frag[1] = __float_as_uint(row0[m + g + 8]);
    frag[2] = __float_as_uint(row4[m + g]);
    frag[3] = __float_as_uint(row4[m + g + 8]);
  }
}

template <typename T, bool kKContiguous, int R>
__device__ void LoadFragmentB(const char* tile, int n, int step, uint32_t (&frag)[4], int lane) {
  using G = Tile<T, kKContiguous, R>;
  const int j = lane >> 3, r = lane & 7;
  if constexpr (kKContiguous) {
    LdMatrixX4(frag, tile + (n + (j >> 1) * 8 + r) * G::kRowBytes + step * 32 + (j & 1) * 16);
  } else if constexpr (sizeof(T) == 2) {
    const int k = step * 16 + (j & 1) * 8 + r;
    LdMatrixX4Trans(frag, tile + k * G::kRowBytes + (n + (j >> 1) * 8) * 2);
  } else {
    const int g = lane >> 2, t = lane & 3, k = step * 8 + t;
    const float* row0 = reinterpret_cast<const float*>(tile + k * G::kRowBytes);
    const float* row4 = reinterpret_cast<const float*>(tile + (k + 4) * G::kRowBytes);
    frag[0] = __float_as_uint(row0[n + g]);
    frag[1] = __float_as_uint(row4[n + g]);
    frag[2] = __float_as_uint(row0[n + 8 + g]);
    frag[3] = __float_as_uint(row4[n + 8 + g]);
  }
}

// One warp tile's k-step: acc[i][j] += A_i * B_j for 4 x 4 subtiles.
template <typename T, MathMode kMode>
__device__ void WarpMma(float (&acc)[4][4][4], const uint32_t (&a)[4][4], const uint32_t (&b)[4][2]) {
  if constexpr (!std::is_same_v<T, float>) {
#pragma unroll
    for (int i = 0; i < 4; ++i)
#pragma unroll
      for (int j = 0; j < 4; ++j) Mma16816<T>(acc[i][j], a[i], b[j]);
  } else if constexpr (kMode == MathMode::kTensorCore) {
    uint32_t at[4][4], bt[4][2];
#pragma unroll
    for (int i = 0; i < 4; ++i)
#pragma unroll
      for (int e = 0; e < 4; ++e) at[i][e] = ToTf32(a[i][e]);
#pragma unroll
    for (int j = 0; j < 4; ++j)
#pragma unroll
      for (int e = 0; e < 2; ++e) bt[j][e] = ToTf32(b[j][e]);
#pragma unroll
    for (int i = 0; i < 4; ++i)
#pragma unroll
      for (int j = 0; j < 4; ++j) Mma1688Tf32(acc[i][j], at[i], bt[j]);
  } else {
    // 3xTF32: x = big + small with both TF32; the small*small term is below fp32 precision.
    uint32_t a_big[4][4], a_small[4][4], b_big[4][2], b_small[4][2];
#pragma unroll
    for (int i = 0; i < 4; ++i)
#pragma unroll
      for (int e = 0; e < 4; ++e) SplitTf32(a[i][e], &a_big[i][e], &a_small[i][e]);
#pragma unroll
    for (int j = 0; j < 4; ++j)
#pragma unroll
      for (int e = 0; e < 2; ++e) SplitTf32(b[j][e], &b_big[j][e], &b_small[j][e]);
#pragma unroll
    for (int i = 0; i < 4; ++i)
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        Mma1688Tf32(acc[i][j], a_small[i], b_big[j]);
        Mma1688Tf32(acc[i][j], a_big[i], b_small[j]);
        Mma1688Tf32(acc[i][j], a_big[i], b_big[j]);
      }
  }
}

template <typename TIn, typename TOut, Layout kLayoutA, Layout kLayoutB, MathMode kMode>
__global__ void __launch_bounds__(kThreads)
    MmaGemmKernel(GemmArgs<TIn, TOut> args, bool a_vector_ok, bool b_vector_ok) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  constexpr bool kAK = kLayoutA == Layout::kRowMajor;
  constexpr bool kBK = kLayoutB == Layout::kColMajor;
  using TileA = Tile<TIn, kAK, kTileM>;
  using TileB = Tile<TIn, kBK, kTileN>;
  constexpr int kStageBytes = TileA::kBytes + TileB::kBytes;
  constexpr int kStepK = TileA::kStepK;
  extern __shared__ __align__(128) char smem[];

  const int batch = blockIdx.z / args.splits, split = blockIdx.z % args.splits;
  const int64_t m0 = int64_t{blockIdx.y} * kTileM, n0 = int64_t{blockIdx.x} * kTileN;
  const int64_t k_begin = args.splits > 1 ? split * args.k_per_split : 0;
  const int64_t k_end = args.splits > 1 ? min(args.k, k_begin + args.k_per_split) : args.k;
  const TIn* a = args.a + batch * args.a_batch_stride;
  const TIn* b = args.b + batch * args.b_batch_stride;
  const int ktiles = k_end > k_begin ? static_cast<int>((k_end - k_begin + kStepK - 1) / kStepK) : 0;

  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int wm = (warp >> 2) * kWarpM, wn = (warp & 3) * kWarpN;

  auto load_stage = [&](int kt) {
    char* stage = smem + (kt % kStages) * kStageBytes;
    const int64_t k0 = k_begin + int64_t{kt} * kStepK;
    TileA::Load(stage, a, args.lda, m0, args.m, k0, k_end, a_vector_ok);
    TileB::Load(stage + TileA::kBytes, b, args.ldb, n0, args.n, k0, k_end, b_vector_ok);
  };

  float acc[4][4][4] = {};
#pragma unroll
  for (int s = 0; s < kStages - 1; ++s) {
    if (s < ktiles) load_stage(s);
    CpAsyncCommit();
  }
  for (int kt = 0; kt < ktiles; ++kt) {
    CpAsyncWait<kStages - 2>();
    __syncthreads();
    if (kt + kStages - 1 < ktiles) load_stage(kt + kStages - 1);
    CpAsyncCommit();
    const char* stage = smem + (kt % kStages) * kStageBytes;
#pragma unroll
    for (int step = 0; step < 2; ++step) {
      uint32_t af[4][4], bf[4][2];
#pragma unroll
      for (int i = 0; i < 4; ++i) LoadFragmentA<TIn, kAK, kTileM>(stage, wm + i * 16, step, af[i], lane);
#pragma unroll
      for (int p = 0; p < 2; ++p) {
        uint32_t r[4];
        LoadFragmentB<TIn, kBK, kTileN>(stage + TileA::kBytes, wn + p * 16, step, r, lane);
        bf[2 * p][0] = r[0];
        bf[2 * p][1] = r[1];
        bf[2 * p + 1][0] = r[2];
        bf[2 * p + 1][1] = r[3];
      }
      WarpMma<TIn, kMode>(acc, af, bf);
    }
  }
  CpAsyncWait<0>();

  TOut* c = args.c + batch * args.c_batch_stride + split * args.c_split_stride;
  const TIn* bias = args.bias ? args.bias + batch * args.bias_batch_stride : nullptr;
  const int g = lane >> 2, t = lane & 3;
#pragma unroll
  for (int i = 0; i < 4; ++i)
#pragma unroll
    for (int j = 0; j < 4; ++j)
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        const int64_t row = m0 + wm + i * 16 + g + h * 8;
        const int64_t col = n0 + wn + j * 8 + 2 * t;
        if (row >= args.m) continue;
#pragma unroll
        for (int e = 0; e < 2; ++e) {
          if (col + e >= args.n) continue;
          float v = acc[i][j][h * 2 + e];
          if (bias) v += static_cast<float>(bias[col + e]);
          c[row * args.ldc + col + e] = FromFloat<TOut>(v);
        }
      }
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
      if (kLayoutA == Layout::kRowMajor) { mn = e / kSimtStepK; k = e % kSimtStepK; }
      else { k = e / kSimtTile; mn = e % kSimtTile; }
      const int64_t gm = m0 + mn, gk = k0 + k;
      as[k][mn] = (gm < args.m && gk < k_end)
                      ? static_cast<Acc>(a[kLayoutA == Layout::kRowMajor ? gm * args.lda + gk : gk * args.lda + gm])
                      : Acc(0);
      if (kLayoutB == Layout::kColMajor) { mn = e / kSimtStepK; k = e % kSimtStepK; }
      else { k = e / kSimtTile; mn = e % kSimtTile; }
      const int64_t gn = n0 + mn, gk2 = k0 + k;
      bs[k][mn] = (gn < args.n && gk2 < k_end)
                      ? static_cast<Acc>(b[kLayoutB == Layout::kRowMajor ? gk2 * args.ldb + gn : gn * args.ldb + gk2])
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

bool VectorOk(const void* p, int64_t ld, int64_t batch_stride, int elem_bytes) {
  return reinterpret_cast<uintptr_t>(p) % 16 == 0 && (ld * elem_bytes) % 16 == 0 &&
         (batch_stride * elem_bytes) % 16 == 0;
}

// Raises the kernel's dynamic shared memory limit once per device (and kernel: the template
// parameter gives each kernel its own flags).
template <auto kKernel>
cudaError_t AllowSharedMemory(int bytes) {
  static std::atomic<uint64_t> done_mask{0};
  int device = 0;
  cudaError_t err = cudaGetDevice(&device);
  if (err != cudaSuccess) return err;
  const uint64_t bit = uint64_t{1} << (device & 63);
  if (done_mask.load(std::memory_order_acquire) & bit) return cudaSuccess;
  err = cudaFuncSetAttribute(kKernel, cudaFuncAttributeMaxDynamicSharedMemorySize, bytes);
  if (err == cudaSuccess) done_mask.fetch_or(bit, std::memory_order_release);
  return err;
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
    constexpr int kSmem =
        kStages * (Tile<TIn, kAK, kTileM>::kBytes + Tile<TIn, kBK, kTileN>::kBytes);
    const dim3 grid((args.n + kTileN - 1) / kTileN, (args.m + kTileM - 1) / kTileM, z);
    const bool a_ok = VectorOk(args.a, args.lda, args.a_batch_stride, sizeof(TIn));
    const bool b_ok = VectorOk(args.b, args.ldb, args.b_batch_stride, sizeof(TIn));
    auto launch = [&](auto mode_tag) {
      constexpr auto kernel = MmaGemmKernel<TIn, TOut, kLayoutA, kLayoutB, decltype(mode_tag)::value>;
      cudaError_t err = AllowSharedMemory<kernel>(kSmem);
      if (err != cudaSuccess) return err;
      kernel<<<grid, kThreads, kSmem, stream>>>(args, a_ok, b_ok);
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
  template cudaError_t LaunchGemm<T, T, Layout::kRowMajor, Layout::kRowMajor>(              \
      const GemmArgs<T, T>&, MathMode, cudaStream_t);                                        \
  template cudaError_t LaunchGemm<T, AccumulatorOf<T>, Layout::kRowMajor, Layout::kColMajor>( \
      const GemmArgs<T, AccumulatorOf<T>>&, MathMode, cudaStream_t);                         \
  template cudaError_t LaunchGemm<T, AccumulatorOf<T>, Layout::kColMajor, Layout::kRowMajor>( \
      const GemmArgs<T, AccumulatorOf<T>>&, MathMode, cudaStream_t);
INSTANTIATE_GEMMS(__half)
INSTANTIATE_GEMMS(__nv_bfloat16)
INSTANTIATE_GEMMS(float)
INSTANTIATE_GEMMS(double)
#undef INSTANTIATE_GEMMS

}  // namespace cuda
}  // namespace tensorflow_dcn
