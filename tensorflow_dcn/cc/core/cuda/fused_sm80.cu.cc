// See fused_sm80.cuh. All three kernels run the tensor-core block engine of mma_core.cuh; what is
// DCN-specific is how operand tiles are produced (bilinear gathers, one 16-byte channel vector per
// unit of work) and the backward-input epilogue (input_scatter.cuh).
#include "tensorflow_dcn/cc/core/cuda/fused_sm80.cuh"

#include <algorithm>

#include "tensorflow_dcn/cc/core/bilinear.h"
#include "tensorflow_dcn/cc/core/cuda/im2col.cuh"
#include "tensorflow_dcn/cc/core/cuda/input_scatter.cuh"
#include "tensorflow_dcn/cc/core/cuda/mma_core.cuh"
#include "tensorflow_dcn/cc/core/workspace.h"

namespace tensorflow_dcn {
namespace cuda {
namespace fused_sm80 {
namespace {

using mma::kThreads;
using mma::kTileM;
using mma::kTileN;

template <typename T>
constexpr int kVector = 16 / sizeof(T);  // elements in one 16-byte access
template <typename T>
constexpr int kStepK = mma::Tile<T, true, kTileM>::kStepK;  // K elements per pipeline step

template <typename T>
using Vector16 = Vec<T, kVector<T>>;

// One 16-byte chunk of a sample: its four corner vectors blended with the bilinear weights (the
// mask folded in), summed in float.
template <typename T>
__device__ __forceinline__ Vector16<T> BlendCorners(const float4& w, const Vector16<T> (&raw)[4]) {
  const float wk[4] = {w.x, w.y, w.z, w.w};
  Vector16<T> out;
#pragma unroll
  for (int e = 0; e < kVector<T>; ++e) {
    float v = 0.f;
#pragma unroll
    for (int k = 0; k < 4; ++k) v += wk[k] * static_cast<float>(raw[k].e[e]);
    out.e[e] = FromFloat<T>(v);
  }
  return out;
}

// Shared memory of a gathering kernel: per stage the corner staging and the bilinear weights,
// then per stage the B tile, then the double-buffered A tile.
template <int kStages, typename TileA_, typename TileB_, int kStagingBytes, int kWeightsBytes>
struct GatherLayout {
  using TileA = TileA_;
  using TileB = TileB_;
  static constexpr int kStaging = kStagingBytes;
  static constexpr int kWeights = kWeightsBytes;
  static constexpr int kWeightsAt = kStages * kStaging;
  static constexpr int kBAt = kWeightsAt + kStages * kWeights;
  static constexpr int kAAt = kBAt + kStages * TileB::kBytes;
  static constexpr int kBytes = kAAt + 2 * TileA::kBytes;
};

// The software pipeline of the gathering kernels (forward, backward weight): kStages steps in
// flight. issue(kt) starts step kt into stage kt % kStages: the corner chunks by cp.async into a
// staging area, the bilinear weights into shared memory, the B tile by cp.async. blend(kt)
// turns step kt's corners into A tile kt % 2; each thread blends the units whose corners it
// copied, so only the A tile needs a barrier. Iteration kt multiplies step kt while blending step
// kt + 1 (independent instructions the scheduler interleaves), then one barrier, then the issue of
// step kt + kStages into the stage step kt just freed.
template <typename T, MathMode kMode, int kStages, bool kAK, typename Issue, typename Blend>
__device__ __forceinline__ void GatherMainLoop(int ktiles, const char* a_tiles, int a_tile_bytes,
                                               const char* b_tiles, int b_tile_bytes, Issue&& issue,
                                               Blend&& blend, float (&acc)[4][4][4]) {
  static_assert(kStages >= 3, "a step's weights must be written a barrier before its blend");
#pragma unroll
  for (int st = 0; st < kStages; ++st) {
    if (st < ktiles) issue(st);
    CpAsyncCommit();
  }
  CpAsyncWait<kStages - 1>();
  __syncthreads();  // the prologue's weights are visible
  if (ktiles > 0) blend(0);
  __syncthreads();
  for (int kt = 0; kt < ktiles; ++kt) {
    CpAsyncWait<kStages - 2>();  // this thread's copies for step kt + 1 have landed
    mma::MmaStep<T, kMode, kAK, false>(a_tiles + (kt % 2) * a_tile_bytes,
                                       b_tiles + (kt % kStages) * b_tile_bytes, acc);
    if (kt + 1 < ktiles) blend(kt + 1);
    // A tile (kt + 1) % 2 is complete, step kt's A tile, staging, weights and B stage are free.
    __syncthreads();
    if (kt + kStages < ktiles) issue(kt + kStages);
    CpAsyncCommit();
  }
  CpAsyncWait<0>();
}

// ---------------------------------------------------------------------------------------------
// Forward: A[pixel][(tap, channel)] (128 pixels x one 64-byte k-step of one tap's channels) is
// gathered asynchronously. For step kt + kStages - 1, each thread cp.async-copies the four corner
// chunks of its two (pixel, 16-byte chunk) units into a staging area (L1-cached: neighbouring
// pixels share corners), and one thread per row stores the row's bilinear weights; when step kt
// comes up, each thread blends its own units into the A tile (double-buffered) and one barrier
// per step orders everything. A pixel's sample changes only with the (tap, deformable group): its
// offset and mask are prefetched one sample ahead.
// ---------------------------------------------------------------------------------------------

// ForwardLayout: the corner staging is [row][corner][step bytes], the weights [row][corner].
template <typename T, int kStages>
struct ForwardLayout
    : GatherLayout<kStages, mma::Tile<T, true, kTileM>, mma::Tile<T, false, kTileN>,
                   kTileM * 4 * mma::kStepBytes, kTileM * 4 * sizeof(float)> {};

template <typename T, MathMode kMode, int kStages>
__global__ void __launch_bounds__(kThreads, 1)
    ForwardKernel(DcnShape s, const T* input, const T* offset, const T* mask, const T* weight,
                  const T* bias, T* output, int64_t row0, bool weight_vector_ok) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  using L = ForwardLayout<T, kStages>;
  constexpr int V = kVector<T>;
  constexpr int kChunks = kStepK<T> / V;  // 16-byte chunks per row and step
  constexpr int kRowsPerPass = kThreads / kChunks;
  constexpr int kUnits = kTileM / kRowsPerPass;
  extern __shared__ __align__(128) char smem[];

