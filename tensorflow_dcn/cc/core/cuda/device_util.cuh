// Small device helpers: type traits, conversions, and the PTX wrappers (cp.async, ldmatrix,
// mma.sync) the tensor-core kernels are built from.
#ifndef TENSORFLOW_DCN_CC_CORE_CUDA_DEVICE_UTIL_CUH_
#define TENSORFLOW_DCN_CC_CORE_CUDA_DEVICE_UTIL_CUH_

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <type_traits>

#include "tensorflow_dcn/cc/core/problem.h"

namespace tensorflow_dcn {
namespace cuda {

// Host-side helpers of the launchers.
constexpr int64_t CeilDiv(int64_t a, int64_t b) { return (a + b - 1) / b; }

// The pixel splits of a backward weight whose blocks sum over pixels: each of `tiles` output
// tiles reduces `steps` K steps, `slots` blocks run at a time. Minimises waves x (steps per split
// + a block's fixed cost, about kSplitOverheadSteps), so that the last wave is not mostly idle.
// It runs on every call: the search stops once the waves alone cost more than the best found
// (the cost's lower bound, waves x (1 + kSplitOverheadSteps), only grows with the splits).
constexpr int64_t kSplitOverheadSteps = 8;
inline int64_t SplitCost(int64_t tiles, int64_t steps, int64_t slots, int64_t splits) {
  return CeilDiv(tiles * splits, slots) * (CeilDiv(steps, splits) + kSplitOverheadSteps);
}
inline int64_t ChooseSplits(int64_t tiles, int64_t steps, int64_t slots) {
  int64_t best = 1, best_cost = INT64_MAX;
  for (int64_t splits = 1; splits <= (steps < 65535 ? steps : 65535); ++splits) {
    const int64_t waves = CeilDiv(tiles * splits, slots);
    if (waves * (1 + kSplitOverheadSteps) >= best_cost) break;
    const int64_t cost = waves * (CeilDiv(steps, splits) + kSplitOverheadSteps);
    if (cost < best_cost) {
      best = splits;
      best_cost = cost;
    }
  }
  return best;
}

#define DCN_RETURN_IF_ERROR(expr)                 \
  do {                                            \
    const cudaError_t dcn_err_ = (expr);          \
    if (dcn_err_ != cudaSuccess) return dcn_err_; \
  } while (0)

// Calls launch(row0, tiles) for the launches of a kernel whose grid's x runs over tiles of
// tile_rows rows [begin, end): at most 2^20 tiles each (grid.x is unbounded, but moderate launches
// keep a tile's 64-bit origin in row0), rounded up to whole clusters of `cluster` tiles; checks
// each launch.
template <typename Launch>
cudaError_t ForEachTileLaunch(int64_t begin, int64_t end, int64_t tile_rows, int64_t cluster,
                              Launch&& launch) {
  constexpr int64_t kTilesPerLaunch = int64_t{1} << 20;
  for (int64_t row0 = begin; row0 < end; row0 += kTilesPerLaunch * tile_rows) {
    const int64_t tiles = CeilDiv(CeilDiv(end - row0, tile_rows), cluster) * cluster;
    launch(row0, tiles < kTilesPerLaunch ? tiles : kTilesPerLaunch);
    DCN_RETURN_IF_ERROR(cudaGetLastError());
  }
  return cudaSuccess;
}

// Whether a matrix at p with leading dimension ld and batch (or group) stride batch_stride, in
// elements of elem_bytes, keeps every row 16-byte aligned (vector loads allowed).
inline bool VectorOk(const void* p, int64_t ld, int64_t batch_stride, int elem_bytes) {
  return reinterpret_cast<uintptr_t>(p) % 16 == 0 && (ld * elem_bytes) % 16 == 0 &&
         (batch_stride * elem_bytes) % 16 == 0;
}

template <typename T>
__device__ __forceinline__ T FromFloat(float v) {
  if constexpr (std::is_same_v<T, __half>) {
    return __float2half_rn(v);
  } else if constexpr (std::is_same_v<T, __nv_bfloat16>) {
    return __float2bfloat16_rn(v);
  } else {
    return static_cast<T>(v);
  }
}

template <typename T, typename Acc>
__device__ __forceinline__ T FromAcc(Acc v) {
  if constexpr (std::is_same_v<Acc, float>) {
    return FromFloat<T>(v);
  } else {
    return static_cast<T>(v);
  }
}

// V consecutive elements, loaded and stored as one access.
template <typename T, int V>
struct alignas(sizeof(T) * V) Vec {
  T e[V];
};

// The vector float atomic (red.global.add.v4.f32) is sm_90 with PTX ISA 8.1: nvcc builds have
// it; the portable build's clang-16 writes ISA 7.8 unless the build raises it (TFDCN_PTX_ISA).
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900 && \
    (defined(__NVCC__) || (defined(TFDCN_PTX_ISA) && TFDCN_PTX_ISA >= 81))
#define TFDCN_VECTOR_FLOAT_ATOMICS 1
constexpr bool kFloat4Atomics = true;
#else
constexpr bool kFloat4Atomics = false;
#endif

// dst[0..3] += (a, b, c, d) in one vector atomic (only reached where kFloat4Atomics).
__device__ __forceinline__ void AtomicAdd4(float* dst, float a, float b, float c, float d) {
#ifdef TFDCN_VECTOR_FLOAT_ATOMICS
  asm volatile(
      "{ .reg .u64 g; cvta.to.global.u64 g, %0; red.global.add.v4.f32 [g], {%1, %2, %3, %4}; }" ::
          "l"(dst),
      "f"(a), "f"(b), "f"(c), "f"(d)
      : "memory");
#endif
}

// dst[0..1] += (a, b) in one vector atomic (only reached where kFloat4Atomics; dst 8-byte aligned).
__device__ __forceinline__ void AtomicAdd2(float* dst, float a, float b) {
#ifdef TFDCN_VECTOR_FLOAT_ATOMICS
  asm volatile(
      "{ .reg .u64 g; cvta.to.global.u64 g, %0; red.global.add.v2.f32 [g], {%1, %2}; }" ::"l"(dst),
      "f"(a), "f"(b)
      : "memory");
#endif
}

// dst[e] += w * g[e] for e < V, atomically per element. On sm_90 four floats go in one vector
// atomic: a lane holding V consecutive channels would otherwise spread each warp-wide atomic
// instruction over V times more memory segments.
template <int V, typename Acc>
__device__ __forceinline__ void ScatterAdd(Acc* dst, Acc w, const Acc (&g)[V]) {
  if constexpr (kFloat4Atomics && std::is_same_v<Acc, float> && V % 4 == 0) {
#pragma unroll
    for (int e = 0; e < V; e += 4) {
      AtomicAdd4(dst + e, w * g[e], w * g[e + 1], w * g[e + 2], w * g[e + 3]);
    }
  } else {
#pragma unroll
    for (int e = 0; e < V; ++e) atomicAdd(dst + e, w * g[e]);
  }
}

__device__ __forceinline__ unsigned SharedAddress(const void* p) {
  return static_cast<unsigned>(__cvta_generic_to_shared(p));
}

__device__ __forceinline__ void CpAsync16(void* smem, const void* global) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(SharedAddress(smem)),
               "l"(global));
}

