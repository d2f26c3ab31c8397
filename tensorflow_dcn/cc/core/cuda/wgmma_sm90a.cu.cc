// See wgmma_sm90a.cuh. Built with -gencode=arch=compute_90a,code=sm_90a only (tensorflow_dcn/BUILD
// gives files ending in _sm90a.cu.cc their own targets).
//
// PTX used (PTX ISA 8.6, sm_90a): mbarrier (init / arrive, also on the cluster peer's barriers /
// arrive.expect_tx / try_wait.parity), cp.async.bulk.tensor with .multicast::cluster (TMA,
// completing on an mbarrier in each destination block), st.async into the cluster peer's shared
// memory (completing on its mbarrier), barrier.cluster, fence.proxy.async (the producers' generic
// stores become visible to wgmma, which reads shared memory through the async proxy),
// fence.acquire.sync_restrict, and wgmma.mma_async m64n128k16 (f16, bf16) / m64n128k8 (tf32, also
// for 3xTF32) with both operands in shared memory.
#include "tensorflow_dcn/cc/core/cuda/wgmma_sm90a.cuh"

#include <cuda.h>  // CUtensorMap and the encoder's types only: libcuda is not linked

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <cstring>
#include <limits>

#include "tensorflow_dcn/cc/core/bilinear.h"
#include "tensorflow_dcn/cc/core/cuda/device_util.cuh"
#include "tensorflow_dcn/cc/core/cuda/im2col.cuh"
#include "tensorflow_dcn/cc/core/cuda/input_scatter.cuh"
#include "tensorflow_dcn/cc/core/cuda/mma_core.cuh"
#include "tensorflow_dcn/cc/core/workspace.h"

#if defined(__CUDA_ARCH__) && defined(__CUDA_ARCH_FEAT_SM90_ALL)
#define DCN_WGMMA_SM90A_DEVICE 1
#endif