  const int group = blockIdx.z;
  const int64_t m0 = row0 + int64_t{blockIdx.x} * kTileM, n0 = int64_t{blockIdx.y} * kTileN;
  const int64_t cog = s.out_channels_per_group(), kg = s.group_columns();
  const int cpg = static_cast<int>(s.in_channels_per_group());
  const int cpd = static_cast<int>(s.channels_per_deformable_group());
  const int steps_per_tap = cpg / kStepK<T>;
  const int ktiles = s.taps() * steps_per_tap;
  const int chunk = threadIdx.x % kChunks;

  // The units of this thread: fixed rows (pixels) and 16-byte chunk for the whole kernel.
  int row[kUnits];
  int64_t pixel[kUnits];
  OutputPixel at[kUnits];
  const T* image[kUnits];
#pragma unroll
  for (int u = 0; u < kUnits; ++u) {
    row[u] = threadIdx.x / kChunks + u * kRowsPerPass;
    pixel[u] = m0 + row[u];
    at[u] = LocateOutputPixel(s, pixel[u] < s.pixels() ? pixel[u] : 0);
    image[u] = input + at[u].n * s.image_elements();
  }
  // Which sample (deformable group * taps + tap) and channels the next step to issue reads,
  // advanced step by step (no divisions in the loop). Steps run over taps, and within a tap over
  // this group's channels, kStepK at a time; the deformable group changes every cpd channels.
  const int group_c0 = group * cpg, first_d = group_c0 / cpd;
  int issue_tap = 0, issue_step = 0, issue_c0 = group_c0, issue_d = first_d;
  int issue_d_end = (first_d + 1) * cpd;
  // Offset and mask of the next sample, loaded one sample ahead; corners and weights of the
  // current one.
  SampleOffset<float> pre[kUnits];
  int corner[kUnits][4];
  float corner_weight[kUnits][4];
  auto prefetch = [&](int d, int t) {
    const int i = d * s.taps() + t;
#pragma unroll
    for (int u = 0; u < kUnits; ++u) {
      pre[u] = {0.f, 0.f, 0.f};
      if (pixel[u] < s.pixels()) pre[u] = ReadSampleOffset<float>(s, pixel[u], i, offset, mask);
    }
  };
  prefetch(first_d, 0);