// 16 bytes global -> shared through L1 (neighbouring samples share corners); reads nothing and
// writes zeros when `valid` is false (`global` must still be a mapped address).
__device__ __forceinline__ void CpAsync16Cached(void* smem, const void* global, bool valid) {
  asm volatile("cp.async.ca.shared.global [%0], [%1], 16, %2;\n" ::"r"(SharedAddress(smem)),
               "l"(global), "r"(valid ? 16 : 0));
}

__device__ __forceinline__ void CpAsyncCommit() { asm volatile("cp.async.commit_group;\n" ::); }

template <int kPending>
__device__ __forceinline__ void CpAsyncWait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(kPending));
}

__device__ __forceinline__ void LdMatrixX4(uint32_t (&r)[4], const void* smem) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(SharedAddress(smem)));
}

__device__ __forceinline__ void LdMatrixX4Trans(uint32_t (&r)[4], const void* smem) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(SharedAddress(smem)));
}

// d += a * b, m16n8k16, fp32 accumulators; T is __half or __nv_bfloat16.
template <typename T>
__device__ __forceinline__ void Mma16816(float (&d)[4], const uint32_t (&a)[4],
                                         const uint32_t (&b)[2]) {
  if constexpr (std::is_same_v<T, __half>) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, "
        "{%8, %9}, {%0, %1, %2, %3};\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
  } else {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, "
        "{%8, %9}, {%0, %1, %2, %3};\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
  }
}

// d += a * b, m16n8k8 with TF32 operands.
__device__ __forceinline__ void Mma1688Tf32(float (&d)[4], const uint32_t (&a)[4],
                                            const uint32_t (&b)[2]) {
  asm volatile(
      "mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, "
      "{%8, %9}, {%0, %1, %2, %3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
}

// fp32 bits rounded to the nearest TF32.
__device__ __forceinline__ uint32_t ToTf32(uint32_t fp32_bits) {
  uint32_t r;
  asm("cvt.rna.tf32.f32 %0, %1;\n" : "=r"(r) : "f"(__uint_as_float(fp32_bits)));
  return r;
}

// x = big + small, both TF32 (3xTF32).
__device__ __forceinline__ void SplitTf32(uint32_t fp32_bits, uint32_t* big, uint32_t* small) {
  *big = ToTf32(fp32_bits);
  *small = ToTf32(__float_as_uint(__uint_as_float(fp32_bits) - __uint_as_float(*big)));
}

// out[i] = in[i] for n elements, converting from the accumulator type.
template <typename TOut, typename TIn>
__global__ void ConvertKernel(int64_t n, const TIn* in, TOut* out) {
  for (int64_t i = int64_t{blockIdx.x} * blockDim.x + threadIdx.x; i < n;
       i += int64_t{gridDim.x} * blockDim.x) {
    out[i] = FromAcc<TOut>(in[i]);
  }
}

template <typename TOut, typename TIn>
cudaError_t Convert(int64_t n, const TIn* in, TOut* out, cudaStream_t stream) {
  if (n == 0) return cudaSuccess;
  constexpr int kThreads = 256;
  const int64_t blocks = CeilDiv(n, kThreads) < 65535 ? CeilDiv(n, kThreads) : 65535;
  ConvertKernel<TOut><<<blocks, kThreads, 0, stream>>>(n, in, out);
  return cudaGetLastError();
}

}  // namespace cuda
}  // namespace tensorflow_dcn

#endif  // TENSORFLOW_DCN_CC_CORE_CUDA_DEVICE_UTIL_CUH_