namespace tensorflow_dcn {
namespace cuda {
namespace wgmma_sm90a {
namespace {

constexpr int kRowBytes = 128;                    // one K step of a tile row: the swizzle span
constexpr int kSwizzleAtomBytes = 8 * kRowBytes;  // 8 rows: the period of the 128-byte swizzle
constexpr int kChunks = kRowBytes / 16;           // 16-byte chunks per row
constexpr int kProducers = 256;                   // two warpgroups gather and blend
constexpr int kConsumers = 256;                   // two warpgroups multiply
constexpr int kThreads = kProducers + kConsumers;
constexpr int kWarpgroupM = 64, kWarpgroupN = 128;  // one consumer warpgroup's tile
// Registers per thread by role (setmaxnreg): the producers hold the corner chunks of 4 rows (of
// 2 rows for two taps on the 64-row tile), the consumers 64 accumulators; 256 x (160 + 96) = the
// 64K register file.
constexpr int kProducerRegisters = 160, kConsumerRegisters = 96;
static_assert(kProducers * kProducerRegisters + kConsumers * kConsumerRegisters <= 65536, "");
constexpr int kMmasPerStep = kRowBytes / 32;  // each wgmma takes 32 bytes of K
// Blocks of a cluster: neighbouring pixel tiles of the same channel tile, which share each
// step's weights: each block copies its share of the B tile and the TMA multicasts it to both.
// Or (Layout::kSharesA, the forward with an even number of 256-column channel tiles) neighbouring
// channel tiles of the same pixels, which share each step's gathered A tile: each block's
// producers gather half its rows and store them in both blocks.
constexpr int kCluster = 2;

template <typename T>
constexpr int kBlockK = kRowBytes / sizeof(T);  // K elements per step
template <typename T>
constexpr int kVector = 16 / sizeof(T);  // elements per 16-byte chunk

template <typename T>
using Chunk = Vec<T, kVector<T>>;

// How the B operand lies in shared memory. fp16/bf16: MN-major, as the weights ([K][Cout]) and
// grad_output ([pixels][Cout]) lie in memory, so that TMA reads them in place; a stage's B tile
// is kBlockN / 64 chunks of 64 columns, each kBlockK rows of 128 bytes (one K per row). TF32:
// K-major, wgmma's only layout for it, from a transposed copy; kBlockN rows of 128 bytes (one
// output channel per row).
template <typename T>
constexpr bool kMnMajorB = sizeof(T) == 2;
constexpr int kMnChunkColumns = 64;  // 128 bytes of 16-bit columns: the swizzle span

// The B operand's columns per group as the kernels read it: Cout / groups, rounded up to 16 bytes
// for MN-major ones, so that each group's first column, the inner coordinate of its TMA boxes,
// lies on 16 bytes (read in place, a grouped fp16 problem with 130 channels per group stopped on
// an illegal instruction on the H200).
template <typename T>
__host__ __device__ __forceinline__ int64_t BGroupColumns(const DcnShape& s) {
  const int64_t cog = s.out_channels_per_group();
  return kMnMajorB<T> ? (cog + kVector<T> - 1) / kVector<T> * kVector<T> : cog;
}

// The forward's K chunk of one launch: channel slabs (kBlockK channels of a group) [begin, end).
struct SlabRange {
  int begin, end;
};

// Shared memory of a block tile, from a 1024-byte aligned base (the swizzle's period): per stage
// the A tile (kBlockM rows) and the B tile (kBlockN rows) of 128 bytes each, in kParts parts
// (fp32 as 3xTF32: a TF32 "big" part and the TF32 of what it leaves, the "small" part; the
// products big x big + big x small + small x big keep fp32's accuracy), the barriers, then the
// kernel's sample table (the forward's: per tile row and tap the four corner pixels and weights,
// 32 bytes). With kSharedSmall (the backward input's 3xTF32, whose TMA copies raw fp32 tiles) the
// stages hold one part, split once it lands: the big parts in place, the small parts of A and B
// into one buffer that the stages share, so that two blocks still fit an SM.
template <int kBlockM, int kBlockN, int kOperandParts = 1, bool kShareA = false,
          bool kSharedSmall = false>
struct Layout {
  static_assert((kBlockM == 128 && kBlockN == 128) || (kBlockM == 64 && kBlockN == 256),
                "two consumer warpgroups of 64 x 128 cover the tile");
  static constexpr int kM = kBlockM, kN = kBlockN, kParts = kOperandParts;
  static constexpr bool kSharesA = kShareA;  // the cluster shares A tiles rather than B tiles
  static constexpr bool kSharesSmall = kSharedSmall;
  static_assert(!kSharedSmall || kOperandParts == 2, "the small parts' buffer is for 3xTF32");
  // Blocks of a cluster along the grid's x (pixel tiles of the forward, row tiles of the backward
  // weight): a launch rounds those tiles up to whole clusters.
  static constexpr int kTileCluster = kShareA ? 1 : kCluster;
  // 3 stages: with the sample table the shared memory stays under the 164 KB carve-out, leaving
  // room in L1 for the corners of a channel slab, reused across its taps (measured: the L1 hit
  // rate is only ~19%; docs/notes/2026-11-30-wgmma-sm90a.md). Two parts take twice the bytes:
  // 2 stages.
  static constexpr int kStages = kParts == 1 ? 3 : 2;
  static constexpr int kABytes = kBlockM * kRowBytes;  // one part
  static constexpr int kBBytes = kBlockN * kRowBytes;
  static constexpr int kStageParts = kSharedSmall ? 1 : kParts;  // parts a stage holds
  static constexpr int kAStageBytes = kStageParts * kABytes, kBStageBytes = kStageParts * kBBytes;
  static constexpr int kBAt = kStages * kAStageBytes;
  static constexpr int kSmallAt = kBAt + kStages * kBStageBytes;  // kSharedSmall: A's, then B's
  static constexpr int kFullAt = kSmallAt + (kSharedSmall ? kABytes + kBBytes : 0);  // mbarriers
  static constexpr int kEmptyAt = kFullAt + kStages * 8;  // mbarriers: a stage was consumed
  static constexpr int kTableAt = kEmptyAt + kStages * 8;
  static constexpr int kTableEntryBytes = 32;
  static_assert(kTableAt % 16 == 0, "table entries are read as 16-byte vectors");
  static constexpr int64_t ForwardTableBytes(int taps) {
    return int64_t{kBlockM} * taps * kTableEntryBytes;
  }
  // Dynamic shared memory of a launch, with room to align the base.
  static constexpr int64_t AllocBytes(int64_t table_bytes) {
    return kTableAt + table_bytes + kSwizzleAtomBytes;
  }
};

// ---------------------------------------------------------------------------------------------
// PTX wrappers.
// ---------------------------------------------------------------------------------------------

__device__ __forceinline__ void BarrierInit(uint32_t bar, int count) {
  asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;\n" ::"r"(bar), "r"(count) : "memory");
}

__device__ __forceinline__ void BarrierArrive(uint32_t bar) {
  asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0];\n" ::"r"(bar) : "memory");
}

// Arrives and announces `bytes` that a TMA copy will complete on the barrier.
__device__ __forceinline__ void BarrierArriveExpectTx(uint32_t bar, uint32_t bytes) {
  asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;\n" ::"r"(bar), "r"(bytes)
               : "memory");
}

// Announces `bytes` that a TMA copy will complete on the barrier, without arriving.
__device__ __forceinline__ void BarrierExpectTx(uint32_t bar, uint32_t bytes) {
  asm volatile("mbarrier.expect_tx.shared::cta.b64 [%0], %1;\n" ::"r"(bar), "r"(bytes) : "memory");
}

// mbarrier.try_wait.parity with the semantics `sem` ("" for the default acquire at CTA scope), in
// a loop until the phase has completed.
#define DCN_WAIT_PHASE(sem, bar, parity)                                       \
  do {                                                                         \
    uint32_t done = 0;                                                         \
    while (!done) {                                                            \
      asm volatile("{\n.reg .pred p;\nmbarrier.try_wait.parity" sem            \
                   ".shared::cta.b64 p, [%1], %2;\nselp.b32 %0, 1, 0, p;\n}\n" \
                   : "=r"(done)                                                \
                   : "r"(bar), "r"(parity)                                     \
                   : "memory");                                                \
    }                                                                          \
  } while (0)

// Waits until the barrier's phase of the given parity has completed. Acquire at CTA scope, as in
// CUTLASS's pipelines: the peer's consumers release nothing but the end of their wgmma reads. (At
// cluster scope every wait also invalidated L1; keeping the producers' corners there raised its
// hit rate to 76-85% but moved the kernels only by -3% to +7%, docs/notes of 2026-12-02, run15.)
__device__ __forceinline__ void BarrierWait(uint32_t bar, uint32_t parity) {
  DCN_WAIT_PHASE("", bar, parity);
}

// The box at (c0, c1) into shared memory at dst of every block in cta_mask (same offsets in
// each), completing on the barrier at bar's offset in each.
__device__ __forceinline__ void TmaLoad2dMulticast(uint32_t dst, const CUtensorMap* map, int c0,
                                                   int c1, uint32_t bar, uint16_t cta_mask) {
  asm volatile(
      "cp.async.bulk.tensor.2d.shared::cluster.global.mbarrier::complete_tx::bytes"
      ".multicast::cluster [%0], [%1, {%2, %3}], [%4], %5;\n" ::"r"(dst),
      "l"(reinterpret_cast<uint64_t>(map)), "r"(c0), "r"(c1), "r"(bar), "h"(cta_mask)
      : "memory");
}

__device__ __forceinline__ uint32_t ClusterRank() {
  uint32_t rank;
  asm volatile("mov.u32 %0, %%cluster_ctarank;\n" : "=r"(rank));
  return rank;
}

// Every thread of the cluster's blocks: arrive, then wait for all.
__device__ __forceinline__ void ClusterSync() {
  asm volatile(
      "barrier.cluster.arrive.release.aligned;\n"
      "barrier.cluster.wait.acquire.aligned;\n" ::
          : "memory");
}

// The same in two halves, so that a thread can work between its arrival and its wait.
__device__ __forceinline__ void ClusterArrive() {
  asm volatile("barrier.cluster.arrive.release.aligned;\n" ::: "memory");
}
__device__ __forceinline__ void ClusterWait() {
  asm volatile("barrier.cluster.wait.acquire.aligned;\n" ::: "memory");
}

// BarrierWait for a barrier on which the cluster peer's asynchronous stores (StoreAsync) also
// complete: acquires them at cluster scope, restricted to shared memory (an acquire of all memory
// at cluster scope invalidates L1 after every wait, which the producers' corners live in), and
// orders them before this thread's wgmma reads (async proxy).
__device__ __forceinline__ void BarrierWaitShared(uint32_t bar, uint32_t parity) {
  DCN_WAIT_PHASE(".relaxed.cluster", bar, parity);
  asm volatile(
      "fence.acquire.sync_restrict::shared::cluster.cluster;\n"
      "fence.proxy.async.shared::cta;\n" ::
          : "memory");
}
#undef DCN_WAIT_PHASE

// The shared address of cluster block `rank` at the offset of this block's `addr`.
__device__ __forceinline__ uint32_t PeerAddress(uint32_t addr, uint32_t rank) {
  uint32_t peer;
  asm volatile("mapa.shared::cluster.u32 %0, %1, %2;\n" : "=r"(peer) : "r"(addr), "r"(rank));
  return peer;
}

// 16 bytes into a cluster peer's shared memory at `addr`, completing on its barrier at `bar` (both
// addresses from PeerAddress).
__device__ __forceinline__ void StoreAsync(uint32_t addr, uint4 v, uint32_t bar) {
  asm volatile(
      "st.async.shared::cluster.mbarrier::complete_tx::bytes.v4.b32 [%0], {%1, %2, %3, %4}, "
      "[%5];\n" ::"r"(addr),
      "r"(v.x), "r"(v.y), "r"(v.z), "r"(v.w), "r"(bar)
      : "memory");
}

// Arrives on the barrier at offset `bar` in the shared memory of cluster block `rank`. Used by
// consumers to release a stage: what they publish is that their wgmma reads are complete (waited
// for), no stores of theirs, so the default (CTA-scope) semantics do, as in CUTLASS's pipelines.
__device__ __forceinline__ void BarrierArriveCluster(uint32_t bar, uint32_t rank) {
  asm volatile(
      "{\n"
      ".reg .b32 remote;\n"
      "mapa.shared::cluster.u32 remote, %0, %1;\n"
      "mbarrier.arrive.shared::cluster.b64 _, [remote];\n"
      "}\n" ::"r"(bar),
      "r"(rank)
      : "memory");
}

// This thread's shared-memory stores become visible to the async proxy (wgmma, TMA).
__device__ __forceinline__ void FenceProxyAsync() {
  asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");
}

// wgmma descriptor of a K-major tile of 128-byte rows, 128-byte swizzle, starting at `addr`
// (a multiple of 1024 plus the K offset within the row): leading byte offset unused (1), stride
// byte offset 1024 (from one 8-row group to the next), layout type 1 (SWIZZLE_128B).
__device__ __forceinline__ uint64_t MatrixDescriptor(uint32_t addr) {
  return uint64_t{(addr & 0x3FFFF) >> 4} | (uint64_t{1} << 16) |
         (uint64_t{kSwizzleAtomBytes >> 4} << 32) | (uint64_t{1} << 62);
}

// wgmma descriptor of an MN-major 16-bit B tile (kMnMajorB), 128-byte swizzle, starting at
// `addr` (a multiple of 1024): leading byte offset = from one chunk of 64 columns to the next
// (64 rows of K x 128 bytes), stride byte offset 1024 (from one group of 8 rows of K to the
// next), layout type 1 (SWIZZLE_128B).
__device__ __forceinline__ uint64_t MnMajorDescriptor(uint32_t addr) {
  constexpr uint32_t kChunkBytes = kBlockK<__half> * kRowBytes;
  return uint64_t{(addr & 0x3FFFF) >> 4} | (uint64_t{kChunkBytes >> 4} << 16) |
         (uint64_t{kSwizzleAtomBytes >> 4} << 32) | (uint64_t{1} << 62);
}

__device__ __forceinline__ void WgmmaFence() {
  asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory");
}
__device__ __forceinline__ void WgmmaCommit() {
  asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory");
}
template <int kPending>
__device__ __forceinline__ void WgmmaWait() {
  asm volatile("wgmma.wait_group.sync.aligned %0;\n" ::"n"(kPending) : "memory");
}

// Keeps the compiler from moving accesses of the accumulators across this point (they are written
// asynchronously by wgmma until the wait).
__device__ __forceinline__ void FenceAccumulators(float (&d)[64]) {
#pragma unroll
  for (int i = 0; i < 64; ++i) asm volatile("" : "+f"(d[i])::"memory");
}

#define DCN_D8(i)                                                                             \
  "+f"(d[i]), "+f"(d[i + 1]), "+f"(d[i + 2]), "+f"(d[i + 3]), "+f"(d[i + 4]), "+f"(d[i + 5]), \
      "+f"(d[i + 6]), "+f"(d[i + 7])
#define DCN_D64 \
  DCN_D8(0), DCN_D8(8), DCN_D8(16), DCN_D8(24), DCN_D8(32), DCN_D8(40), DCN_D8(48), DCN_D8(56)
#define DCN_D64_REGS                         \
  "{%0, %1, %2, %3, %4, %5, %6, %7, "        \
  "%8, %9, %10, %11, %12, %13, %14, %15, "   \
  "%16, %17, %18, %19, %20, %21, %22, %23, " \
  "%24, %25, %26, %27, %28, %29, %30, %31, " \
  "%32, %33, %34, %35, %36, %37, %38, %39, " \
  "%40, %41, %42, %43, %44, %45, %46, %47, " \
  "%48, %49, %50, %51, %52, %53, %54, %55, " \
  "%56, %57, %58, %59, %60, %61, %62, %63}"

// d += A * B^T for one 32-byte K slice: A 64 rows in shared memory, K-major, or MN-major
// (transposed: kMnMajorA, fp16/bf16 only); B 128 columns, K-major, or MN-major (transposed:
// kMnMajorBTile, fp16/bf16 only).
// d[4j + 2h + e] holds row 16 * warp + lane / 4 + 8h, column 8j + 2 (lane % 4) + e.
template <typename T, bool kMnMajorA, bool kMnMajorBTile = kMnMajorB<T>>
__device__ __forceinline__ void Wgmma(float (&d)[64], uint64_t a, uint64_t b) {
  if constexpr (std::is_same_v<T, __half>) {
    asm volatile(
        "{\n.reg .pred p;\nsetp.ne.b32 p, %66, 0;\n"
        "wgmma.mma_async.sync.aligned.m64n128k16.f32.f16.f16 " DCN_D64_REGS
        ", %64, %65, p, 1, 1, %67, %68;\n}\n"
        : DCN_D64
        : "l"(a), "l"(b), "r"(1), "n"(int{kMnMajorA}), "n"(int{kMnMajorBTile}));
  } else if constexpr (std::is_same_v<T, __nv_bfloat16>) {
    asm volatile(
        "{\n.reg .pred p;\nsetp.ne.b32 p, %66, 0;\n"
        "wgmma.mma_async.sync.aligned.m64n128k16.f32.bf16.bf16 " DCN_D64_REGS
        ", %64, %65, p, 1, 1, %67, %68;\n}\n"
        : DCN_D64
        : "l"(a), "l"(b), "r"(1), "n"(int{kMnMajorA}), "n"(int{kMnMajorBTile}));
  } else {
    static_assert(std::is_same_v<T, float>, "fp16, bf16 or fp32 (as TF32)");
    static_assert(!kMnMajorA && !kMnMajorBTile, "wgmma reads TF32 K-major only");
    asm volatile(
        "{\n.reg .pred p;\nsetp.ne.b32 p, %66, 0;\n"
        "wgmma.mma_async.sync.aligned.m64n128k8.f32.tf32.tf32 " DCN_D64_REGS
        ", %64, %65, p, 1, 1;\n}\n"
        : DCN_D64
        : "l"(a), "l"(b), "r"(1));
  }
}

#undef DCN_D8
#undef DCN_D64
#undef DCN_D64_REGS

// ---------------------------------------------------------------------------------------------
// Element conversions of the blend.
// ---------------------------------------------------------------------------------------------

// Element pair e of a chunk as floats.
template <typename T>
__device__ __forceinline__ float2 PairToFloat2(const Chunk<T>& c, int e) {
  if constexpr (std::is_same_v<T, __half>) {
    return __half22float2(__halves2half2(c.e[2 * e], c.e[2 * e + 1]));
  } else if constexpr (std::is_same_v<T, __nv_bfloat16>) {
    return __bfloat1622float2(__halves2bfloat162(c.e[2 * e], c.e[2 * e + 1]));
  } else {
    return make_float2(c.e[2 * e], c.e[2 * e + 1]);
  }
}

// v as wgmma reads it, in each operand part: fp16/bf16 rounded to nearest; fp32 rounded to
// nearest TF32 (wgmma itself would drop the low mantissa bits) and, with two parts, the TF32 of
// what that leaves.
template <typename T, int kParts>
__device__ __forceinline__ void ToOperand(float v, T (&parts)[kParts]) {
  if constexpr (std::is_same_v<T, float>) {
    uint32_t big, small;
    SplitTf32(__float_as_uint(v), &big, &small);
    parts[0] = __uint_as_float(big);
    if constexpr (kParts == 2) parts[1] = __uint_as_float(small);
  } else {
    static_assert(kParts == 1, "3xTF32 is for fp32 alone");
    parts[0] = FromFloat<T>(v);
  }
}

// Elements 2e and 2e + 1 of a chunk of each operand part.
template <typename T, int kParts>
__device__ __forceinline__ void StorePair(Chunk<T> (&c)[kParts], int e, float2 v) {
  T x[kParts], y[kParts];
  ToOperand(v.x, x);
  ToOperand(v.y, y);
#pragma unroll
  for (int part = 0; part < kParts; ++part) {
    c[part].e[2 * e] = x[part];
    c[part].e[2 * e + 1] = y[part];
  }
}

__device__ __forceinline__ uint4 LoadChunk(const void* p) {
  return __ldg(reinterpret_cast<const uint4*>(p));
}

// A sample's 16-byte chunk: its four corner chunks blended with their weights, in float.
template <typename T>
__device__ __forceinline__ void BlendValues(const Chunk<T> (&corners)[4], const float (&w)[4],
                                            float (&v)[kVector<T>]) {
#pragma unroll
  for (int e = 0; e < kVector<T> / 2; ++e) {
    v[2 * e] = v[2 * e + 1] = 0.f;
#pragma unroll
    for (int k = 0; k < 4; ++k) {
      const float2 x = PairToFloat2(corners[k], e);
      v[2 * e] += w[k] * x.x;
      v[2 * e + 1] += w[k] * x.y;
    }
  }
}

// The same in each operand part as wgmma reads it. fp16/bf16 blend in their own packed pairs
// (four HMUL2/HFMA2 per corner and chunk): in float each element took a conversion per corner
// and a multiply-add, 68 instructions a chunk against 20, and the forward's producers, eight
// warps per SM, issue their blend as one dependent stream. Each corner's product rounds to the
// element type, as torchvision's half kernels do, where float rounded once at the end.
template <typename T, int kParts>
__device__ __forceinline__ void BlendChunk(const Chunk<T> (&corners)[4], const float (&w)[4],
                                           Chunk<T> (&out)[kParts]) {
  if constexpr (sizeof(T) == 2) {
    static_assert(kParts == 1, "3xTF32 is for fp32 alone");
    using Pair = std::conditional_t<std::is_same_v<T, __half>, __half2, __nv_bfloat162>;
    Pair wk[4];
#pragma unroll
    for (int k = 0; k < 4; ++k) {
      if constexpr (std::is_same_v<T, __half>) {
        wk[k] = __float2half2_rn(w[k]);
      } else {
        wk[k] = __float2bfloat162_rn(w[k]);
      }
    }
    const Pair* c[4];
#pragma unroll
    for (int k = 0; k < 4; ++k) c[k] = reinterpret_cast<const Pair*>(corners[k].e);
    Pair* o = reinterpret_cast<Pair*>(out[0].e);
#pragma unroll
    for (int e = 0; e < kVector<T> / 2; ++e) {
      Pair v = __hmul2(wk[0], c[0][e]);
#pragma unroll
      for (int k = 1; k < 4; ++k) v = __hfma2(wk[k], c[k][e], v);
      o[e] = v;
    }
  } else {
    float v[kVector<T>];
    BlendValues(corners, w, v);
#pragma unroll
    for (int e = 0; e < kVector<T> / 2; ++e) {
      StorePair(out, e, make_float2(v[2 * e], v[2 * e + 1]));
    }
  }
}

// ---------------------------------------------------------------------------------------------
// The pipeline of both kernels: producers fill a stage's A tile and start the TMA copy of its B
// tile; consumer warpgroups multiply it and hand the stage back.
// ---------------------------------------------------------------------------------------------

// Thread 0, before the cluster sync: the barriers of every stage.
template <typename L, int kFullArrivals>
__device__ __forceinline__ void InitBarriers(uint32_t smem_addr) {
  for (int st = 0; st < L::kStages; ++st) {
    BarrierInit(smem_addr + L::kFullAt + 8 * st, kFullArrivals);
    // Empty: one arrival per consumer warpgroup of each block of the cluster.
    BarrierInit(smem_addr + L::kEmptyAt + 8 * st, kCluster * kConsumers / 128);
  }
  asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory");
}

// The start of every kernel: returns the dynamic shared memory from its first 1024-byte aligned
// byte (the swizzle's period; its shared address in smem_addr) once the stages' barriers are
// initialised and the cluster is synchronised, so that the peer's barriers are ready before any
// multicast or remote arrive. A stage's full barrier takes kFullArrivals arrivals: by default
// every producer thread, and the TMA thread once more with its bytes (and those of the peer's half
// of the A tile when the blocks share A tiles).
template <typename L, int kFullArrivals = kProducers + 1>
__device__ __forceinline__ char* StartTile(char* smem_raw, uint32_t* smem_addr) {
  const uint32_t raw_addr = SharedAddress(smem_raw);
  *smem_addr = (raw_addr + kSwizzleAtomBytes - 1) & ~uint32_t{kSwizzleAtomBytes - 1};
  if (threadIdx.x == 0) InitBarriers<L, kFullArrivals>(*smem_addr);
  ClusterSync();
  return smem_raw + (*smem_addr - raw_addr);
}

// A producer thread: waits until the stage of K step kt is free in both blocks of the cluster
// (their consumers arrive on both blocks' empty barriers).
template <typename L>
__device__ __forceinline__ void WaitStageFree(uint32_t smem_addr, int kt) {
  BarrierWait(smem_addr + L::kEmptyAt + 8 * (kt % L::kStages), ((kt / L::kStages) & 1) ^ 1);
}

// One producer thread, once the stage of step kt is free: copies this block's share of the
// step's B tile into both blocks of the cluster; the peer's share lands here too (with
// L::kSharesA: the whole B tile into this block alone). MN-major (kMnMajorBTile): boxes of 64
// columns x kBlockK rows at (column n0 + the share's first, row k) of the [K][N] map. K-major:
// each part's boxes of kN / kCluster rows at (k, part x part_rows + n0 + the share's first row) of
// the transposed [N][K] map.
template <typename T, typename L, bool kMnMajorBTile = kMnMajorB<T>>
__device__ __forceinline__ void LoadBTile(const CUtensorMap* map, uint32_t smem_addr, int kt, int k,
                                          int n0, int part_rows) {
  constexpr int kBox = L::kN / kCluster;
  constexpr int kShare = L::kSharesA ? L::kN : kBox;
  const int stage = kt % L::kStages;
  const uint32_t full = smem_addr + L::kFullAt + 8 * stage;
  const uint32_t b_stage = smem_addr + L::kBAt + stage * L::kBStageBytes;
  const int rank = static_cast<int>(ClusterRank());
  const int first = L::kSharesA ? 0 : rank * kShare;
  const uint16_t blocks = L::kSharesA ? 1 << rank : (1 << kCluster) - 1;
  BarrierArriveExpectTx(full, L::kBStageBytes + (L::kSharesA ? L::kAStageBytes / kCluster : 0));
  if constexpr (kMnMajorBTile) {
    // Chunk c of the tile (columns 64c..) at c x kBlockK rows of 128 bytes = 64c x 128 bytes.
#pragma unroll
    for (int col = first; col < first + kShare; col += kMnChunkColumns) {
      TmaLoad2dMulticast(b_stage + col * kRowBytes, map, n0 + col, k, full, blocks);
    }
  } else {
#pragma unroll
    for (int part = 0; part < L::kStageParts; ++part) {
#pragma unroll
      for (int row = first; row < first + kShare; row += kBox) {
        TmaLoad2dMulticast(b_stage + part * L::kBBytes + row * kRowBytes, map, k,
                           part * part_rows + n0 + row, full, blocks);
      }
    }
  }
}

// Every producer thread, after its stores to the A tile of step kt: hands the stage over.
template <typename L>
__device__ __forceinline__ void PublishStage(uint32_t smem_addr, int kt) {
  FenceProxyAsync();
  BarrierArrive(smem_addr + L::kFullAt + 8 * (kt % L::kStages));
}

// A producer's stores into the A tile of one step: into this block's tile and, when the cluster
// shares A tiles (L::kSharesA), at the same place in the peer's, completing on the peer's full
// barrier of the stage (whose TMA thread expects half an A stage from the peer).
template <typename L>
struct ATileStore {
  char* smem;          // this block's shared memory
  uint32_t peer_smem;  // the same in the peer's (PeerAddress)
  uint32_t peer_full;  // the peer's full barrier of the step's stage

  __device__ ATileStore(char* smem, uint32_t peer_smem, int kt)
      : smem(smem),
        peer_smem(peer_smem),
        peer_full(peer_smem + L::kFullAt + 8 * (kt % L::kStages)) {}