  // Issues the next step into its stage: corner chunks (cp.async), the rows' weights, the B tile.
  auto issue = [&](int kt) {
    const int stage = kt % kStages;
    if (issue_step == 0 || issue_c0 == issue_d * cpd) {  // a new sample: its offsets are prefetched
#pragma unroll
      for (int u = 0; u < kUnits; ++u) {
        BilinearPoint<float> point;
        MakeTapPoint(s, at[u], issue_tap, pre[u].dy, pre[u].dx, &point);
#pragma unroll
        for (int k = 0; k < 4; ++k) {
          corner[u][k] = point.pixel[k];
          corner_weight[u][k] = point.weight[k] * pre[u].m;
        }
      }
      if (issue_d_end < group_c0 + cpg) {
        prefetch(issue_d + 1, issue_tap);
      } else if (issue_tap + 1 < s.taps()) {
        prefetch(first_d, issue_tap + 1);
      }
    }
    const int c = issue_c0 + chunk * V;
    char* staging = smem + stage * L::kStaging;
#pragma unroll
    for (int u = 0; u < kUnits; ++u) {
#pragma unroll
      for (int k = 0; k < 4; ++k) {
        const bool valid = corner[u][k] >= 0;
        CpAsync16Cached(staging + (row[u] * 4 + k) * mma::kStepBytes + chunk * 16,
                        image[u] + (valid ? corner[u][k] * s.in_channels + c : 0), valid);
      }
      if (chunk == 0) {
        *reinterpret_cast<float4*>(smem + L::kWeightsAt + stage * L::kWeights + row[u] * 16) =
            make_float4(corner_weight[u][0], corner_weight[u][1], corner_weight[u][2],
                        corner_weight[u][3]);
      }
    }
    L::TileB::Load(smem + L::kBAt + stage * L::TileB::kBytes, weight + group * cog, s.out_channels,
                   n0, cog, int64_t{kt} * kStepK<T>, kg, weight_vector_ok);
    // Advance to the next step.
    issue_c0 += kStepK<T>;
    if (++issue_step == steps_per_tap) {
      issue_step = 0;
      ++issue_tap;
      issue_c0 = group_c0;
      issue_d = first_d;
      issue_d_end = (first_d + 1) * cpd;
    } else if (issue_c0 >= issue_d_end) {
      ++issue_d;
      issue_d_end += cpd;
    }
  };

  // Blends this thread's units of step kt (this thread copied their corners) into A tile kt % 2.
  auto blend = [&](int kt) {
    const int stage = kt % kStages;
    const char* staging = smem + stage * L::kStaging;
    char* a_tile = smem + L::kAAt + (kt % 2) * L::TileA::kBytes;
#pragma unroll
    for (int u = 0; u < kUnits; ++u) {
      const float4 w = *reinterpret_cast<const float4*>(smem + L::kWeightsAt + stage * L::kWeights +
                                                        row[u] * 16);
      Vector16<T> raw[4];
#pragma unroll
      for (int k = 0; k < 4; ++k) {
        raw[k] = *reinterpret_cast<const Vector16<T>*>(
            staging + (row[u] * 4 + k) * mma::kStepBytes + chunk * 16);
      }
      *reinterpret_cast<Vector16<T>*>(a_tile + row[u] * L::TileA::kRowBytes + chunk * 16) =
          BlendCorners(w, raw);
    }
  };

  float acc[4][4][4] = {};
  GatherMainLoop<T, kMode, kStages, true>(ktiles, smem + L::kAAt, L::TileA::kBytes, smem + L::kBAt,
                                          L::TileB::kBytes, issue, blend, acc);

