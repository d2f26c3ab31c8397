// The tensor-core block engine shared by the plain GEMM (gemm.cu.cc) and the fused DCNv2 kernels
// (fused_sm80.cu.cc): a 128 x 128 block tile computed by 8 warps with mma.sync, fed by a pipeline
// of shared-memory stages that "producers" fill.
//
// A producer fills one operand's tile for one k-step of kStepBytes bytes of K:
//   Issue(kt, tile)  starts k-step kt: cp.async straight into the stage, or global loads into
//                    registers (a gathering producer);
//   Finish(tile)     completes the k-step issued last (registers -> shared memory); the mainloop
//                    calls it after the tensor-core work of the current step, so the loads of a
//                    gathering producer are in flight during that work.
// Fragment layouts are those of the PTX ISA's mma.sync m16n8k16 (16-bit) and m16n8k8 (tf32):
// thread (g = lane / 4, t = lane % 4) holds A rows g and g + 8, B column g and C rows g and g + 8,
// columns 2t and 2t + 1.
#ifndef TENSORFLOW_DCN_CC_CORE_CUDA_MMA_CORE_CUH_
#define TENSORFLOW_DCN_CC_CORE_CUDA_MMA_CORE_CUH_

#include <atomic>
#include <cstdint>
#include <type_traits>

#include "tensorflow_dcn/cc/core/cuda/device_util.cuh"
#include "tensorflow_dcn/cc/core/cuda/gemm.cuh"

namespace tensorflow_dcn {
namespace cuda {
namespace mma {

constexpr int kThreads = 256;              // 8 warps: 2 along M x 4 along N
constexpr int kTileM = 128, kTileN = 128;  // block tile
constexpr int kWarpM = 64, kWarpN = 32;    // warp tile: 4 x 4 mma tiles of 16 x 8
constexpr int kStepBytes = 64;             // K bytes per pipeline stage (2 mma k-steps)
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
          const bool in =
              kKContiguous ? (mn < mn_end && k + e < k_end) : (k < k_end && mn + e < mn_end);
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
__device__ void WarpMma(float (&acc)[4][4][4], const uint32_t (&a)[4][4],
                        const uint32_t (&b)[4][2]) {
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

// Shared memory of the pipeline for operand tiles in the given orientations.
template <typename T, bool kAK, bool kBK>
constexpr int kPipelineBytes =
    kStages * (Tile<T, kAK, kTileM>::kBytes + Tile<T, kBK, kTileN>::kBytes);

// A producer that copies a tile of a matrix in global memory with cp.async.
template <typename T, bool kKContiguous, int R>
struct CopyProducer {
  const T* g;
  int64_t ld, mn0, mn_end, k_begin, k_end;
  bool vector_ok;

  __device__ void Issue(int kt, char* tile) const {
    Tile<T, kKContiguous, R>::Load(tile, g, ld, mn0, mn_end,
                                   k_begin + int64_t{kt} * Tile<T, kKContiguous, R>::kStepK, k_end,
                                   vector_ok);
  }
  __device__ void Finish(char*) const {}
};

// acc += the k-step held in a_tile x b_tile (kAK / kBK: whether the A / B tiles are K-contiguous
// in shared memory, see Tile).
template <typename T, MathMode kMode, bool kAK, bool kBK>
__device__ __forceinline__ void MmaStep(const char* a_tile, const char* b_tile,
                                        float (&acc)[4][4][4]) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int wm = (warp >> 2) * kWarpM, wn = (warp & 3) * kWarpN;
#pragma unroll
  for (int step = 0; step < 2; ++step) {
    uint32_t af[4][4], bf[4][2];
#pragma unroll
    for (int i = 0; i < 4; ++i)
      LoadFragmentA<T, kAK, kTileM>(a_tile, wm + i * 16, step, af[i], lane);
#pragma unroll
    for (int p = 0; p < 2; ++p) {
      uint32_t r[4];
      LoadFragmentB<T, kBK, kTileN>(b_tile, wn + p * 16, step, r, lane);
      bf[2 * p][0] = r[0];
      bf[2 * p][1] = r[1];
      bf[2 * p + 1][0] = r[2];
      bf[2 * p + 1][1] = r[3];
    }
    WarpMma<T, kMode>(acc, af, bf);
  }
}

// acc += A * B over `ktiles` k-steps for this block's tile, the producers filling a pipeline of
// kStages stages. Leaves the pipeline drained and all threads past a barrier, so the caller may
// reuse `smem`.
template <typename T, MathMode kMode, bool kAK, bool kBK, typename ProducerA, typename ProducerB>
__device__ __forceinline__ void MainLoop(int ktiles, ProducerA& pa, ProducerB& pb, char* smem,
                                         float (&acc)[4][4][4]) {
  using TileA = Tile<T, kAK, kTileM>;
  constexpr int kStageBytes = TileA::kBytes + Tile<T, kBK, kTileN>::kBytes;
  auto stage = [&](int kt) { return smem + (kt % kStages) * kStageBytes; };
#pragma unroll
  for (int s = 0; s < kStages - 1; ++s) {
    if (s < ktiles) {
      pa.Issue(s, stage(s));
      pb.Issue(s, stage(s) + TileA::kBytes);
      pa.Finish(stage(s));
      pb.Finish(stage(s) + TileA::kBytes);
    }
    CpAsyncCommit();
  }
  for (int kt = 0; kt < ktiles; ++kt) {
    CpAsyncWait<kStages - 2>();
    __syncthreads();
    const int next = kt + kStages - 1;
    // Stage `next` was consumed in step kt - 1, which every thread finished before the barrier.
    if (next < ktiles) {
      pa.Issue(next, stage(next));
      pb.Issue(next, stage(next) + TileA::kBytes);
    }
    CpAsyncCommit();
    MmaStep<T, kMode, kAK, kBK>(stage(kt), stage(kt) + TileA::kBytes, acc);
    if (next < ktiles) {
      pa.Finish(stage(next));
      pb.Finish(stage(next) + TileA::kBytes);
    }
  }
  CpAsyncWait<0>();
  __syncthreads();
}

// Calls fn(row, col, v0, v1) for each pair of accumulators this thread holds: block-tile row
// `row`, columns col and col + 1.
template <typename Fn>
__device__ __forceinline__ void ForEachAccumulatorPair(const float (&acc)[4][4][4], Fn&& fn) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int wm = (warp >> 2) * kWarpM, wn = (warp & 3) * kWarpN;
  const int g = lane >> 2, t = lane & 3;
#pragma unroll
  for (int i = 0; i < 4; ++i)
#pragma unroll
    for (int j = 0; j < 4; ++j)
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        fn(wm + i * 16 + g + h * 8, wn + j * 8 + 2 * t, acc[i][j][2 * h], acc[i][j][2 * h + 1]);
      }
}

// Raises a kernel's dynamic shared memory limit, once per device (the template parameter gives
// each kernel its own flags).
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

}  // namespace mma
}  // namespace cuda
}  // namespace tensorflow_dcn

#endif  // TENSORFLOW_DCN_CC_CORE_CUDA_MMA_CORE_CUH_