  template <typename V>
  __device__ __forceinline__ void operator()(char* at, const V& v) const {
    *reinterpret_cast<V*>(at) = v;
    if constexpr (L::kSharesA) {
      static_assert(sizeof(V) == 16, "st.async of 16 bytes");
      StoreAsync(peer_smem + static_cast<uint32_t>(at - smem), *reinterpret_cast<const uint4*>(&v),
                 peer_full);
    }
  }
};

// Where this block's shared memory lies in the cluster peer's, when the cluster shares A tiles.
template <typename L>
__device__ __forceinline__ uint32_t PeerSmem(uint32_t smem_addr) {
  return L::kSharesA ? PeerAddress(smem_addr, ClusterRank() ^ 1) : 0;
}

// The part of the block tile a consumer warpgroup covers: 64 rows x 128 columns from (row0,
// col0).
template <typename L>
struct WarpgroupTile {
  int row0, col0;
  __device__ explicit WarpgroupTile(int warpgroup)
      : row0(L::kM == 128 ? kWarpgroupM * warpgroup : 0),
        col0(L::kM == 128 ? 0 : kWarpgroupN * warpgroup) {}
};

// One wgmma's K (32 bytes) further in a tile, in the descriptors' 16-byte address units: 32 bytes
// along a K-major row; 32 bytes / sizeof(T) rows of 128 bytes in an MN-major tile.
template <typename T, bool kMnMajor>
constexpr int kDescriptorStep = kMnMajor ? 32 / sizeof(T) * kRowBytes / 16 : 2;

// Consumer warpgroup: acc = its part of the block tile, summed over `ktiles` K steps. The A tile
// is K-major, or MN-major (kMnMajorA, fp16/bf16: chunks of 64 rows, each kBlockK rows of K of
// 128 bytes, so that a warpgroup's 64 rows start at the same place in either layout); the B tile
// MN-major where kMnMajorBTile. The consumers are the threads from kFirstConsumer on; once step
// kt's stage has landed each calls landed(kt) before multiplying it (kernels whose operands TMA
// copies as they lie turn them into wgmma's operands there), and after releasing its stage
// refill(kt) (kernels without producer warps start the stage's next copy there).
struct NoHook {
  __device__ void operator()(int) const {}
};
template <typename T, typename L, bool kMnMajorA = false, bool kMnMajorBTile = kMnMajorB<T>,
          int kFirstConsumer = kProducers, typename Refill = NoHook, typename Landed = NoHook>
__device__ __forceinline__ void MultiplySteps(float (&acc)[64], uint32_t smem_addr,
                                              WarpgroupTile<L> tile, int ktiles,
                                              const Refill& refill = Refill(),
                                              const Landed& landed = Landed()) {
  static_assert(!kMnMajorA || kBlockK<T> == kWarpgroupM, "a chunk takes as many bytes as 64 rows");
  const int t = threadIdx.x - kFirstConsumer;
  const uint32_t a_addr = smem_addr + tile.row0 * kRowBytes;
  const uint32_t b_addr = smem_addr + L::kBAt + tile.col0 * kRowBytes;
  const uint32_t full = smem_addr + L::kFullAt, empty = smem_addr + L::kEmptyAt;
  // Step kt's stage goes back to the producers of both blocks (either one's TMA writes the stage
  // in both) once its multiplies are done. One thread signals per warpgroup: the wgmma group it
  // waited for is the whole warpgroup's.
  const auto release = [&](int kt) {
    if (t % 128 == 0) {
#pragma unroll
      for (int r = 0; r < kCluster; ++r) BarrierArriveCluster(empty + 8 * (kt % L::kStages), r);
    }
  };
#pragma unroll
  for (int i = 0; i < 64; ++i) acc[i] = 0.f;
  for (int kt = 0; kt < ktiles; ++kt) {
    const int stage = kt % L::kStages;
    if constexpr (L::kSharesA) {
      BarrierWaitShared(full + 8 * stage, (kt / L::kStages) & 1);
    } else {
      BarrierWait(full + 8 * stage, (kt / L::kStages) & 1);
    }
    if constexpr (L::kSharesSmall) {
      // The previous step's products read the small parts that landed(kt) overwrites: they are
      // waited for here, and their stage goes back now rather than after this step's products,
      // so that its next copy starts a split and a step earlier.
      WgmmaWait<0>();
      if (kt > 0) {
        release(kt - 1);
        refill(kt - 1);
      }
    }
    landed(kt);
    const uint32_t a = a_addr + stage * L::kAStageBytes, b = b_addr + stage * L::kBStageBytes;
    // 3xTF32's small parts: after the big ones in the stage, or in the shared buffer.
    const uint32_t a_small =
        L::kSharesSmall ? smem_addr + L::kSmallAt + tile.row0 * kRowBytes : a + L::kABytes;
    const uint32_t b_small = L::kSharesSmall
                                 ? smem_addr + L::kSmallAt + L::kABytes + tile.col0 * kRowBytes
                                 : b + L::kBBytes;
    const uint64_t da = kMnMajorA ? MnMajorDescriptor(a) : MatrixDescriptor(a);
    const uint64_t db = kMnMajorBTile ? MnMajorDescriptor(b) : MatrixDescriptor(b);
    constexpr int kAStep = kDescriptorStep<T, kMnMajorA>;
    constexpr int kBStep = kDescriptorStep<T, kMnMajorBTile>;
    WgmmaFence();
#pragma unroll
    for (int k = 0; k < kMmasPerStep; ++k) {
      // 3xTF32: the small products first.
      if constexpr (L::kParts == 2) {
        Wgmma<T, false>(acc, da + 2 * k, MatrixDescriptor(b_small) + 2 * k);
        Wgmma<T, false>(acc, MatrixDescriptor(a_small) + 2 * k, db + 2 * k);
      }
      Wgmma<T, kMnMajorA, kMnMajorBTile>(acc, da + kAStep * k, db + kBStep * k);
    }
    WgmmaCommit();
    WgmmaWait<1>();  // the previous step's multiplies are done
    if (!L::kSharesSmall && kt > 0) {
      release(kt - 1);
      refill(kt - 1);
    }
  }
  WgmmaWait<0>();
  FenceAccumulators(acc);
}

// Where a consumer thread's accumulators lie in its warpgroup's 64 x 128 part: acc[4j + 2h + e]
// holds row AccumulatorRow(h), column AccumulatorColumn(j) + e (the consumers from thread
// kFirstConsumer on).
template <int kFirstConsumer = kProducers>
__device__ __forceinline__ int AccumulatorRow(int h) {
  const int t = threadIdx.x - kFirstConsumer;
  return 16 * ((t % 128) / 32) + (t % 32) / 4 + 8 * h;
}
__device__ __forceinline__ int AccumulatorColumn(int j) { return 8 * j + 2 * (threadIdx.x % 4); }

// ---------------------------------------------------------------------------------------------
// The forward kernel.
// ---------------------------------------------------------------------------------------------

// Synchronises the producer warps alone (named barrier 1; the consumers never wait on it).
__device__ __forceinline__ void ProducerBarrier() {
  asm volatile("bar.sync 1, %0;\n" ::"n"(kProducers) : "memory");
}

// Fills the sample table for deformable group d: per tile row (output pixel) of [row_begin,
// row_begin + rows) and tap the four corners (pixel index in the image, -1 outside) and their
// bilinear weights times the mask.
template <typename T, typename L>
__device__ __forceinline__ void FillSampleTable(const DcnShape& s, const T* offset, const T* mask,
                                                char* table, int64_t m0, int d, int row_begin,
                                                int rows) {
  const int taps = s.taps();
  for (int e = row_begin * taps + threadIdx.x; e < (row_begin + rows) * taps; e += kProducers) {
    const int row = e / taps, tap = e - row * taps;
    const int64_t p = m0 + row;
    int4 corners = make_int4(-1, -1, -1, -1);
    float4 weights = make_float4(0.f, 0.f, 0.f, 0.f);
    if (p < s.pixels()) {
      BilinearPoint<float> point;
      float m;
      MakeSample(s, p, LocateOutputPixel(s, p), d * taps + tap, offset, mask, &point, &m);
      corners = make_int4(point.pixel[0], point.pixel[1], point.pixel[2], point.pixel[3]);
      weights = make_float4(point.weight[0] * m, point.weight[1] * m, point.weight[2] * m,
                            point.weight[3] * m);
    }
    char* entry = table + e * L::kTableEntryBytes;
    *reinterpret_cast<int4*>(entry) = corners;
    *reinterpret_cast<float4*>(entry + 16) = weights;
  }
}

// Producer thread: rows first_row + 32u (u < kUnits) of the tile (of this block's half when the
// cluster shares A tiles: stored in both blocks), 16-byte chunk `chunk` of each row, for every K
// step of the launch's chunk. K steps run over the group's channel slabs
// (kBlockK channels) [slabs.begin, slabs.end) and within a slab over the taps, so that the
// corners a slab reads at one tap are in L1 when its other taps read them again. A slab lies in
// one deformable group (cpd is a multiple of kBlockK); the sample table is refilled when the
// deformable group changes.
template <typename T, typename L>
__device__ __forceinline__ void Produce(const DcnShape& s, const T* input, const T* offset,
                                        const T* mask, const CUtensorMap* weights, char* smem,
                                        uint32_t smem_addr, int64_t m0, int b_row0, int group,
                                        SlabRange slabs) {
  constexpr int kParts = L::kParts;
  constexpr int V = kVector<T>;
  constexpr int kRowsPerPass = kProducers / kChunks;
  constexpr int kRows = L::kSharesA ? L::kM / kCluster : L::kM;  // this block's rows to gather
  constexpr int kUnits = kRows / kRowsPerPass;
  const int row_begin = L::kSharesA ? static_cast<int>(ClusterRank()) * kRows : 0;
  const uint32_t peer_smem = PeerSmem<L>(smem_addr);
  const int chunk = threadIdx.x % kChunks;
  const int first_row = row_begin + threadIdx.x / kChunks;
  // Rows of one thread are 32 apart: the same row % 8, so one swizzled position for all.
  const int swizzled = (chunk ^ (first_row % 8)) * 16;
  const int cpg = static_cast<int>(s.in_channels_per_group());
  const int cpd = static_cast<int>(s.channels_per_deformable_group());
  const int taps = s.taps();
  // Offsets within an image fit in 32 bits (CheckProblem): cheaper address arithmetic.
  const int cin = static_cast<int>(s.in_channels);
  char* table = smem + L::kTableAt;

  const T* image[kUnits];
#pragma unroll
  for (int u = 0; u < kUnits; ++u) {
    const int64_t p = m0 + first_row + u * kRowsPerPass;
    image[u] = input + LocateOutputPixel(s, p < s.pixels() ? p : 0).n * s.image_elements();
  }
  int kt = 0, table_d = -1;
  for (int c0 = group * cpg + slabs.begin * kBlockK<T>; c0 < group * cpg + slabs.end * kBlockK<T>;
       c0 += kBlockK<T>) {
    if (c0 / cpd != table_d) {
      if (table_d >= 0) ProducerBarrier();  // every producer is done with the old table
      table_d = c0 / cpd;
      FillSampleTable<T, L>(s, offset, mask, table, m0, table_d, row_begin, kRows);
      ProducerBarrier();
    }
    const int c = c0 + chunk * V;
    // Loads the corner chunks of `tap` into registers.
    auto issue = [&](int tap, uint4(&raw)[kUnits][4]) {
#pragma unroll
      for (int u = 0; u < kUnits; ++u) {
        const int4 corner = *reinterpret_cast<const int4*>(
            table + ((first_row + u * kRowsPerPass) * taps + tap) * L::kTableEntryBytes);
        const int pixel[4] = {corner.x, corner.y, corner.z, corner.w};
#pragma unroll
        for (int k = 0; k < 4; ++k) {
          raw[u][k] =
              pixel[k] >= 0 ? LoadChunk(image[u] + (pixel[k] * cin + c)) : make_uint4(0, 0, 0, 0);
        }
      }
    };
    // Blends the loaded corners of `tap` into the A tile of step kt once its stage is free (the
    // TMA of the step's weights starts then too) and hands the stage to the consumers.
    auto finish = [&](int tap, const uint4(&raw)[kUnits][4]) {
      WaitStageFree<L>(smem_addr, kt);
      if (threadIdx.x == 0) {
        // The step's first K: its row of the weights [taps x cpg][Cout] (MN-major), or its
        // column of the chunk's transposed copy.
        const int k = kMnMajorB<T> ? tap * cpg + (c0 - group * cpg) : kt * kBlockK<T>;
        LoadBTile<T, L>(weights, smem_addr, kt, k, b_row0, static_cast<int>(s.out_channels));
      }
      char* a_tile = smem + (kt % L::kStages) * L::kAStageBytes;
      const ATileStore<L> store(smem, peer_smem, kt);
#pragma unroll
      for (int u = 0; u < kUnits; ++u) {
        const int row = first_row + u * kRowsPerPass;
        const float4 w4 =
            *reinterpret_cast<const float4*>(table + (row * taps + tap) * L::kTableEntryBytes + 16);
        const float w[4] = {w4.x, w4.y, w4.z, w4.w};
        Chunk<T> corners[4], out[kParts];
#pragma unroll
        for (int k = 0; k < 4; ++k) corners[k] = *reinterpret_cast<const Chunk<T>*>(&raw[u][k]);
        BlendChunk(corners, w, out);
#pragma unroll
        for (int part = 0; part < kParts; ++part) {
          store(a_tile + part * L::kABytes + row * kRowBytes + swizzled, out[part]);
        }
      }
      PublishStage<L>(smem_addr, kt);
      ++kt;
    };
    uint4 raw[kUnits][4];
    if constexpr (kUnits <= 2) {
      // Two taps in flight: the next tap's loads are issued before this tap is blended.
      uint4 next[kUnits][4];
      issue(0, raw);
      for (int tap = 0; tap < taps; tap += 2) {
        if (tap + 1 < taps) issue(tap + 1, next);
        finish(tap, raw);
        if (tap + 1 < taps) {
          if (tap + 2 < taps) issue(tap + 2, raw);
          finish(tap + 1, next);
        }
      }
    } else {
      // Four rows a thread: registers for one tap's loads only.
      for (int tap = 0; tap < taps; ++tap) {
        issue(tap, raw);
        finish(tap, raw);
      }
    }
  }
}

// Synchronises the consumer warpgroups alone (named barrier 2).
__device__ __forceinline__ void ConsumerBarrier() {
  asm volatile("bar.sync 2, %0;\n" ::"n"(kConsumers) : "memory");
}

// The epilogue of 4-byte types: the tile, bias added, staged in the stages' shared memory (free
// once both warpgroups' products are done) in rows of kN + 8 floats (a warp's pair stores and
// 16-byte reads meet no bank conflicts), then copied out along rows in 16-byte chunks, or added
// to what the output holds after the first K chunk. Stored straight from the accumulators a
// thread's 8-byte pairs land over 8 rows per warp store: staged, the TF32 forward at 8x64x64x128
// took 0.104 -> 0.100 ms and the strict fp32 one at 4x32x32x512 0.255 -> 0.247 (H200, notes of
// 2026-12-03, run22); fp16/bf16, with half the bytes, lost 6-8% and store their pairs directly.
template <typename T, typename L>
__device__ __forceinline__ void StoreStagedTile(const DcnShape& s, const float (&acc)[64],
                                                const T* b, T* out, char* smem,
                                                WarpgroupTile<L> tile, int64_t m0, int64_t n0,
                                                bool accumulate) {
  static_assert(sizeof(T) == 4, "4-byte types");
  constexpr int kStride = L::kN + 8, V = 4, kRowChunks = L::kN / V;
  static_assert(int64_t{L::kM} * kStride * 4 <= L::kFullAt, "the staged tile fits the stages");
  const int64_t cog = s.out_channels_per_group();
  float* staged = reinterpret_cast<float*>(smem);
  ConsumerBarrier();  // both warpgroups are done with the stages
#pragma unroll
  for (int j = 0; j < kWarpgroupN / 8; ++j) {
    const int col = tile.col0 + AccumulatorColumn(j);
    const float b0 = (b && n0 + col < cog) ? static_cast<float>(b[n0 + col]) : 0.f;
    const float b1 = (b && n0 + col + 1 < cog) ? static_cast<float>(b[n0 + col + 1]) : 0.f;
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const int row = tile.row0 + AccumulatorRow(h);
      *reinterpret_cast<float2*>(staged + row * kStride + col) =
          make_float2(acc[4 * j + 2 * h] + b0, acc[4 * j + 2 * h + 1] + b1);
    }
  }
  ConsumerBarrier();
  const bool vector_stores =
      reinterpret_cast<uintptr_t>(out) % 16 == 0 && s.out_channels % V == 0 && cog % V == 0;
  for (int e = threadIdx.x - kProducers; e < L::kM * kRowChunks; e += kConsumers) {
    const int row = e / kRowChunks, col = e % kRowChunks * V;
    const int64_t p = m0 + row, n = n0 + col;
    if (p >= s.pixels() || n >= cog) continue;
    float4 v = *reinterpret_cast<const float4*>(staged + row * kStride + col);
    T* o = out + p * s.out_channels + n;
    if (vector_stores && n + V <= cog) {
      if (accumulate) {  // only fp32 runs in K chunks
        const float4 held = *reinterpret_cast<const float4*>(o);
        v = make_float4(v.x + held.x, v.y + held.y, v.z + held.z, v.w + held.w);
      }
      *reinterpret_cast<float4*>(o) = v;
      continue;
    }
    const float x[V] = {v.x, v.y, v.z, v.w};
#pragma unroll
    for (int i = 0; i < V; ++i) {
      if (n + i < cog) o[i] = accumulate ? o[i] + x[i] : x[i];
    }
  }
}

// Consumer warpgroup: its part of the tile over every K step, then the epilogue: the bias and the
// store, or after the first K chunk the sum with what the output holds.
template <typename T, typename L>
__device__ __forceinline__ void Consume(const DcnShape& s, const T* bias, T* output, char* smem,
                                        uint32_t smem_addr, int64_t m0, int64_t n0, int group,
                                        int ktiles, bool pair_stores, bool accumulate) {
  const WarpgroupTile<L> tile((threadIdx.x - kProducers) / 128);
  float acc[64];
  MultiplySteps<T>(acc, smem_addr, tile, ktiles);
  const int64_t cog = s.out_channels_per_group();
  T* out = output + group * cog;
  const T* b = bias ? bias + group * cog : nullptr;
  if constexpr (sizeof(T) == 4) {
    StoreStagedTile<T, L>(s, acc, b, out, smem, tile, m0, n0, accumulate);
  } else {
    // fp16/bf16 (no K chunks): the bias once per column pair and added unconditionally (zero
    // without one): a per-element form with conditional adds and 16-bit stores cost the forward
    // 5-12% on the H200 (notes of 2026-12-01).
#pragma unroll
    for (int j = 0; j < kWarpgroupN / 8; ++j) {
      const int64_t n = n0 + tile.col0 + AccumulatorColumn(j);
      const float b0 = (b && n < cog) ? static_cast<float>(b[n]) : 0.f;
      const float b1 = (b && n + 1 < cog) ? static_cast<float>(b[n + 1]) : 0.f;
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        const int64_t p = m0 + tile.row0 + AccumulatorRow(h);
        if (p >= s.pixels() || n >= cog) continue;
        const float v0 = acc[4 * j + 2 * h] + b0, v1 = acc[4 * j + 2 * h + 1] + b1;
        T* o = out + p * s.out_channels + n;
        if (pair_stores && n + 1 < cog) {
          Vec<T, 2> pair;
          pair.e[0] = FromFloat<T>(v0);
          pair.e[1] = FromFloat<T>(v1);
          *reinterpret_cast<Vec<T, 2>*>(o) = pair;
        } else {
          o[0] = FromFloat<T>(v0);
          if (n + 1 < cog) o[1] = FromFloat<T>(v1);
        }
      }
    }
  }
}