  T* out = output + group * cog;
  const T* b = bias ? bias + group * cog : nullptr;
  mma::ForEachAccumulatorPair(acc, [&](int r, int col, float v0, float v1) {
    const int64_t p = m0 + r, n = n0 + col;
    if (p >= s.pixels()) return;
    if (n < cog)
      out[p * s.out_channels + n] = FromFloat<T>(v0 + (b ? static_cast<float>(b[n]) : 0.f));
    if (n + 1 < cog) {
      out[p * s.out_channels + n + 1] = FromFloat<T>(v1 + (b ? static_cast<float>(b[n + 1]) : 0.f));
    }
  });
#else
  __trap();
#endif
}

// ---------------------------------------------------------------------------------------------
// Backward input: column gradients grad_output[pixel][co] x weight[(tap, channel)][co]^T per
// 128 x 128 tile (both operands K-contiguous, copied), staged in shared memory for
// input_scatter's epilogue. A launch covers the pixels of images [n_begin, ...) up to p_end; the
// float buffers hold those images only.
// ---------------------------------------------------------------------------------------------

static_assert(kThreads == input_scatter::kThreads && kTileM == input_scatter::kTileRows &&
                  kTileN == input_scatter::kTileColumns,
              "the block stages and scatters whole tiles");

template <typename T, MathMode kMode>
__global__ void __launch_bounds__(kThreads, 2)
    InputKernel(DcnShape s, const T* grad_output, const T* input, const T* offset, const T* mask,
                const T* weight, float* grad_input_acc, float* coord_acc, int64_t row0,
                int64_t n_begin, int64_t p_end, bool grad_vector_ok, bool weight_vector_ok) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  extern __shared__ __align__(128) char smem[];
  const int group = blockIdx.z;
  const int64_t m0 = row0 + int64_t{blockIdx.x} * kTileM, n0 = int64_t{blockIdx.y} * kTileN;
  const int64_t cog = s.out_channels_per_group(), kg = s.group_columns();
  mma::CopyProducer<T, true, kTileM> pa{
      grad_output + group * cog, s.out_channels, m0, p_end, 0, cog, grad_vector_ok};
  mma::CopyProducer<T, true, kTileN> pb{weight + group * cog, s.out_channels, n0, kg, 0, cog,
                                        weight_vector_ok};
  float acc[4][4][4] = {};
  mma::MainLoop<T, kMode, true, true>(static_cast<int>(CeilDiv(cog, kStepK<T>)), pa, pb, smem, acc);

  float* staged = reinterpret_cast<float*>(smem);
  mma::ForEachAccumulatorPair(acc, [&](int r, int col, float v0, float v1) {
    *reinterpret_cast<float2*>(staged + r * input_scatter::kStagedStride + col) =
        make_float2(v0, v1);
  });
  __syncthreads();

  input_scatter::ScatterTile(s, staged, threadIdx.x, group, m0, n0, input, offset, mask,
                             grad_input_acc, coord_acc, n_begin, p_end);
#else
  __trap();
#endif
}

// ---------------------------------------------------------------------------------------------
// Backward weight: grad_weight[(tap, channel)][co] = sum over pixels of
// column[pixel][(tap, channel)] x grad_output[pixel][co], a GEMM whose K runs over pixels. The A
// operand (one k-step of pixels x 128 columns, MN-contiguous) is gathered through the same
// pipeline as the forward's: each thread keeps one 16-byte column chunk (so one tap and
// deformable group) and walks its pixel rows step by step; B (grad_output rows) is copied. The
// pixels are split over blocks (grid.y), whose 128 x 128 partial sums meet in a float
// accumulator through atomics; the bias gradient is the im2col implementation's fixed-order
// reduction.
// ---------------------------------------------------------------------------------------------

static_assert(kWeightTileOutChannels == kTileN, "the planner's view of the weight tile");

// WeightLayout: A holds kStepK pixel rows of kTileM columns, B kStepK pixel rows of kTileN output
// channels; a unit is one (pixel row, 16-byte column chunk) of a step; the corner staging is
// [corner][unit] 16 bytes, the weights [unit] float4.
template <typename T>
constexpr int kWeightUnits = mma::Tile<T, false, kTileM>::kChunks;
template <typename T, int kStages>
struct WeightLayout
    : GatherLayout<kStages, mma::Tile<T, false, kTileM>, mma::Tile<T, false, kTileN>,
                   4 * kWeightUnits<T> * 16, kWeightUnits<T> * 16> {
  static constexpr int kUnits = kWeightUnits<T>;
};

template <typename T, MathMode kMode, int kStages>
__global__ void __launch_bounds__(kThreads, 1)
    WeightKernel(DcnShape s, const T* grad_output, const T* input, const T* offset, const T* mask,
                 float* grad_weight_acc, int64_t pixels_per_split, int m_tiles,
                 bool grad_vector_ok) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  using L = WeightLayout<T, kStages>;
  constexpr int kChunksPerRow = L::TileA::kChunksPerRow;
  constexpr int kRowsPerPass = kThreads / kChunksPerRow;
  constexpr int kUnits = L::kUnits / kThreads;  // per thread
  static_assert(kUnits * kThreads == L::kUnits, "each thread fills whole units");
  extern __shared__ __align__(128) char smem[];