// Block (x: pixel tile, y: channel tile, z: group), for the channel slabs `slabs` of its group.
// `weights` maps the weights as they lie, [taps * Cin/groups][Cout] (fp16/bf16), or those slabs'
// weights transposed, [Cout][taps * slabs * kBlockK] (TF32); `pair_stores`: fp16/bf16 output
// pairs are aligned for one store; `accumulate`: add to the output (a later fp32 K chunk). A
// cluster is two pixel tiles (sharing B tiles) or, kShareA, two channel tiles (sharing A tiles).
template <typename T, int kBlockM, int kBlockN, int kParts, bool kShareA = false>
__global__ void __cluster_dims__(kShareA ? 1 : kCluster, kShareA ? kCluster : 1, 1)
    __launch_bounds__(kThreads, 1)
        ForwardKernel(const __grid_constant__ CUtensorMap weights, DcnShape s, const T* input,
                      const T* offset, const T* mask, const T* bias, T* output, int64_t row0,
                      SlabRange slabs, bool pair_stores, bool accumulate) {
#if defined(DCN_WGMMA_SM90A_DEVICE)
  using L = Layout<kBlockM, kBlockN, kParts, kShareA>;
  extern __shared__ char smem_raw[];
  uint32_t smem_addr;
  char* smem = StartTile<L>(smem_raw, &smem_addr);

  const int group = blockIdx.z;
  const int64_t m0 = row0 + int64_t{blockIdx.x} * kBlockM;
  const int64_t n0 = int64_t{blockIdx.y} * kBlockN;
  const int ktiles = s.taps() * (slabs.end - slabs.begin);
  if (threadIdx.x < kProducers) {
    asm volatile("setmaxnreg.inc.sync.aligned.u32 %0;\n" ::"n"(kProducerRegisters));
    const int b_row0 = static_cast<int>(group * BGroupColumns<T>(s) + n0);
    Produce<T, L>(s, input, offset, mask, &weights, smem, smem_addr, m0, b_row0, group, slabs);
  } else {
    asm volatile("setmaxnreg.dec.sync.aligned.u32 %0;\n" ::"n"(kConsumerRegisters));
    Consume<T, L>(s, accumulate ? nullptr : bias, output, smem, smem_addr, m0, n0, group, ktiles,
                  pair_stores, accumulate);
  }
  ClusterSync();  // neither block leaves while the other may still arrive on its barriers
#else
  __trap();
#endif
}

// ---------------------------------------------------------------------------------------------
// The backward weight kernel.
// ---------------------------------------------------------------------------------------------
//
// grad_weight[k][n] = sum over pixels p of column(p, k) x grad_output[p][n], k = tap x Cin/groups
// + channel (the weight's row within a group). A block tile is kBlockM rows k x kBlockN output
// channels; its K steps run over kBlockK pixels. The producers store the gathered columns as
// MN-major A rows of channels (fp16/bf16) or as K-major A rows of pixels (TF32) (ProduceColumns;
// TF32's 128-row tiles ProduceColumnsSharedSample);
// the B tiles arrive by TMA, from grad_output as it lies (fp16/bf16, MN-major) or transposed into
// the workspace (TF32, K-major). Blocks split the pixels and add their tiles into a float
// grad_weight with atomics.

// Pixels [first, first + kCount) of row `row` of a K-major A tile, in each operand part
// (part_bytes apart): the values as wgmma reads them, kCount x sizeof(T) <= 16 bytes at once
// through `store` (ATileStore).
template <typename T, int kParts, int kCount, typename Store>
__device__ __forceinline__ void StoreRowPixels(char* tile, int part_bytes, int row, int first,
                                               const float (&v)[kCount], const Store& store) {
  static_assert(kCount * sizeof(T) <= 16, "within one 16-byte chunk of the swizzle");
  const int byte = first * static_cast<int>(sizeof(T));
  char* at = tile + row * kRowBytes + ((byte / 16) ^ (row % 8)) * 16 + byte % 16;
  Vec<T, kCount> parts[kParts];
#pragma unroll
  for (int i = 0; i < kCount; ++i) {
    T operand[kParts];
    ToOperand(v[i], operand);
#pragma unroll
    for (int part = 0; part < kParts; ++part) parts[part].e[i] = operand[part];
  }
#pragma unroll
  for (int part = 0; part < kParts; ++part) store(at + part * part_bytes, parts[part]);
}

// The corners of `sample` at output pixel p, which lies at `at` (pixel indices in the image, -1
// outside), and their bilinear weights times the mask.
template <typename T>
__device__ __forceinline__ void MaskedCorners(const DcnShape& s, int64_t p, const OutputPixel& at,
                                              int sample, const T* offset, const T* mask,
                                              int (&corner)[4], float (&weight)[4]) {
  BilinearPoint<float> point;
  float m;
  MakeSample(s, p, at, sample, offset, mask, &point, &m);
#pragma unroll
  for (int e = 0; e < 4; ++e) {
    corner[e] = point.pixel[e];
    weight[e] = point.weight[e] * m;
  }
}

// Channels 2e and 2e + 1 of kCount pixels' corner chunks, blended with their weights.
template <typename T, int kCount>
__device__ __forceinline__ void BlendPairs(const Chunk<T> (&corners)[kCount][4],
                                           const float (&weight)[kCount][4], int e,
                                           float (&even)[kCount], float (&odd)[kCount]) {
#pragma unroll
  for (int i = 0; i < kCount; ++i) {
    even[i] = odd[i] = 0.f;
#pragma unroll
    for (int corner = 0; corner < 4; ++corner) {
      const float2 x = PairToFloat2(corners[i][corner], e);
      even[i] += weight[i][corner] * x.x;
      odd[i] += weight[i][corner] * x.y;
    }
  }
}

// A producer of the backward weight with step kt's corners in registers: waits until the step's
// stage is free, has thread 0 start its B tile, and returns its A tile.
template <typename T, typename L>
__device__ __forceinline__ char* ClaimColumnStage(const DcnShape& s,
                                                  const CUtensorMap* grad_output_map, char* smem,
                                                  uint32_t smem_addr, int kt, int q0, int b_row0) {
  WaitStageFree<L>(smem_addr, kt);
  if (threadIdx.x == 0) {
    LoadBTile<T, L>(grad_output_map, smem_addr, kt, q0, b_row0, static_cast<int>(s.out_channels));
  }
  return smem + (kt % L::kStages) * L::kAStageBytes;
}

// The backward weight's sample table: per sample (tap and deformable group) of the tile's rows
// and pixel of a K step, the four corners (pixel index in the image, -1 outside), their bilinear
// weights times the mask, and where the pixel's image starts in the input. ProduceColumns keeps
// an entry per 128-byte chunk of rows (kBlockK rows, one sample) in three buffers, step kt's in
// buffer kt % 3, filled during step kt - 2; ProduceColumnsSharedSample its own layout below.
struct alignas(16) ColumnSample {
  int corner[4];
  float weight[4];
  int64_t image;
  int64_t padding;  // 48 bytes: three 16-byte stores
};
constexpr int kColumnBuffers = 3;
// TF32 on 128-row tiles: ProduceColumnsSharedSample, whose warps share the samples of their runs;
// its table has two buffers of kRunSamples entries (per producer warp, one step's pixels).
template <typename T, int kBlockM>
constexpr bool kSharedSampleColumns = sizeof(T) == 4 && kBlockM == 128;
template <typename T>
constexpr int kRunSamples = kBlockK<T> * (kProducers / 32);
template <typename T, int kBlockM>  // ProduceColumns: kBlockM entries per buffer
constexpr int64_t kColumnTableBytes =
    (kSharedSampleColumns<T, kBlockM> ? 2 * kRunSamples<T> : kColumnBuffers * kBlockM) *
    int64_t{sizeof(ColumnSample)};
// fp16/bf16 store the A tile MN-major, a row of channels per pixel; TF32 K-major (transposed).
template <typename T>
constexpr bool kMnMajorColumns = sizeof(T) == 2;

// The sample that the rows [k, k + rows) of group `group` take (tap and deformable group), or -1
// beyond the group's K.
__device__ __forceinline__ int RowsSample(const DcnShape& s, int k, int group) {
  const int cpg = static_cast<int>(s.in_channels_per_group());
  if (k >= s.taps() * cpg) return -1;
  const int tap = k / cpg;
  const int c = group * cpg + (k - tap * cpg);
  return static_cast<int>(c / s.channels_per_deformable_group()) * s.taps() + tap;
}

// The entries of pixels [q0, q0 + kBlockK) for `sample` into `entries`, by run_size x 32
// threads (this one is `member`).
template <typename T>
__device__ __forceinline__ void FillColumnSamples(const DcnShape& s, const T* offset, const T* mask,
                                                  ColumnSample* entries, int sample, int member,
                                                  int run_size, int64_t chunk_begin, int q0,
                                                  int q_end) {
  for (int i = member; i < kBlockK<T>; i += 32 * run_size) {
    ColumnSample entry;
    entry.image = 0;
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      entry.corner[e] = -1;
      entry.weight[e] = 0.f;
    }
    if (sample >= 0 && q0 + i < q_end) {
      const int64_t p = chunk_begin + q0 + i;
      const OutputPixel at = LocateOutputPixel(s, p);
      MaskedCorners(s, p, at, sample, offset, mask, entry.corner, entry.weight);
      entry.image = at.n * s.image_elements();
    }
    entries[i] = entry;
  }
}

// The corner chunks of a table entry's sample (zero outside), `lane_input` at this lane's
// channels in the first image, as Corner (uint4 or Chunk<T>), and their weights.
template <typename T, typename Corner>
__device__ __forceinline__ void LoadEntryCorners(const ColumnSample& entry, const T* lane_input,
                                                 int cin, Corner (&corners)[4],
                                                 float (&weight)[4]) {
  static_assert(sizeof(Corner) == 16, "one 16-byte chunk a corner");
  const int4 corner = *reinterpret_cast<const int4*>(entry.corner);
  const float4 w = *reinterpret_cast<const float4*>(entry.weight);
  const T* image = lane_input + entry.image;
  const int at[4] = {corner.x, corner.y, corner.z, corner.w};
  weight[0] = w.x;
  weight[1] = w.y;
  weight[2] = w.z;
  weight[3] = w.w;
#pragma unroll
  for (int e = 0; e < 4; ++e) {
    const uint4 raw = at[e] >= 0 ? LoadChunk(image + at[e] * cin) : make_uint4(0, 0, 0, 0);
    corners[e] = *reinterpret_cast<const Corner*>(&raw);
  }
}

// Producer thread of the TF32 backward weight on 128-row tiles. Warp w fills rows [kRows w, kRows
// (w + 1)) of each step's A tile: one tap and deformable group, as kRows divides the channels per
// group and per deformable group. The samples come from the table (ColumnSample), whose entries
// the run of warps that share a sample fills together, a step ahead. The corners
// are read along the channels: the kLanes lanes of a lane group take the group's kGroupPix
// neighbouring pixels, lane i of the group the 16-byte chunk i of the warp's rows, so that each
// load instruction reads whole sectors. A lane blends its chunk at the group's pixels and stores
// each of its rows' kGroupPix pixels at once. Pixels [q_begin, q_end) of the chunk that starts
// at pixel chunk_begin; rows beyond the group's K read zero.
template <typename T, typename L>
__device__ __forceinline__ void ProduceColumnsSharedSample(
    const DcnShape& s, const T* input, const T* offset, const T* mask,
    const CUtensorMap* grad_output_map, char* smem, uint32_t smem_addr, int k0, int group,
    int64_t chunk_begin, int q_begin, int q_end, int steps, int b_row0) {
  static_assert(!L::kSharesA, "128-row tiles share B tiles");
  constexpr int V = kVector<T>;
  constexpr int kWarps = kProducers / 32;
  constexpr int kRows = L::kM / kWarps;
  constexpr int kLanes = kRows / V;  // lanes of a lane group: one 16-byte chunk of the rows each
  constexpr int kGroupPix = kBlockK<T> / (32 / kLanes);
  static_assert(kLanes == 4 && kGroupPix * sizeof(T) == 16 && V == 4, "TF32 on 128-row tiles");
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int lane_chunk = lane % kLanes;
  const int group_pixel0 = (lane / kLanes) * kGroupPix;  // the lane group's first pixel
  const int cin = static_cast<int>(s.in_channels);       // 32-bit indexing within an image
  const int sample = RowsSample(s, k0 + warp * kRows, group);
  int run0 = warp, run_end = warp + 1;  // the run of warps that share the sample
  while (run0 > 0 && RowsSample(s, k0 + (run0 - 1) * kRows, group) == sample) --run0;
  while (run_end < kWarps && RowsSample(s, k0 + run_end * kRows, group) == sample) ++run_end;
  const int member = (warp - run0) * 32 + lane;
  ColumnSample* table = reinterpret_cast<ColumnSample*>(smem + L::kTableAt) + run0 * kBlockK<T>;
  const T* lane_input = input +
                        (sample < 0 ? 0
                                    : group * s.in_channels_per_group() +
                                          (k0 + warp * kRows) % s.in_channels_per_group()) +
                        lane_chunk * V;
  FillColumnSamples(s, offset, mask, table, sample, member, run_end - run0, chunk_begin, q_begin,
                    q_end);
  ProducerBarrier();
  for (int kt = 0; kt < steps; ++kt) {
    const int q0 = q_begin + kt * kBlockK<T>;
    const ColumnSample* entries = table + (kt % 2) * kRunSamples<T>;
    Chunk<T> corners[kGroupPix][4];
    float weight[kGroupPix][4];
#pragma unroll
    for (int i = 0; i < kGroupPix; ++i) {
      LoadEntryCorners(entries[group_pixel0 + i], lane_input, cin, corners[i], weight[i]);
    }
    if (kt + 1 < steps) {
      FillColumnSamples(s, offset, mask, table + ((kt + 1) % 2) * kRunSamples<T>, sample, member,
                        run_end - run0, chunk_begin, q0 + kBlockK<T>, q_end);
    }
    char* a_tile = ClaimColumnStage<T, L>(s, grad_output_map, smem, smem_addr, kt, q0, b_row0);
    const ATileStore<L> store(smem, 0, kt);
    float even[2][kGroupPix], odd[2][kGroupPix];  // channels 2e and 2e + 1 of the chunk, e < 2
#pragma unroll
    for (int e = 0; e < 2; ++e) BlendPairs(corners, weight, e, even[e], odd[e]);
    // The 8 lanes of a quarter warp (whose 16-byte stores share a pass through the banks) hold
    // lane chunks 0-3 of two pixel groups: storing their pair e in the same instruction put
    // chunks 0 and 2 (1 and 3) on rows 8 apart, one 16-byte column of the swizzle (two passes).
    // Lane chunks 2 and 3 store their pairs in the other order: eight columns, one pass.
    const bool swap = lane_chunk & 2;
#pragma unroll
    for (int k = 0; k < 2; ++k) {
      float even_k[kGroupPix], odd_k[kGroupPix];
#pragma unroll
      for (int i = 0; i < kGroupPix; ++i) {
        even_k[i] = swap ? even[1 - k][i] : even[k][i];
        odd_k[i] = swap ? odd[1 - k][i] : odd[k][i];
      }
      const int row = warp * kRows + lane_chunk * V + 2 * (k ^ int{swap});
      StoreRowPixels<T, L::kParts>(a_tile, L::kABytes, row, group_pixel0, even_k, store);
      StoreRowPixels<T, L::kParts>(a_tile, L::kABytes, row + 1, group_pixel0, odd_k, store);
    }
    PublishStage<L>(smem_addr, kt);
    ProducerBarrier();  // step kt + 1's entries are in; every warp is done with step kt's
  }
}

// v[j] becomes v[(j + r) % 4], r < 4 (selects rather than a local array).
__device__ __forceinline__ void RotateLeft(float (&v)[4], int r) {
  const bool one = r & 1, two = r & 2;
  const float a0 = one ? v[1] : v[0], a1 = one ? v[2] : v[1];
  const float a2 = one ? v[3] : v[2], a3 = one ? v[0] : v[3];
  v[0] = two ? a2 : a0;
  v[1] = two ? a3 : a1;
  v[2] = two ? a0 : a2;
  v[3] = two ? a1 : a3;
}

// Lanes 8s + l (s < 4) of a warp hold v[j] = M[s][j] of a 4 x 4 matrix per l; afterwards v[j] =
// M[j][s]: two exchanges, over lane bit 3 (bit 0 of s) and lane bit 4 (bit 1 of s), each swapping
// the two elements whose bit differs from the lane's. The two steps are written out: as a loop
// over them, with the indices computed, nvcc put v on the stack.
__device__ __forceinline__ void TransposeAcrossLanes(float (&v)[4]) {
  const int s = (threadIdx.x % 32) / 8;
  const bool odd = s & 1;
  const float a0 = __shfl_xor_sync(0xffffffffu, odd ? v[0] : v[1], 8);
  const float a1 = __shfl_xor_sync(0xffffffffu, odd ? v[2] : v[3], 8);
  if (odd) {
    v[0] = a0;
    v[2] = a1;
  } else {
    v[1] = a0;
    v[3] = a1;
  }
  const bool high = s & 2;
  const float b0 = __shfl_xor_sync(0xffffffffu, high ? v[0] : v[2], 16);
  const float b1 = __shfl_xor_sync(0xffffffffu, high ? v[1] : v[3], 16);
  if (high) {
    v[0] = b0;
    v[1] = b1;
  } else {
    v[2] = b0;
    v[3] = b1;
  }
}

// Producer thread of the backward weight. The tile's rows come in chunks of kBlockK (128 bytes
// of channels: one tap and deformable group, as kBlockK divides the channels per group and per
// deformable group), and the corners are read as the forward reads them: the 8 lanes of a pixel
// take its 128 bytes of a chunk's channels; thread t blends 16-byte piece t % 8 of pixels t / 8
// (and t / 8 + 32 for fp16/bf16) of each chunk. fp16/bf16 store the A tile MN-major (wgmma reads
// it transposed): per chunk kBlockK rows of 128 bytes, one per pixel, as the forward lays out its
// A rows. TF32 (64-row tiles) stores it K-major, as wgmma reads TF32: a warp's four pixels are
// transposed across its lanes, so that each lane holds one channel at four consecutive pixels, 16
// bytes of a row. (On TF32's 128-row tiles, one tap when the channels per group are 128, the
// table per chunk worked each sample out four times: 68% more instructions than
// ProduceColumnsSharedSample at 8x64x64x128 on the H200.)
// When the cluster shares A tiles (L::kSharesA, 64-row tiles), this block gathers half of each
// and stores it in both blocks: chunk `rank` of TF32's two, or pass `rank` of fp16/bf16's two
// (pixels t / 8 + 32 rank; the table still holds both passes' entries).
// The work runs in units of one chunk of one step; where a block has several chunks a step the
// next unit's corner loads are issued before this unit is blended (fp16 on the H200: 3-6% faster
// on 128-row tiles, 2-5% slower on the 64-row tile of one chunk; with a shared TF32 tile's one
// chunk 0.212 ms without against 0.234 with, docs/notes of 2026-12-03, run19). The samples come
// from a table of three buffers (ColumnSample), kBlockK threads per chunk filling the entries of
// step kt + 2 during step kt. Pixels [q_begin, q_end) of the chunk that starts at pixel
// chunk_begin; chunks beyond the group's K read zero.
template <typename T, typename L>
__device__ __forceinline__ void ProduceColumns(const DcnShape& s, const T* input, const T* offset,
                                               const T* mask, const CUtensorMap* grad_output_map,
                                               char* smem, uint32_t smem_addr, int k0, int group,
                                               int64_t chunk_begin, int q_begin, int q_end,
                                               int steps, int b_row0) {
  constexpr int V = kVector<T>;
  constexpr int kRowChunks = L::kM / kBlockK<T>;
  constexpr int kPixelsPerPass = kProducers / kChunks;
  constexpr int kPasses = kBlockK<T> / kPixelsPerPass;
  // This block's share of a tile: kBlockChunks chunks from chunk0, kBlockPasses passes from pass0.
  constexpr bool kSplitChunks = L::kSharesA && kRowChunks > 1;
  constexpr bool kSplitPasses = L::kSharesA && kRowChunks == 1;
  constexpr int kBlockChunks = kSplitChunks ? kRowChunks / kCluster : kRowChunks;
  constexpr int kBlockPasses = kSplitPasses ? kPasses / kCluster : kPasses;
  static_assert(!L::kSharesA || (kSplitChunks ? kRowChunks : kPasses) == kCluster,
                "a shared tile: one chunk or one pass per block");
  constexpr bool kPrefetch = kBlockChunks > 1;
  static_assert(kChunks * V == kBlockK<T> && kPasses >= 1, "a chunk's rows: 128 bytes a pixel");
  static_assert(kMnMajorColumns<T> || (kPasses == 1 && V == 4), "TF32: one pass, 4 channels");
  const int rank = L::kSharesA ? static_cast<int>(ClusterRank()) : 0;
  const int chunk0 = kSplitChunks ? rank * kBlockChunks : 0;
  const int pass0 = kSplitPasses ? rank * kBlockPasses : 0;
  const uint32_t peer_smem = PeerSmem<L>(smem_addr);
  const int piece = threadIdx.x % kChunks;
  const int first_pixel = threadIdx.x / kChunks;
  // The pixels of one thread are kPixelsPerPass apart: the same row % 8, one swizzled position.
  const int swizzled = (piece ^ (first_pixel % 8)) * 16;
  const int cpg = static_cast<int>(s.in_channels_per_group());
  const int cin = static_cast<int>(s.in_channels);    // 32-bit indexing within an image
  const int filler_chunk = threadIdx.x / kBlockK<T>;  // the chunk whose entries this thread fills
  const int fill_sample = RowsSample(s, k0 + (chunk0 + filler_chunk) * kBlockK<T>, group);
  // This lane's channels of chunk c (rows beyond the group's K sample nothing).
  const auto chunk_input = [&](int c) {
    return input + group * cpg + (k0 + c * kBlockK<T>) % cpg + piece * V;
  };
  ColumnSample* table = reinterpret_cast<ColumnSample*>(smem + L::kTableAt);
  auto fill = [&](int kt) {
    if (filler_chunk < kBlockChunks) {
      FillColumnSamples(
          s, offset, mask,
          table + (kt % kColumnBuffers) * L::kM + (chunk0 + filler_chunk) * kBlockK<T>, fill_sample,
          threadIdx.x % kBlockK<T>, kBlockK<T> / 32, chunk_begin, q_begin + kt * kBlockK<T>, q_end);
    }
  };
  // Unit i: chunk chunk0 + i % kBlockChunks of step i / kBlockChunks; its corner chunks and
  // weights.
  struct Unit {
    uint4 raw[kBlockPasses][4];
    float weight[kBlockPasses][4];
  };
  auto issue = [&](int i, Unit& unit) {
    const int kt = i / kBlockChunks, c = chunk0 + i % kBlockChunks;
    const ColumnSample* entries = table + (kt % kColumnBuffers) * L::kM + c * kBlockK<T>;
#pragma unroll
    for (int u = 0; u < kBlockPasses; ++u) {
      LoadEntryCorners(entries[first_pixel + (pass0 + u) * kPixelsPerPass], chunk_input(c), cin,
                       unit.raw[u], unit.weight[u]);
    }
  };
  const int units = steps * kBlockChunks;
  char* a_tile = nullptr;
  // Blends unit i (with kPrefetch issued before, and unit i + 1 issued into `next` first); a
  // step's first unit claims its stage and fills the entries of step kt + 2, its last publishes
  // the stage.
  auto run = [&](int i, Unit& unit, Unit& next) {
    const int kt = i / kBlockChunks, c = chunk0 + i % kBlockChunks;
    if constexpr (kPrefetch) {
      if (i + 1 < units) issue(i + 1, next);
    } else {
      issue(i, unit);
    }
    if (c == chunk0) {
      if (kt + 2 < steps) fill(kt + 2);
      a_tile = ClaimColumnStage<T, L>(s, grad_output_map, smem, smem_addr, kt,
                                      q_begin + kt * kBlockK<T>, b_row0);
    }
    const ATileStore<L> store(smem, peer_smem, kt);
#pragma unroll
    for (int u = 0; u < kBlockPasses; ++u) {
      Chunk<T> corners[4];
#pragma unroll
      for (int e = 0; e < 4; ++e) corners[e] = *reinterpret_cast<const Chunk<T>*>(&unit.raw[u][e]);
      const int pixel = first_pixel + (pass0 + u) * kPixelsPerPass;
      if constexpr (kMnMajorColumns<T>) {
        Chunk<T> out[1];
        BlendChunk(corners, unit.weight[u], out);
        store(a_tile + (c * kBlockK<T> + pixel) * kRowBytes + swizzled, out[0]);
      } else {
        // v: channels 4 piece.. of this lane's pixel, rotated by `turn`; after the transpose
        // channel 4 piece + (pixel % 4 + turn) % 4 of the warp's four pixels. The 8 lanes of a
        // quarter warp (one pixel, pieces 0-7; their 16-byte stores share a pass through the
        // banks) would otherwise store rows of two residues mod 8, four lanes on each 16-byte
        // column of the swizzle (4 passes instead of 1; 64-row TF32 tiles on the H200, ncu).
        const int turn = piece / 2;
        float v[V];
        BlendValues(corners, unit.weight[u], v);
        RotateLeft(v, turn);
        TransposeAcrossLanes(v);
        StoreRowPixels<T, L::kParts>(a_tile, L::kABytes,
                                     c * kBlockK<T> + piece * V + (pixel % 4 + turn) % 4,
                                     pixel - pixel % 4, v, store);
      }
    }
    if (c == chunk0 + kBlockChunks - 1) {
      PublishStage<L>(smem_addr, kt);
      // Step kt + 2's entries are in; every thread is done reading step kt - 1's buffer, which
      // step kt + 1 refills.
      ProducerBarrier();
    }
  };
  fill(0);
  if (steps > 1) fill(1);
  ProducerBarrier();
  Unit a, b;
  if (kPrefetch && units > 0) issue(0, a);
  for (int i = 0; i < units; i += 2) {
    run(i, a, b);
    if (i + 1 < units) run(i + 1, b, a);
  }
}