  const int group = blockIdx.z;
  const int64_t m0 = int64_t{blockIdx.x % m_tiles} * kTileM;
  const int64_t n0 = int64_t{blockIdx.x / m_tiles} * kTileN;
  const int64_t p_begin = int64_t{blockIdx.y} * pixels_per_split;
  const int64_t p_end = min(s.pixels(), p_begin + pixels_per_split);
  const int64_t cog = s.out_channels_per_group(), cpg = s.in_channels_per_group();

  // This thread's column chunk: its tap, input channel and sample index (fixed for the kernel).
  const int chunk = threadIdx.x % kChunksPerRow;
  const int64_t column = m0 + chunk * kVector<T>;  // within the group's (tap, channel) rows
  const bool column_valid = column < s.group_columns();
  const int tap = static_cast<int>(column / cpg);
  const int64_t channel = group * cpg + column % cpg;
  const int sample = static_cast<int>(channel / s.channels_per_deformable_group()) * s.taps() + tap;
  // Per unit: the pixel of the next step to issue, where it is (walked without divisions) and its
  // sample's offset and mask, loaded one step ahead.
  int64_t pixel[kUnits];
  OutputPixel at[kUnits];
  SampleOffset<float> pre[kUnits];
  auto prefetch = [&](int u) {
    pre[u] = {0.f, 0.f, 0.f};
    if (column_valid && pixel[u] < p_end) {
      pre[u] = ReadSampleOffset<float>(s, pixel[u], sample, offset, mask);
    }
  };
#pragma unroll
  for (int u = 0; u < kUnits; ++u) {
    pixel[u] = p_begin + threadIdx.x / kChunksPerRow + u * kRowsPerPass;
    at[u] = LocateOutputPixel(s, pixel[u] < p_end ? pixel[u] : 0);
    prefetch(u);
  }

  auto issue = [&](int kt) {
    const int stage = kt % kStages;
    char* staging = smem + stage * L::kStaging;
#pragma unroll
    for (int u = 0; u < kUnits; ++u) {
      const int unit = threadIdx.x + u * kThreads;
      BilinearPoint<float> point;
      const bool valid = column_valid && pixel[u] < p_end;
      if (valid) MakeTapPoint(s, at[u], tap, pre[u].dy, pre[u].dx, &point);
      const T* image = input + at[u].n * s.image_elements() + channel;
#pragma unroll
      for (int k = 0; k < 4; ++k) {
        const bool read = valid && point.pixel[k] >= 0;
        CpAsync16Cached(staging + (k * L::kUnits + unit) * 16,
                        image + (read ? point.pixel[k] * s.in_channels : 0), read);
      }
      const float m = pre[u].m;
      *reinterpret_cast<float4*>(smem + L::kWeightsAt + stage * L::kWeights + unit * 16) =
          valid ? make_float4(point.weight[0] * m, point.weight[1] * m, point.weight[2] * m,
                              point.weight[3] * m)
                : make_float4(0.f, 0.f, 0.f, 0.f);
      pixel[u] += kStepK<T>;
      at[u].ox += kStepK<T>;
      while (at[u].ox >= s.out_w) {
        at[u].ox -= static_cast<int>(s.out_w);
        if (++at[u].oy == s.out_h) {
          at[u].oy = 0;
          ++at[u].n;
        }
      }
      prefetch(u);
    }
    L::TileB::Load(smem + L::kBAt + stage * L::TileB::kBytes, grad_output + group * cog,
                   s.out_channels, n0, cog, p_begin + int64_t{kt} * kStepK<T>, p_end,
                   grad_vector_ok);
  };