// Block (x: tile of rows k from row_tile0, y: pixel split, z: group x channel tile); a cluster's
// two blocks are neighbouring row tiles and share each step's B tile or, kShareA, neighbouring
// channel tiles of a group that share each step's A tile. Adds the sums over pixels
// [q_begin, q_end) of the chunk that starts at chunk_begin into grad_weight_acc (weight layout,
// float); `grad_output_map` maps the chunk's grad_output as the kernel reads it: [pixels][Cout]
// (fp16/bf16) or transposed, [Cout][pixels] (TF32).
template <typename T, int kBlockM, int kBlockN, int kParts, bool kShareA = false>
__global__ void __cluster_dims__(kShareA ? 1 : kCluster, 1,
                                 kShareA ? kCluster : 1) __launch_bounds__(kThreads, 1)
    WeightKernel(const __grid_constant__ CUtensorMap grad_output_map, DcnShape s, const T* input,
                 const T* offset, const T* mask, float* grad_weight_acc, int64_t chunk_begin,
                 int chunk_pixels, int pixels_per_split, int channel_tiles, int row_tile0) {
#if defined(DCN_WGMMA_SM90A_DEVICE)
  using L = Layout<kBlockM, kBlockN, kParts, kShareA>;
  extern __shared__ char smem_raw[];
  uint32_t smem_addr;
  char* smem = StartTile<L>(smem_raw, &smem_addr);

  const int cog = static_cast<int>(s.out_channels_per_group());
  const int group = blockIdx.z / channel_tiles;
  const int n0 = (blockIdx.z % channel_tiles) * kBlockN;
  const int k0 = (row_tile0 + blockIdx.x) * kBlockM;
  const int q_begin = blockIdx.y * pixels_per_split;
  const int q_end = min(chunk_pixels, q_begin + pixels_per_split);
  const int steps = (q_end - q_begin + kBlockK<T> - 1) / kBlockK<T>;
  if (threadIdx.x < kProducers) {
    asm volatile("setmaxnreg.inc.sync.aligned.u32 %0;\n" ::"n"(kProducerRegisters));
    const int b_row0 = group * BGroupColumns<T>(s) + n0;
    if constexpr (kSharedSampleColumns<T, kBlockM>) {
      ProduceColumnsSharedSample<T, L>(s, input, offset, mask, &grad_output_map, smem, smem_addr,
                                       k0, group, chunk_begin, q_begin, q_end, steps, b_row0);
    } else {
      ProduceColumns<T, L>(s, input, offset, mask, &grad_output_map, smem, smem_addr, k0, group,
                           chunk_begin, q_begin, q_end, steps, b_row0);
    }
  } else {
    asm volatile("setmaxnreg.dec.sync.aligned.u32 %0;\n" ::"n"(kConsumerRegisters));
    const WarpgroupTile<L> tile((threadIdx.x - kProducers) / 128);
    float acc[64];
    MultiplySteps<T, L, kMnMajorColumns<T>>(acc, smem_addr, tile, steps);
    const int64_t k_total = s.group_columns();
    float* out = grad_weight_acc + group * cog;
    // A thread's column pairs start on even columns: with cog even (so Cout too) each pair lies
    // on 8 bytes and goes in one vector atomic.
    const bool pairs = cog % 2 == 0;
#pragma unroll
    for (int j = 0; j < kWarpgroupN / 8; ++j) {
      const int n = n0 + tile.col0 + AccumulatorColumn(j);
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        const int64_t k = k0 + tile.row0 + AccumulatorRow(h);
        if (k >= k_total) continue;
        float* o = out + k * s.out_channels + n;
        if (pairs && n + 1 < cog) {
          AtomicAdd2(o, acc[4 * j + 2 * h], acc[4 * j + 2 * h + 1]);
          continue;
        }
        if (n < cog) atomicAdd(o, acc[4 * j + 2 * h]);
        if (n + 1 < cog) atomicAdd(o + 1, acc[4 * j + 2 * h + 1]);
      }
    }
  }
  ClusterSync();  // neither block leaves while the other may still arrive on its barriers
#else
  __trap();
#endif
}

// ---------------------------------------------------------------------------------------------
// The backward input kernel.
// ---------------------------------------------------------------------------------------------
//
// Column gradients grad_output[pixel][co] x weight[(tap, channel)][co]^T of one group, a 128 x 128
// tile per block, K = the group's output channels: a plain GEMM whose operands both lie K-major
// where they are (grad_output [pixels][Cout], the weights [taps x Cin/groups][Cout]), so the TMA
// reads them in place: each block its own A tile, and its half of the B tile multicast to both
// blocks of the cluster (two neighbouring pixel tiles of the same columns). Its two warpgroups
// multiply, stage the tile in shared memory (over the stages) and scatter it with
// input_scatter::ScatterTile; thread 0 starts the copies, refilling a stage once both blocks'
// warpgroups are done with it. Two blocks share an SM, so one block's multiplies run under the
// other's scatter. Without a producer warp all 256 threads keep 128 registers for the scatter
// (with one, 288 threads had 96, and the kernel took 1-4% longer; notes of 2026-12-03, run20).
// fp32 operands land as they lie. TF32 reads them so: wgmma drops their low 13 mantissa bits
// (truncation; relative error of the gradients 7.7e-4 against 2.9e-4 for the fused kernel's
// rounding; rounding each stage in shared memory made the kernel up to 30% slower, notes of
// 2026-12-03, run21). 3xTF32 splits each stage once it lands (SplitStage).
constexpr int kInputThreads = input_scatter::kThreads;
template <int kParts>
using InputLayout =
    Layout<input_scatter::kTileRows, input_scatter::kTileColumns, kParts, false, kParts == 2>;
static_assert(InputLayout<1>::kFullAt >= input_scatter::kStagedBytes &&
                  InputLayout<2>::kFullAt >= input_scatter::kStagedBytes,
              "the staged tile fits over the stages (and the small parts)");

// Every thread of the backward input's 3xTF32 block, once the stage of step kt has landed: the
// stage's raw fp32 split into TF32 big parts, in place, and small parts, into the layout's shared
// buffer; 16 bytes of each 4 KB of A's and B's tiles a thread. Each warpgroup has waited for its
// previous step's products, which read the small parts (MultiplySteps); the barrier waits for
// the other's. The generic stores reach wgmma (the async proxy) through the fence, and the other
// warpgroup's through the barrier.
template <typename L>
__device__ __forceinline__ void SplitStage(char* smem, int kt) {
  static_assert(L::kSharesSmall, "3xTF32 with the shared small parts");
  constexpr int kAChunks = L::kABytes / 16,
                kChunksPerThread = (L::kABytes + L::kBBytes) / 16 / kInputThreads;
  static_assert(kAChunks % kInputThreads == 0, "a thread's chunks lie in A or in B");
  __syncthreads();
  const int stage = kt % L::kStages;
  char* a = smem + stage * L::kAStageBytes;
  char* b = smem + L::kBAt + stage * L::kBStageBytes;
#pragma unroll
  for (int j = 0; j < kChunksPerThread; ++j) {
    const int chunk = static_cast<int>(threadIdx.x) + j * kInputThreads;
    uint4* at =
        reinterpret_cast<uint4*>(chunk < kAChunks ? a + 16 * chunk : b + 16 * (chunk - kAChunks));
    uint4 v = *at, small;
    uint32_t* e = &v.x;
    uint32_t* e_small = &small.x;
#pragma unroll
    for (int i = 0; i < 4; ++i) SplitTf32(e[i], &e[i], &e_small[i]);
    *at = v;
    reinterpret_cast<uint4*>(smem + L::kSmallAt)[chunk] = small;
  }
  FenceProxyAsync();
  __syncthreads();
}

// Block (x: pixel tile from row0, y: column tile, z: group) of the pass over the pixels of images
// [n_begin, ...) up to p_end: grad_output_map maps grad_output [pixels][Cout] in boxes of kBlockK
// x 128 rows, weight_map the weights [taps x Cin/groups][Cout] in boxes of kBlockK x 64 rows.
template <typename T, int kParts>
__global__ void __cluster_dims__(kCluster, 1, 1) __launch_bounds__(kInputThreads, 2)
    InputKernel(const __grid_constant__ CUtensorMap grad_output_map,
                const __grid_constant__ CUtensorMap weight_map, DcnShape s, const T* input,
                const T* offset, const T* mask, float* grad_input_acc, float* coord_acc,
                int64_t row0, int64_t n_begin, int64_t p_end) {
#if defined(DCN_WGMMA_SM90A_DEVICE)
  using L = InputLayout<kParts>;
  extern __shared__ char smem_raw[];
  uint32_t smem_addr;
  // A stage's full barrier: thread 0's one arrival with the bytes of both tiles.
  char* smem = StartTile<L, 1>(smem_raw, &smem_addr);

  const int group = blockIdx.z;
  const int64_t m0 = row0 + int64_t{blockIdx.x} * L::kM;
  const int n0 = blockIdx.y * L::kN;
  const int cog = static_cast<int>(s.out_channels_per_group());
  const int ktiles = (cog + kBlockK<T> - 1) / kBlockK<T>;
  const uint16_t self = 1 << ClusterRank();
  // Thread 0 copies step kt's tiles into its stage once both blocks' warpgroups are done with it.
  auto load = [&](int kt) {
    WaitStageFree<L>(smem_addr, kt);
    const int stage = kt % L::kStages;
    const uint32_t full = smem_addr + L::kFullAt + 8 * stage;
    const int k = group * cog + kt * kBlockK<T>;
    BarrierExpectTx(full, L::kAStageBytes);
    TmaLoad2dMulticast(smem_addr + stage * L::kAStageBytes, &grad_output_map, k,
                       static_cast<int>(m0), full, self);
    LoadBTile<T, L, false>(&weight_map, smem_addr, kt, k, n0, 0);
  };
  if (threadIdx.x == 0) {
    for (int kt = 0; kt < min(ktiles, L::kStages); ++kt) load(kt);
  }
  const WarpgroupTile<L> tile(threadIdx.x / 128);
  float acc[64];
  const auto refill = [&](int released) {
    if (threadIdx.x == 0 && released + L::kStages < ktiles) load(released + L::kStages);
  };
  MultiplySteps<T, L, false, false, 0>(acc, smem_addr, tile, ktiles, refill, [&](int kt) {
    if constexpr (kParts == 2) SplitStage<L>(smem, kt);
  });
  // Done with the peer: the scatter's time varies from tile to tile, and a block that waited
  // for its peer's there would hold its SM's slot idle.
  ClusterArrive();
  // Every copy into the stages has landed (each step's was waited for); the other warpgroup
  // may still read them.
  __syncthreads();
  float* staged = reinterpret_cast<float*>(smem);
#pragma unroll
  for (int j = 0; j < kWarpgroupN / 8; ++j) {
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const int row = tile.row0 + AccumulatorRow<0>(h);
      *reinterpret_cast<float2*>(staged + row * input_scatter::kStagedStride +
                                 AccumulatorColumn(j)) =
          make_float2(acc[4 * j + 2 * h], acc[4 * j + 2 * h + 1]);
    }
  }
  __syncthreads();
  input_scatter::ScatterTile(s, staged, threadIdx.x, group, m0, n0, input, offset, mask,
                             grad_input_acc, coord_acc, n_begin, p_end);
  ClusterWait();  // neither block leaves while the other may still arrive on its barriers
#else
  __trap();
#endif
}

// ---------------------------------------------------------------------------------------------
// The B operands, K-major.
// ---------------------------------------------------------------------------------------------

// dst[n * ld + order(k)] = src[k * cols + n] for k < rows, n < cols (src row-major [K][N]) as
// wgmma reads it (ToOperand), rows whose order(k) is negative left out; with two operand parts
// the small part goes to row cols + n. Tiles of 64 x 64 staged in float (columns read without
// bank conflicts whatever T), a thread's two k and their order fixed for the block, and a tile's
// sixteen loads per thread issued before its first store (with 32 x 32 tiles, each load followed
// by its store, the copy of 3x3x512x512 fp16 weights, 4.7 MB, took 15 us on the H200).
constexpr int kTransposeTile = 64;
template <typename T, typename Order, int kParts>
__global__ void __launch_bounds__(256)
    TransposeKernel(int64_t rows, int64_t cols, const T* src, T* dst, int64_t ld, Order order) {
  constexpr int kHalves = kTransposeTile / 32, kRowsPerPass = 8;  // block (32, 8)
  __shared__ float tile[kTransposeTile][kTransposeTile + 1];
  const int lane = threadIdx.x;
  const int64_t k0 = int64_t{blockIdx.x} * kTransposeTile;
  int64_t to[kHalves];
#pragma unroll
  for (int h = 0; h < kHalves; ++h) {
    const int64_t k = k0 + lane + 32 * h;
    to[h] = k < rows ? order(k) : -1;
  }
  for (int64_t n0 = int64_t{blockIdx.y} * kTransposeTile; n0 < cols;
       n0 += int64_t{gridDim.y} * kTransposeTile) {
    float v[kTransposeTile / kRowsPerPass][kHalves];
    const T* from = src + (k0 + threadIdx.y) * cols + n0 + lane;
    if (k0 + kTransposeTile <= rows && n0 + kTransposeTile <= cols) {  // no bounds, no branches
#pragma unroll
      for (int j = 0; j < kTransposeTile / kRowsPerPass; ++j) {
#pragma unroll
        for (int h = 0; h < kHalves; ++h) {
          v[j][h] = static_cast<float>(from[j * kRowsPerPass * cols + 32 * h]);
        }
      }
    } else {
#pragma unroll
      for (int j = 0; j < kTransposeTile / kRowsPerPass; ++j) {
#pragma unroll
        for (int h = 0; h < kHalves; ++h) {
          const bool inside =
              k0 + threadIdx.y + j * kRowsPerPass < rows && n0 + lane + 32 * h < cols;
          v[j][h] = inside ? static_cast<float>(from[j * kRowsPerPass * cols + 32 * h]) : 0.f;
        }
      }
    }
#pragma unroll
    for (int j = 0; j < kTransposeTile / kRowsPerPass; ++j) {
#pragma unroll
      for (int h = 0; h < kHalves; ++h)
        tile[threadIdx.y + j * kRowsPerPass][lane + 32 * h] = v[j][h];
    }
    __syncthreads();
#pragma unroll
    for (int i = threadIdx.y; i < kTransposeTile; i += kRowsPerPass) {
      const int64_t n = n0 + i;
#pragma unroll
      for (int h = 0; h < kHalves; ++h) {
        if (n >= cols || to[h] < 0) continue;
        T parts[kParts];
        ToOperand(tile[lane + 32 * h][i], parts);
#pragma unroll
        for (int part = 0; part < kParts; ++part) dst[(part * cols + n) * ld + to[h]] = parts[part];
      }
    }
    __syncthreads();
  }
}

// The forward's K order of the weights of one K chunk: channel slab of kBlockK, then tap (the
// producers' order): k = tap * cpg + slab * kBlockK + i goes to
// ((slab - slabs.begin) * taps + tap) * kBlockK + i, slabs outside the chunk nowhere (-1).
template <typename T>
struct SlabMajorOrder {
  int taps;
  int64_t cpg;
  SlabRange slabs;
  __device__ int64_t operator()(int64_t k) const {
    const int64_t tap = k / cpg, c = k - tap * cpg;
    const int64_t slab = c / kBlockK<T>;
    if (slab < slabs.begin || slab >= slabs.end) return -1;
    return ((slab - slabs.begin) * taps + tap) * kBlockK<T> + (c - slab * kBlockK<T>);
  }
};

struct SameOrder {
  __device__ int64_t operator()(int64_t k) const { return k; }
};

// ---------------------------------------------------------------------------------------------
// Host side.
// ---------------------------------------------------------------------------------------------

using EncodeTiledFn = CUresult (*)(CUtensorMap*, CUtensorMapDataType, cuuint32_t, void*,
                                   const cuuint64_t*, const cuuint64_t*, const cuuint32_t*,
                                   const cuuint32_t*, CUtensorMapInterleave, CUtensorMapSwizzle,
                                   CUtensorMapL2promotion, CUtensorMapFloatOOBfill);

// The driver's cuTensorMapEncodeTiled, through the runtime (the library links no libcuda), or
// null where the driver has none.
EncodeTiledFn EncodeTiled() {
  static const EncodeTiledFn fn = [] {
    void* p = nullptr;
    cudaDriverEntryPointQueryResult status = cudaDriverEntryPointSymbolNotFound;
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wdeprecated-declarations"
    // cudaGetDriverEntryPointByVersion is newer than the runtime TensorFlow exports.
    const cudaError_t err =
        cudaGetDriverEntryPoint("cuTensorMapEncodeTiled", &p, cudaEnableDefault, &status);
#pragma GCC diagnostic pop
    if (err != cudaSuccess || status != cudaDriverEntryPointSuccess) {
      cudaGetLastError();
      return EncodeTiledFn{nullptr};
    }
    return reinterpret_cast<EncodeTiledFn>(p);
  }();
  return fn;
}

template <typename T>
CUtensorMapDataType TensorMapType() {
  if constexpr (std::is_same_v<T, __half>) return CU_TENSOR_MAP_DATA_TYPE_FLOAT16;
  if constexpr (std::is_same_v<T, __nv_bfloat16>) return CU_TENSOR_MAP_DATA_TYPE_BFLOAT16;
  return CU_TENSOR_MAP_DATA_TYPE_FLOAT32;
}

// The tile: 64 x 256 when a group has more than 128 output channels, else 128 x 128.
bool WideTile(const DcnShape& s) { return s.out_channels_per_group() > 128; }

// The clusters share A tiles when they can (whole pairs of 256-column channel tiles, one operand
// part): each gathered A tile then serves 512 output channels, but each block loads its whole B
// tile. H200, 4x32x32x512 (docs/notes of 2026-12-03, run18 and run19): the forward in fp16/bf16
// 0.070 -> 0.061 ms, TF32 0.121 -> 0.116; the backward weight in fp16/bf16 0.137 -> 0.127, TF32
// 0.263 -> 0.212. 3xTF32, whose B tiles take two parts, became L2-bound (forward 0.254 -> 0.346,
// backward weight 0.326 -> 0.372), so it keeps sharing B (WithTile).
bool SharesA(const DcnShape& s) {
  return WideTile(s) && CeilDiv(s.out_channels_per_group(), 256) % kCluster == 0;
}

// Calls fn(L) with the problem's Layout L (WideTile, and SharesA with one operand part) and
// returns what it returns.
template <int kParts, typename Fn>
auto WithTile(const DcnShape& s, Fn&& fn) {
  if (!WideTile(s)) return fn(Layout<128, 128, kParts>());
  if constexpr (kParts == 1) {
    if (SharesA(s)) return fn(Layout<64, 256, kParts, true>());
  }
  return fn(Layout<64, 256, kParts>());
}

// Operand parts: fp32 with TF32 off runs as 3xTF32.
template <typename T>
int OperandParts(const Options& o) {
  return std::is_same_v<T, float> && !o.allow_tf32 ? 2 : 1;
}

// Calls fn(std::integral_constant<int, parts>) for the problem's operand parts: the kernels'
// template argument.
template <typename T, typename Fn>
auto WithOperandParts(const Options& o, Fn&& fn) {
  if constexpr (std::is_same_v<T, float>) {
    if (OperandParts<T>(o) == 2) return fn(std::integral_constant<int, 2>());
  }
  return fn(std::integral_constant<int, 1>());
}

// A 2D tensor map of [dims[1]][ld] elements (dims[0] of each row valid), 128-byte swizzled, in
// boxes of box[0] x box[1]; what lies beyond dims reads zero.
template <typename T>
cudaError_t EncodeSwizzled(CUtensorMap* map, const T* base, const cuuint64_t (&dims)[2], int64_t ld,
                           const cuuint32_t (&box)[2]) {
  const cuuint64_t strides[1] = {static_cast<cuuint64_t>(ld) * sizeof(T)};
  const cuuint32_t element_strides[2] = {1, 1};
  if (EncodeTiled()(map, TensorMapType<T>(), 2, const_cast<T*>(base), dims, strides, box,
                    element_strides, CU_TENSOR_MAP_INTERLEAVE_NONE, CU_TENSOR_MAP_SWIZZLE_128B,
                    CU_TENSOR_MAP_L2_PROMOTION_L2_256B,
                    CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE) != CUDA_SUCCESS) {
    return cudaErrorInvalidValue;
  }
  return cudaSuccess;
}

// The K-major B operand [rows][ld] in boxes of one block's share of a step's B tile (kBlockK x
// box_rows); K beyond k_extent reads zero.
template <typename T>
cudaError_t EncodeKMajor(CUtensorMap* map, const T* base, int64_t k_extent, int64_t rows,
                         int64_t ld, int box_rows) {
  return EncodeSwizzled(map, base,
                        {static_cast<cuuint64_t>(k_extent), static_cast<cuuint64_t>(rows)}, ld,
                        {kBlockK<T>, static_cast<cuuint32_t>(box_rows)});
}

// The MN-major B operand [k_extent][ld] in boxes of 64 columns x kBlockK rows.
template <typename T>
cudaError_t EncodeMnMajor(CUtensorMap* map, const T* base, int64_t k_extent, int64_t ld) {
  return EncodeSwizzled(map, base, {static_cast<cuuint64_t>(ld), static_cast<cuuint64_t>(k_extent)},
                        ld, {kMnChunkColumns, kBlockK<T>});
}

// fp16/bf16 B operands ([rows][Cout] as they lie) are read in place when each group's columns
// are whole 16-byte units (TMA's rule for the rows' stride and the boxes' start), else from a
// copy with each group's columns padded to that: the elements per row of what the kernels read.
template <typename T>
int64_t MnMajorPitch(const DcnShape& s) {
  return s.groups * BGroupColumns<T>(s);
}
template <typename T>
bool ReadsBInPlace(const DcnShape& s) {
  return kMnMajorB<T> && BGroupColumns<T>(s) == s.out_channels_per_group();
}

// An MN-major B operand, `rows` x Cout at src, as the kernels read it (rows of MnMajorPitch
// elements; a group's padding columns meet only output columns that are never stored), in *b:
// src itself, or `padded` after a strided copy.
template <typename T>
cudaError_t MnMajorOperand(const DcnShape& s, const T* src, int64_t rows, T* padded, const T** b,
                           cudaStream_t stream) {
  *b = src;
  if (ReadsBInPlace<T>(s)) return cudaSuccess;
  *b = padded;
  const size_t group_bytes = s.out_channels_per_group() * sizeof(T);
  return cudaMemcpy2DAsync(padded, BGroupColumns<T>(s) * sizeof(T), src, group_bytes, group_bytes,
                           rows * s.groups, cudaMemcpyDeviceToDevice, stream);
}

template <int kParts, typename T, typename Order>
cudaError_t Transpose(int64_t rows, int64_t cols, const T* src, T* dst, int64_t ld, Order order,
                      cudaStream_t stream) {
  const dim3 grid(static_cast<unsigned>(CeilDiv(rows, kTransposeTile)),
                  static_cast<unsigned>(std::min<int64_t>(CeilDiv(cols, kTransposeTile), 65535)));
  TransposeKernel<T, Order, kParts>
      <<<grid, dim3(32, 8), 0, stream>>>(rows, cols, src, dst, ld, order);
  return cudaGetLastError();
}

// The forward's copy of the weights holds at most kWeightCopyBytes (and at least one slab per
// group): beyond, the forward runs in K chunks of equal size, each launch adding to the output
// what the one before stored (fp32 only: a chunk's sum rounded to fp16/bf16 would lose bits).
// Chunks cost time (4x32x32x512 on the H200: +23% in three chunks, the launches one after the
// other), so the limit keeps TF32's copy at 512 x 512 channels (9.4 MiB) whole and splits
// strict fp32's (18.9 MiB) in two.
constexpr int64_t kWeightCopyBytes = int64_t{12} << 20;

// The forward's K columns (taps x channels) of `slabs` channel slabs.
template <typename T>
int64_t SlabColumns(const DcnShape& s, int slabs) {
  return int64_t{s.taps()} * slabs * kBlockK<T>;
}

// Channel slabs of a group per K chunk.
template <typename T>
int SlabsPerChunk(const DcnShape& s, int parts) {
  const int slabs = static_cast<int>(s.in_channels_per_group() / kBlockK<T>);
  if (!std::is_same_v<T, float>) return slabs;
  const int64_t slab_bytes = parts * s.out_channels * SlabColumns<T>(s, 1) * int64_t{sizeof(T)};
  const int most = static_cast<int>(std::max<int64_t>(1, kWeightCopyBytes / slab_bytes));
  return static_cast<int>(CeilDiv(slabs, CeilDiv(slabs, most)));
}

// Elements of the forward's copy of the weights: one K chunk's, in every operand part (TF32,
// transposed), or the weights with padded rows (fp16/bf16 when not read in place).
template <typename T>
int64_t WeightCopyElements(const DcnShape& s, int parts) {
  if (kMnMajorB<T>) return ReadsBInPlace<T>(s) ? 0 : s.group_columns() * MnMajorPitch<T>(s);
  return parts * s.out_channels * SlabColumns<T>(s, SlabsPerChunk<T>(s, parts));
}

// The forward over channel slabs `slabs`, whose weights b holds as the kernel reads them: the
// weights [taps x cpg][Cout] (fp16/bf16, rows of MnMajorPitch elements) or their K chunk
// transposed (TF32).
template <typename T, typename L>
cudaError_t LaunchForward(const DcnShape& s, const T* input, const T* offset, const T* mask,
                          const T* bias, T* output, const T* b, SlabRange slabs, const Options& o,
                          cudaStream_t stream) {
  constexpr int kBlockM = L::kM, kBlockN = L::kN, kParts = L::kParts;
  CUtensorMap map;
  if constexpr (kMnMajorB<T>) {
    DCN_RETURN_IF_ERROR(EncodeMnMajor(&map, b, s.group_columns(), MnMajorPitch<T>(s)));
  } else {
    const int64_t k_chunk = SlabColumns<T>(s, slabs.end - slabs.begin);
    DCN_RETURN_IF_ERROR(
        EncodeKMajor(&map, b, k_chunk, kParts * s.out_channels, k_chunk, kBlockN / kCluster));
  }
  constexpr auto kernel = &ForwardKernel<T, kBlockM, kBlockN, kParts, L::kSharesA>;
  // The limit once per device, at the device's maximum: launches take what their taps need.
  DCN_RETURN_IF_ERROR(mma::AllowSharedMemory<kernel>(o.shared_memory_per_block));
  const int smem_bytes = static_cast<int>(L::AllocBytes(L::ForwardTableBytes(s.taps())));
  const bool pair_stores = s.out_channels % 2 == 0 && s.out_channels_per_group() % 2 == 0 &&
                           reinterpret_cast<uintptr_t>(output) % (2 * sizeof(T)) == 0;
  // Whole clusters: a block past the last pixel computes nothing but copies its share (clusters
  // of pixel tiles; those of channel tiles are whole, SharesA).
  return ForEachTileLaunch(
      0, s.pixels(), kBlockM, L::kTileCluster, [&](int64_t row0, int64_t tiles) {
        const dim3 grid(static_cast<unsigned>(tiles),
                        static_cast<unsigned>(CeilDiv(s.out_channels_per_group(), kBlockN)),
                        s.groups);
        kernel<<<grid, kThreads, smem_bytes, stream>>>(map, s, input, offset, mask, bias, output,
                                                       row0, slabs, pair_stores, slabs.begin > 0);
      });
}

// The backward weight's workspace: grad_output for one chunk of pixels as the kernel reads it,
// transposed (TF32) or with padded rows (fp16/bf16 when not read in place), at most
// kGradOutputChunkBytes with its parts, so that it does not grow with the batch; grad_weight in
// float for half/bfloat16; the bias partials.
constexpr int64_t kGradOutputChunkBytes = int64_t{8} << 20;

template <typename T>
int64_t GradOutputChunkPixels(const DcnShape& s, int parts) {
  const int64_t steps =
      kGradOutputChunkBytes / (parts * s.out_channels * int64_t{sizeof(T)}) / kBlockK<T>;
  return std::min(CeilDiv(s.pixels(), kBlockK<T>), std::max<int64_t>(1, steps)) * kBlockK<T>;
}

template <typename T>
struct BackwardWeightBuffers {
  int64_t chunk_pixels;              // a multiple of kBlockK
  T* grad_output_copy = nullptr;     // [parts x Cout][chunk_pixels] or [chunk_pixels][pitch]
  float* grad_weight_acc = nullptr;  // only when T is not float
  im2col::BiasGradient<T> bias;
  BackwardWeightBuffers(const DcnShape& s, int parts, WorkspaceLayout* w)
      : chunk_pixels(GradOutputChunkPixels<T>(s, parts)), bias(s, w) {
    if (!ReadsBInPlace<T>(s)) {
      const int64_t row = kMnMajorB<T> ? MnMajorPitch<T>(s) : parts * s.out_channels;
      grad_output_copy = w->Take<T>(chunk_pixels * row);
    }
    if (!std::is_same_v<T, float>) grad_weight_acc = w->Take<float>(s.weight_elements());
  }
};