  auto blend = [&](int kt) {
    const int stage = kt % kStages;
    const char* staging = smem + stage * L::kStaging;
    char* a_tile = smem + L::kAAt + (kt % 2) * L::TileA::kBytes;
#pragma unroll
    for (int u = 0; u < kUnits; ++u) {
      const int unit = threadIdx.x + u * kThreads;
      const float4 w =
          *reinterpret_cast<const float4*>(smem + L::kWeightsAt + stage * L::kWeights + unit * 16);
      Vector16<T> raw[4];
#pragma unroll
      for (int k = 0; k < 4; ++k) {
        raw[k] = *reinterpret_cast<const Vector16<T>*>(staging + (k * L::kUnits + unit) * 16);
      }
      const int row = threadIdx.x / kChunksPerRow + u * kRowsPerPass;
      *reinterpret_cast<Vector16<T>*>(a_tile + row * L::TileA::kRowBytes + chunk * 16) =
          BlendCorners(w, raw);
    }
  };

  float acc[4][4][4] = {};
  GatherMainLoop<T, kMode, kStages, false>(static_cast<int>(CeilDiv(p_end - p_begin, kStepK<T>)),
                                           smem + L::kAAt, L::TileA::kBytes, smem + L::kBAt,
                                           L::TileB::kBytes, issue, blend, acc);
  const int64_t kg = s.group_columns();
  float* out = grad_weight_acc + group * cog;
  mma::ForEachAccumulatorPair(acc, [&](int r, int col, float v0, float v1) {
    const int64_t m = m0 + r, n = n0 + col;
    if (m >= kg) return;
    if (n < cog) atomicAdd(out + m * s.out_channels + n, v0);
    if (n + 1 < cog) atomicAdd(out + m * s.out_channels + n + 1, v1);
  });
#else
  __trap();
#endif
}

MathMode Mode(const Options& o) {
  return o.allow_tf32 ? MathMode::kTensorCore : MathMode::kTensorCore3x;
}

// Pipeline depth of a gathering kernel (its shared-memory Layout) that fits the device, or 0.
template <template <typename, int> class Layout, typename T>
int StagesThatFit(const Options& o) {
  if (o.shared_memory_per_block >= Layout<T, 4>::kBytes) return 4;
  if (o.shared_memory_per_block >= Layout<T, 3>::kBytes) return 3;
  return 0;
}

template <auto kFn>
using Constant = std::integral_constant<decltype(kFn), kFn>;

// Calls launch(kernel constant, shared-memory bytes) with the instance of a gathering kernel that
// fits the device (4 or 3 stages) in the math mode the options ask for; kernel(mode, stages)
// names the instance.
template <typename T, template <typename, int> class Layout, typename Kernel, typename Launch>
cudaError_t LaunchGather(const Options& o, Kernel&& kernel, Launch&& launch) {
  auto with_stages = [&](auto mode) {
    if (StagesThatFit<Layout, T>(o) == 4) {
      return launch(kernel(mode, std::integral_constant<int, 4>()), Layout<T, 4>::kBytes);
    }
    return launch(kernel(mode, std::integral_constant<int, 3>()), Layout<T, 3>::kBytes);
  };
  if constexpr (std::is_same_v<T, float>) {
    if (Mode(o) == MathMode::kTensorCore3x) {
      return with_stages(std::integral_constant<MathMode, MathMode::kTensorCore3x>());
    }
  }
  return with_stages(std::integral_constant<MathMode, MathMode::kTensorCore>());
}

// The backward weight's workspace: grad_weight in float for half/bfloat16, the bias partials.
template <typename T>
struct BackwardWeightBuffers {
  float* grad_weight_acc = nullptr;  // only when T is not float
  im2col::BiasGradient<T> bias;
  BackwardWeightBuffers(const DcnShape& s, WorkspaceLayout* w) : bias(s, w) {
    if (!std::is_same_v<T, float>) grad_weight_acc = w->Take<float>(s.weight_elements());
  }
};

}  // namespace

template <typename T>
bool ForwardSupported(const DcnShape& s, const Options& o) {
  return o.compute_capability >= 80 && !std::is_same_v<T, double> &&
         StagesThatFit<ForwardLayout, T>(o) > 0 && s.in_channels_per_group() % kStepK<T> == 0 &&
         s.channels_per_deformable_group() % kStepK<T> == 0;
}

template <typename T>
bool BackwardInputSupported(const DcnShape& s, const Options& o) {
  return o.compute_capability >= 80 && !std::is_same_v<T, double> && !o.deterministic &&
         input_scatter::Supported(s);
}

template <typename T>
bool BackwardWeightSupported(const DcnShape& s, const Options& o) {
  return o.compute_capability >= 80 && !std::is_same_v<T, double> && !o.deterministic &&
         StagesThatFit<WeightLayout, T>(o) > 0 && s.pixels() > 0 &&
         s.in_channels_per_group() % kVector<T> == 0 &&
         s.channels_per_deformable_group() % kVector<T> == 0;
}

template <typename T>
size_t BackwardWeightWorkspaceBytes(const DcnShape& s) {
  WorkspaceLayout w;
  BackwardWeightBuffers<T> buffers(s, &w);
  return w.bytes();
}

template <typename T>
size_t BackwardInputWorkspaceBytes(const DcnShape& s) {
  return input_scatter::WorkspaceBytes<T>(s);
}

template <typename T>
cudaError_t Forward(const DcnShape& s, const T* input, const T* offset, const T* mask,
                    const T* weight, const T* bias, T* output, const Options& o,
                    cudaStream_t stream) {
  const bool w_ok = VectorOk(weight, s.out_channels, s.out_channels_per_group(), sizeof(T));
  auto launch = [&](auto kernel, int smem_bytes) {
    constexpr auto kernel_fn = decltype(kernel)::value;
    const cudaError_t err = mma::AllowSharedMemory<kernel_fn>(smem_bytes);
    if (err != cudaSuccess) return err;
    return ForEachTileLaunch(0, s.pixels(), kTileM, 1, [&](int64_t row0, int64_t tiles) {
      const dim3 grid(tiles, CeilDiv(s.out_channels_per_group(), kTileN), s.groups);
      kernel_fn<<<grid, kThreads, smem_bytes, stream>>>(s, input, offset, mask, weight, bias,
                                                        output, row0, w_ok);
    });
  };
  return LaunchGather<T, ForwardLayout>(
      o,
      [](auto mode, auto stages) {
        return Constant<&ForwardKernel<T, decltype(mode)::value, decltype(stages)::value>>();
      },
      launch);
}

template <typename T>
cudaError_t BackwardInput(const DcnShape& s, const T* grad_output, const T* input, const T* offset,
                          const T* mask, const T* weight, T* grad_input, T* grad_offset,
                          T* grad_mask, void* workspace, const Options& o, cudaStream_t stream) {
  // The epilogue stages the 128 x 128 float tile in the pipeline's shared memory.
  constexpr int kSmem = std::max(mma::kPipelineBytes<T, true, true>, input_scatter::kStagedBytes);
  const bool g_ok = VectorOk(grad_output, s.out_channels, s.out_channels_per_group(), sizeof(T));
  const bool w_ok = VectorOk(weight, s.out_channels, s.out_channels_per_group(), sizeof(T));
  auto launch_pass = [&](const input_scatter::Pass& pass) {
    auto launch = [&](auto kernel) {
      constexpr auto kernel_fn = decltype(kernel)::value;
      DCN_RETURN_IF_ERROR(mma::AllowSharedMemory<kernel_fn>(kSmem));
      return ForEachTileLaunch(
          pass.p_begin, pass.p_end, kTileM, 1, [&](int64_t row0, int64_t tiles) {
            const dim3 grid(tiles, CeilDiv(s.group_columns(), kTileN), s.groups);
            kernel_fn<<<grid, kThreads, kSmem, stream>>>(
                s, grad_output, input, offset, mask, weight, pass.grad_input_acc, pass.coord_acc,
                row0, pass.n_begin, pass.p_end, g_ok, w_ok);
          });
    };
    // 3xTF32 for fp32 alone: fp16/bf16 instantiate the tensor-core mode only.
    if constexpr (std::is_same_v<T, float>) {
      if (Mode(o) == MathMode::kTensorCore3x) {
        return launch(Constant<&InputKernel<T, MathMode::kTensorCore3x>>());
      }
    }
    return launch(Constant<&InputKernel<T, MathMode::kTensorCore>>());
  };
  return input_scatter::RunPasses(s, grad_input, grad_offset, grad_mask, workspace, launch_pass,
                                  stream);
}