// The backward weight's launches over one chunk of pixels, blocks running one at a time per SM
// (`slots` of them): the row tiles [0, whole_rows) of every channel tile in whole waves of blocks
// that each take all the pixels, then the other row tiles with their pixels in `splits`. With
// whole_rows 0 that is the uniform split of ChooseSplits; the whole waves first pay where the
// tiles slightly exceed a wave (4x32x32x512 fp16: 144 tiles on 132 SMs, uniform 2 splits in 3
// waves of 32 steps, against a wave of 64 steps and one of 6). whole_rows is a multiple of
// row_cluster, the row tiles of a cluster.
struct WeightSchedule {
  int64_t whole_rows, splits;
};
inline WeightSchedule ScheduleWeight(int64_t row_tiles, int64_t channel_tiles, int64_t steps,
                                     int64_t slots, int64_t row_cluster) {
  const int64_t tiles = row_tiles * channel_tiles;
  const WeightSchedule uniform{0, ChooseSplits(tiles, steps, slots)};
  const int64_t whole_rows =
      tiles / slots * slots / channel_tiles / row_cluster * row_cluster;  // whole clusters
  if (whole_rows == 0 || whole_rows == row_tiles) return uniform;
  const int64_t rest = (row_tiles - whole_rows) * channel_tiles;
  const WeightSchedule hybrid{whole_rows, ChooseSplits(rest, steps, slots)};
  const int64_t hybrid_cost = SplitCost(whole_rows * channel_tiles, steps, slots, 1) +
                              SplitCost(rest, steps, slots, hybrid.splits);
  return hybrid_cost < SplitCost(tiles, steps, slots, uniform.splits) ? hybrid : uniform;
}

template <typename T, typename L>
cudaError_t LaunchWeight(const DcnShape& s, const T* grad_output, const T* input, const T* offset,
                         const T* mask, float* grad_weight_acc,
                         const BackwardWeightBuffers<T>& buffers, const Options& o,
                         cudaStream_t stream) {
  constexpr int kBlockM = L::kM, kBlockN = L::kN, kParts = L::kParts;
  constexpr auto kernel = &WeightKernel<T, kBlockM, kBlockN, kParts, L::kSharesA>;
  DCN_RETURN_IF_ERROR(mma::AllowSharedMemory<kernel>(o.shared_memory_per_block));
  const int smem_bytes = static_cast<int>(L::AllocBytes(kColumnTableBytes<T, kBlockM>));
  // Whole clusters: a row tile past the group's K computes nothing but copies its share (clusters
  // of row tiles; those of channel tiles are whole, SharesA).
  constexpr int64_t kRowCluster = L::kTileCluster;
  const int64_t row_tiles = CeilDiv(CeilDiv(s.group_columns(), kBlockM), kRowCluster) * kRowCluster;
  const int64_t channel_tiles = CeilDiv(s.out_channels_per_group(), kBlockN);
  for (int64_t begin = 0; begin < s.pixels(); begin += buffers.chunk_pixels) {
    const int64_t pixels = std::min(buffers.chunk_pixels, s.pixels() - begin);
    const T* chunk = grad_output + begin * s.out_channels;
    CUtensorMap map;
    if constexpr (kMnMajorB<T>) {
      const T* b;
      DCN_RETURN_IF_ERROR(MnMajorOperand(s, chunk, pixels, buffers.grad_output_copy, &b, stream));
      DCN_RETURN_IF_ERROR(EncodeMnMajor(&map, b, pixels, MnMajorPitch<T>(s)));
    } else {
      DCN_RETURN_IF_ERROR(Transpose<kParts>(pixels, s.out_channels, chunk, buffers.grad_output_copy,
                                            buffers.chunk_pixels, SameOrder(), stream));
      DCN_RETURN_IF_ERROR(EncodeKMajor(&map, buffers.grad_output_copy, pixels,
                                       kParts * s.out_channels, buffers.chunk_pixels,
                                       kBlockN / kCluster));
    }
    const int64_t steps = CeilDiv(pixels, kBlockK<T>);
    const WeightSchedule schedule =
        ScheduleWeight(row_tiles, channel_tiles * s.groups, steps, o.multiprocessors, kRowCluster);
    // Row tiles [row_tile0, row_tile_end) with their pixels in `splits`.
    auto launch = [&](int64_t row_tile0, int64_t row_tile_end, int64_t splits) {
      const int64_t per_split = CeilDiv(steps, splits) * kBlockK<T>;
      const dim3 grid(static_cast<unsigned>(row_tile_end - row_tile0),
                      static_cast<unsigned>(CeilDiv(pixels, per_split)),
                      static_cast<unsigned>(channel_tiles * s.groups));
      kernel<<<grid, kThreads, smem_bytes, stream>>>(
          map, s, input, offset, mask, grad_weight_acc, begin, static_cast<int>(pixels),
          static_cast<int>(per_split), static_cast<int>(channel_tiles),
          static_cast<int>(row_tile0));
      return cudaGetLastError();
    };
    if (schedule.whole_rows > 0) DCN_RETURN_IF_ERROR(launch(0, schedule.whole_rows, 1));
    DCN_RETURN_IF_ERROR(launch(schedule.whole_rows, row_tiles, schedule.splits));
  }
  return cudaSuccess;
}

// What both kernels need: compute capability 9.0, channels per group and per deformable group
// multiples of one K step's 128 bytes, the tile's shared memory with the op's sample table.
template <typename T, int kParts>
bool Fits(Op op, const DcnShape& s, const Options& o) {
  return WithTile<kParts>(s, [&](auto layout) {
    using L = decltype(layout);
    const int64_t smem = L::AllocBytes(op == Op::kForward ? L::ForwardTableBytes(s.taps())
                                                          : kColumnTableBytes<T, L::kM>);
    return o.compute_capability == 90 && o.shared_memory_per_block >= smem &&
           s.in_channels_per_group() % kBlockK<T> == 0 &&
           s.channels_per_deformable_group() % kBlockK<T> == 0 &&
           s.groups * CeilDiv(s.out_channels_per_group(), L::kN) <= 65535;
  });
}

// What the backward input needs: compute capability 9.0, whole quads of channels (ScatterTile),
// rows of grad_output and the weights on 16 bytes and pixel coordinates in 32 bits (TMA), a
// group's output channels in whole K steps unless there is one group (a box would read the next
// group's).
template <typename T>
bool InputFits(const DcnShape& s, const Options& o) {
  return WithOperandParts<T>(o, [&](auto parts) {
    using L = InputLayout<decltype(parts)::value>;
    return o.compute_capability == 90 && input_scatter::Supported(s) &&
           s.out_channels * sizeof(T) % 16 == 0 &&
           (s.groups == 1 || s.out_channels_per_group() % kBlockK<T> == 0) &&
           s.pixels() <= std::numeric_limits<int32_t>::max() &&
           o.shared_memory_per_block >= L::AllocBytes(0) &&
           CeilDiv(s.group_columns(), L::kN) <= 65535 && s.groups <= 65535;
  });
}

}  // namespace

template <typename T>
bool Supported(Op op, const DcnShape& s, const Options& o) {
  // Both backward ops add their tiles with atomics (not deterministic).
  if (op != Op::kForward && (o.deterministic || s.pixels() == 0)) return false;
  if (op == Op::kBackwardInput) return InputFits<T>(s, o);
  return WithOperandParts<T>(o,
                             [&](auto parts) { return Fits<T, decltype(parts)::value>(op, s, o); });
}

bool Available() {
  static const bool simulate_unavailable = [] {
    const char* v = std::getenv("TFDCN_SIMULATE_SM90A_UNAVAILABLE");
    return v != nullptr && std::strcmp(v, "1") == 0;
  }();
  if (simulate_unavailable || EncodeTiled() == nullptr) return false;
  int device = 0;
  if (cudaGetDevice(&device) != cudaSuccess) {
    cudaGetLastError();
    return false;
  }
  static std::atomic<uint64_t> checked{0}, loaded{0};
  const uint64_t bit = uint64_t{1} << (device & 63);
  if (!(checked.load(std::memory_order_acquire) & bit)) {
    // Loads the module if it can: an sm_90a cubin needs an sm_90 GPU and a recent driver.
    cudaFuncAttributes attributes;
    if (cudaFuncGetAttributes(&attributes, ForwardKernel<__half, 128, 128, 1>) == cudaSuccess) {
      loaded.fetch_or(bit, std::memory_order_release);
    } else {
      cudaGetLastError();  // not sticky: clear it so that no later check reports it
    }
    checked.fetch_or(bit, std::memory_order_release);
  }
  return loaded.load(std::memory_order_acquire) & bit;
}

template <typename T>
size_t WorkspaceBytes(Op op, const DcnShape& s, const Options& o) {
  WorkspaceLayout w;
  const int parts = OperandParts<T>(o);
  if (op == Op::kForward) {
    w.Take<T>(WeightCopyElements<T>(s, parts));
  }
  if (op == Op::kBackwardWeight) BackwardWeightBuffers<T> buffers(s, parts, &w);
  if (op == Op::kBackwardInput) return input_scatter::WorkspaceBytes<T>(s);
  return w.bytes();
}

template <typename T>
cudaError_t Forward(const DcnShape& s, const T* input, const T* offset, const T* mask,
                    const T* weight, const T* bias, T* output, void* workspace, const Options& o,
                    cudaStream_t stream) {
  if (s.pixels() == 0) return cudaSuccess;
  return WithOperandParts<T>(o, [&](auto parts) {
    constexpr int kParts = decltype(parts)::value;
    const int slabs = static_cast<int>(s.in_channels_per_group() / kBlockK<T>);
    WorkspaceLayout layout(workspace);
    T* copy = layout.Take<T>(WeightCopyElements<T>(s, kParts));
    const auto launch =
        WithTile<kParts>(s, [](auto layout) { return &LaunchForward<T, decltype(layout)>; });
    if constexpr (kMnMajorB<T>) {  // the weights as they lie, every slab in one launch
      const T* b;
      DCN_RETURN_IF_ERROR(MnMajorOperand(s, weight, s.group_columns(), copy, &b, stream));
      return launch(s, input, offset, mask, bias, output, b, {0, slabs}, o, stream);
    } else {  // each K chunk's weights transposed, then its launch
      const int per_chunk = SlabsPerChunk<T>(s, kParts);
      for (int begin = 0; begin < slabs; begin += per_chunk) {
        const SlabRange chunk{begin, std::min(slabs, begin + per_chunk)};
        DCN_RETURN_IF_ERROR(Transpose<kParts>(
            s.group_columns(), s.out_channels, weight, copy,
            SlabColumns<T>(s, chunk.end - chunk.begin),
            SlabMajorOrder<T>{s.taps(), s.in_channels_per_group(), chunk}, stream));
        DCN_RETURN_IF_ERROR(launch(s, input, offset, mask, bias, output, copy, chunk, o, stream));
      }
      return cudaSuccess;
    }
  });
}

template <typename T>
cudaError_t BackwardWeight(const DcnShape& s, const T* grad_output, const T* input, const T* offset,
                           const T* mask, T* grad_weight, T* grad_bias, void* workspace,
                           const Options& o, cudaStream_t stream) {
  WorkspaceLayout layout(workspace);
  BackwardWeightBuffers<T> buffers(s, OperandParts<T>(o), &layout);
  float* grad_weight_acc =
      buffers.grad_weight_acc ? buffers.grad_weight_acc : reinterpret_cast<float*>(grad_weight);
  DCN_RETURN_IF_ERROR(
      cudaMemsetAsync(grad_weight_acc, 0, s.weight_elements() * sizeof(float), stream));
  DCN_RETURN_IF_ERROR(WithOperandParts<T>(o, [&](auto parts) {
    constexpr int kParts = decltype(parts)::value;
    return WithTile<kParts>(s, [&](auto layout) {
      return LaunchWeight<T, decltype(layout)>(s, grad_output, input, offset, mask, grad_weight_acc,
                                               buffers, o, stream);
    });
  }));
  if (buffers.grad_weight_acc)
    DCN_RETURN_IF_ERROR(Convert(s.weight_elements(), buffers.grad_weight_acc, grad_weight, stream));
  return grad_bias ? buffers.bias.Run(s, grad_output, grad_bias, stream) : cudaSuccess;
}

namespace {

// The backward input in input_scatter's passes, each launching its pixel tiles in whole clusters
// (a block past the pass's pixels copies its share of B and scatters nothing).
template <typename T, int kParts>
cudaError_t LaunchInput(const DcnShape& s, const T* grad_output, const T* input, const T* offset,
                        const T* mask, const T* weight, T* grad_input, T* grad_offset, T* grad_mask,
                        void* workspace, cudaStream_t stream) {
  using L = InputLayout<kParts>;
  CUtensorMap grad_output_map, weight_map;
  DCN_RETURN_IF_ERROR(EncodeKMajor(&grad_output_map, grad_output, s.out_channels, s.pixels(),
                                   s.out_channels, L::kM));
  DCN_RETURN_IF_ERROR(EncodeKMajor(&weight_map, weight, s.out_channels, s.group_columns(),
                                   s.out_channels, L::kN / kCluster));
  constexpr auto kernel = &InputKernel<T, kParts>;
  constexpr int kSmemBytes = static_cast<int>(L::AllocBytes(0));
  DCN_RETURN_IF_ERROR(mma::AllowSharedMemory<kernel>(kSmemBytes));
  const auto launch_pass = [&](const input_scatter::Pass& pass) {
    return ForEachTileLaunch(
        pass.p_begin, pass.p_end, L::kM, kCluster, [&](int64_t row0, int64_t tiles) {
          const dim3 grid(static_cast<unsigned>(tiles),
                          static_cast<unsigned>(CeilDiv(s.group_columns(), L::kN)), s.groups);
          kernel<<<grid, kInputThreads, kSmemBytes, stream>>>(
              grad_output_map, weight_map, s, input, offset, mask, pass.grad_input_acc,
              pass.coord_acc, row0, pass.n_begin, pass.p_end);
        });
  };
  return input_scatter::RunPasses(s, grad_input, grad_offset, grad_mask, workspace, launch_pass,
                                  stream);
}

}  // namespace

template <typename T>
cudaError_t BackwardInput(const DcnShape& s, const T* grad_output, const T* input, const T* offset,
                          const T* mask, const T* weight, T* grad_input, T* grad_offset,
                          T* grad_mask, void* workspace, const Options& o, cudaStream_t stream) {
  return WithOperandParts<T>(o, [&](auto parts) {
    return LaunchInput<T, decltype(parts)::value>(s, grad_output, input, offset, mask, weight,
                                                  grad_input, grad_offset, grad_mask, workspace,
                                                  stream);
  });
}

#define INSTANTIATE(T)                                                                            \
  template bool Supported<T>(Op, const DcnShape&, const Options&);                                \
  template size_t WorkspaceBytes<T>(Op, const DcnShape&, const Options&);                         \
  template cudaError_t Forward<T>(const DcnShape&, const T*, const T*, const T*, const T*,        \
                                  const T*, T*, void*, const Options&, cudaStream_t);             \
  template cudaError_t BackwardInput<T>(const DcnShape&, const T*, const T*, const T*, const T*,  \
                                        const T*, T*, T*, T*, void*, const Options&,              \
                                        cudaStream_t);                                            \
  template cudaError_t BackwardWeight<T>(const DcnShape&, const T*, const T*, const T*, const T*, \
                                         T*, T*, void*, const Options&, cudaStream_t);
INSTANTIATE(__half)
INSTANTIATE(__nv_bfloat16)
INSTANTIATE(float)
#undef INSTANTIATE

}  // namespace wgmma_sm90a
}  // namespace cuda
}  // namespace tensorflow_dcn