template <typename T>
cudaError_t BackwardWeight(const DcnShape& s, const T* grad_output, const T* input, const T* offset,
                           const T* mask, T* grad_weight, T* grad_bias, void* workspace,
                           const Options& o, cudaStream_t stream) {
  WorkspaceLayout layout(workspace);
  BackwardWeightBuffers<T> buffers(s, &layout);
  float* grad_weight_acc =
      buffers.grad_weight_acc ? buffers.grad_weight_acc : reinterpret_cast<float*>(grad_weight);
  DCN_RETURN_IF_ERROR(
      cudaMemsetAsync(grad_weight_acc, 0, s.weight_elements() * sizeof(float), stream));
  const int m_tiles = static_cast<int>(CeilDiv(s.group_columns(), kTileM));
  const int tiles = m_tiles * static_cast<int>(CeilDiv(s.out_channels_per_group(), kTileN));
  const bool g_ok = VectorOk(grad_output, s.out_channels, s.out_channels_per_group(), sizeof(T));
  auto launch = [&](auto kernel, int smem_bytes) {
    constexpr auto kernel_fn = decltype(kernel)::value;
    DCN_RETURN_IF_ERROR(mma::AllowSharedMemory<kernel_fn>(smem_bytes));
    int per_sm = 1;
    DCN_RETURN_IF_ERROR(
        cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kernel_fn, kThreads, smem_bytes));
    const int64_t steps = CeilDiv(s.pixels(), kStepK<T>);
    const int64_t splits = ChooseSplits(int64_t{tiles} * s.groups, steps,
                                        std::max(1, per_sm) * int64_t{o.multiprocessors});
    const int64_t per_split = CeilDiv(steps, splits) * kStepK<T>;
    const dim3 grid(tiles, static_cast<unsigned>(CeilDiv(s.pixels(), per_split)), s.groups);
    kernel_fn<<<grid, kThreads, smem_bytes, stream>>>(s, grad_output, input, offset, mask,
                                                      grad_weight_acc, per_split, m_tiles, g_ok);
    return cudaGetLastError();
  };
  const cudaError_t err = LaunchGather<T, WeightLayout>(
      o,
      [](auto mode, auto stages) {
        return Constant<&WeightKernel<T, decltype(mode)::value, decltype(stages)::value>>();
      },
      launch);
  DCN_RETURN_IF_ERROR(err);
  if (buffers.grad_weight_acc)
    DCN_RETURN_IF_ERROR(Convert(s.weight_elements(), buffers.grad_weight_acc, grad_weight, stream));
  return grad_bias ? buffers.bias.Run(s, grad_output, grad_bias, stream) : cudaSuccess;
}

#define INSTANTIATE(T)                                                                            \
  template bool ForwardSupported<T>(const DcnShape&, const Options&);                             \
  template bool BackwardInputSupported<T>(const DcnShape&, const Options&);                       \
  template bool BackwardWeightSupported<T>(const DcnShape&, const Options&);                      \
  template size_t BackwardInputWorkspaceBytes<T>(const DcnShape&);                                \
  template size_t BackwardWeightWorkspaceBytes<T>(const DcnShape&);                               \
  template cudaError_t Forward<T>(const DcnShape&, const T*, const T*, const T*, const T*,        \
                                  const T*, T*, const Options&, cudaStream_t);                    \
  template cudaError_t BackwardInput<T>(const DcnShape&, const T*, const T*, const T*, const T*,  \
                                        const T*, T*, T*, T*, void*, const Options&,              \
                                        cudaStream_t);                                            \
  template cudaError_t BackwardWeight<T>(const DcnShape&, const T*, const T*, const T*, const T*, \
                                         T*, T*, void*, const Options&, cudaStream_t);
INSTANTIATE(__half)
INSTANTIATE(__nv_bfloat16)
INSTANTIATE(float)
#undef INSTANTIATE

}  // namespace fused_sm80
}  // namespace cuda
}  // namespace tensorflow_dcn
