// The im2col formulation of DCNv2 on the GPU (as in the original design and torchvision):
//   forward          deformable im2col -> columns x weight (+ bias)
//   backward input   grad_output x weight^T -> column gradients -> col2im (grad_input, scattered
//                    to the 4 corners of each sample) and col2im_coord (grad_offset, grad_mask)
//   backward weight  deformable im2col -> columns^T x grad_output, split over pixels and reduced
//                    in a fixed order; grad_bias by a fixed-order reduction
// All sampling goes through bilinear.h. Columns are chunked over output pixels so that one chunk
// holds at most kColumnBufferBytes.
//
// Determinism: everything but the col2im scatter is computed in a fixed order. The scatter uses
// float atomics unless Options::deterministic, where each grad_input element is instead summed by
// one warp over its contributions in a fixed order, found by a stable radix sort of
// (target pixel, contribution id).
#include "tensorflow_dcn/cc/core/cuda/im2col.cuh"

#include <algorithm>
#include <cub/device/device_radix_sort.cuh>

#include "tensorflow_dcn/cc/core/bilinear.h"
#include "tensorflow_dcn/cc/core/cuda/device_util.cuh"
#include "tensorflow_dcn/cc/core/cuda/gemm.cuh"
#include "tensorflow_dcn/cc/core/workspace.h"

namespace tensorflow_dcn {
namespace cuda {
namespace im2col {
namespace {

// Cap of one chunk's column buffer.
constexpr int64_t kColumnBufferBytes = int64_t{32} << 20;
constexpr int kBlock = 256;

int64_t RoundUp(int64_t a, int64_t b) { return CeilDiv(a, b) * b; }

// The columns' row stride: a multiple of 8 elements keeps the rows aligned for the vector
// accesses (up to 8 elements) and the GEMM's 16-byte loads.
int64_t ColumnStride(const DcnShape& s) { return RoundUp(s.columns(), 8); }

template <typename U>
int64_t ChunkRows(const DcnShape& s) {
  const int64_t rows = kColumnBufferBytes / (ColumnStride(s) * static_cast<int64_t>(sizeof(U)));
  return std::max<int64_t>(1, std::min(rows, s.pixels()));
}

MathMode GemmMode(const Options& o, bool is_float) {
  if (o.compute_capability < 80) return MathMode::kSimt;
  return (is_float && !o.allow_tf32) ? MathMode::kTensorCore3x : MathMode::kTensorCore;
}

// --------------------------------------------------------------------------------------------
// Kernels. A "sample" is (output pixel, deformable group, tap); a group of 2^lanes_log2 threads
// handles one sample, its lanes striding over the sample's channels.
// --------------------------------------------------------------------------------------------

struct SampleThread {
  int64_t sample;  // within the chunk: row * mask_channels + (group * taps + tap)
  int lane, lanes;
};

__device__ SampleThread ThisSampleThread(int lanes_log2) {
  SampleThread st;
  st.lanes = 1 << lanes_log2;
  st.lane = threadIdx.x & (st.lanes - 1);
  st.sample = int64_t{blockIdx.x} * (kBlock >> lanes_log2) + (threadIdx.x >> lanes_log2);
  return st;
}

int64_t SampleBlocks(int64_t samples, int lanes_log2) {
  return CeilDiv(samples, kBlock >> lanes_log2);
}

// The corner values of channels [c, c + V) of a sample (zero outside): four vector loads in
// flight at once.
template <int V, typename Acc, typename T>
__device__ __forceinline__ void LoadCornerVectors(const BilinearPoint<Acc>& point, const T* image,
                                                  int64_t channels, int64_t c, Acc (&v)[V][4]) {
#pragma unroll
  for (int k = 0; k < 4; ++k) {
    Vec<T, V> x = {};
    if (point.pixel[k] >= 0) {
      x = *reinterpret_cast<const Vec<T, V>*>(image + point.pixel[k] * channels + c);
    }
#pragma unroll
    for (int e = 0; e < V; ++e) v[e][k] = static_cast<Acc>(x.e[e]);
  }
}

// Elements per vector access for a shape: 16 bytes when every run of channels (group, deformable
// group, pixel) starts 16-byte aligned, else 1.
template <typename T>
int VectorWidth(const DcnShape& s) {
  const int64_t v = 16 / sizeof(T);
  const bool aligned =
      s.in_channels_per_group() % v == 0 && s.channels_per_deformable_group() % v == 0;
  return aligned ? static_cast<int>(v) : 1;
}

// Lanes of a warp that share one sample, each taking V channels at a time: a power of two <= 32.
int SampleLanesLog2(const DcnShape& s, int vector_width) {
  int log2 = 0;
  while (log2 < 5 && (int64_t{vector_width} << log2) < s.channels_per_deformable_group()) ++log2;
  return log2;
}

// cols[r][ColumnIndex(t, c)] = mask * sample, for rows r of output pixels [row0, row0 + rows).
// A lane group takes one (pixel, deformable group) and walks its taps, so that the pixel's
// coordinates are worked out once.
template <typename T, int V>
__global__ void __launch_bounds__(kBlock)
    Im2colKernel(DcnShape s, const T* input, const T* offset, const T* mask, int64_t row0,
                 int64_t rows, T* cols, int64_t ld, int lanes_log2) {
  using Acc = AccumulatorOf<T>;
  const SampleThread st = ThisSampleThread(lanes_log2);
  if (st.sample >= rows * s.deformable_groups) return;
  // A chunk holds fewer than 2^31 samples (its columns fit kColumnBufferBytes).
  const int item = static_cast<int>(st.sample);
  const int r = item / s.deformable_groups, d = item % s.deformable_groups;
  const int64_t p = row0 + r;
  const OutputPixel at = LocateOutputPixel(s, p);
  const T* image = input + at.n * s.image_elements();
  const int cpd = static_cast<int>(s.channels_per_deformable_group());
  const int cpg = static_cast<int>(s.in_channels_per_group());
  const int taps = s.taps();
  T* row = cols + r * ld;
  for (int t = 0; t < taps; ++t) {
    BilinearPoint<Acc> point;
    Acc m;
    MakeSample(s, p, at, d * taps + t, offset, mask, &point, &m);
    for (int c = d * cpd + st.lane * V; c < (d + 1) * cpd; c += st.lanes * V) {
      Acc v[V][4];
      LoadCornerVectors<V>(point, image, s.in_channels, c, v);
      Vec<T, V> out;
#pragma unroll
      for (int e = 0; e < V; ++e) out.e[e] = FromAcc<T>(m * BilinearValue(point, v[e]));
      *reinterpret_cast<Vec<T, V>*>(row + ColumnIndex(cpg, taps, t, c)) = out;
    }
  }
}

// Sum over the lanes of one sample group (they are consecutive lanes of one warp).
template <typename Acc>
__device__ Acc SampleGroupSum(Acc v, int lanes) {
  for (int delta = lanes >> 1; delta > 0; delta >>= 1)
    v += __shfl_xor_sync(0xffffffffu, v, delta, lanes);
  return v;
}

// grad_offset and grad_mask of each sample from the column gradients; with kScatter also the
// atomic col2im into grad_input_acc.
template <typename T, int V, bool kScatter>
__global__ void __launch_bounds__(kBlock)
    Col2imCoordKernel(DcnShape s, const T* input, const T* offset, const T* mask,
                      const AccumulatorOf<T>* grad_cols, int64_t ld, int64_t row0, int64_t rows,
                      AccumulatorOf<T>* grad_input_acc, T* grad_offset, T* grad_mask,
                      int lanes_log2) {
  using Acc = AccumulatorOf<T>;
  const SampleThread st = ThisSampleThread(lanes_log2);
  // Threads past the end still take part in the shuffles below.
  const bool active = st.sample < rows * s.mask_channels();
  const int mask_channels = static_cast<int>(s.mask_channels());
  const int sample = active ? static_cast<int>(st.sample) : 0;
  const int r = sample / mask_channels, i = sample % mask_channels;
  const int64_t p = row0 + r;
  const int taps = s.taps(), t = i % taps, d = i / taps;
  const OutputPixel at = LocateOutputPixel(s, p);
  BilinearPoint<Acc> point;
  Acc m;
  MakeSample(s, p, at, i, offset, mask, &point, &m);
  const T* image = input + at.n * s.image_elements();
  Acc* grad_image = kScatter ? grad_input_acc + at.n * s.image_elements() : nullptr;
  const int cpd = static_cast<int>(s.channels_per_deformable_group());
  const int cpg = static_cast<int>(s.in_channels_per_group());
  const Acc* row = grad_cols + r * ld;
  Acc sum_value = 0, sum_dy = 0, sum_dx = 0;
  for (int c = d * cpd + st.lane * V; active && c < (d + 1) * cpd; c += st.lanes * V) {
    const Vec<Acc, V> g = *reinterpret_cast<const Vec<Acc, V>*>(row + ColumnIndex(cpg, taps, t, c));
    Acc v[V][4];
    LoadCornerVectors<V>(point, image, s.in_channels, c, v);
#pragma unroll
    for (int e = 0; e < V; ++e) {
      Acc dy, dx;
      BilinearCoordinateGrad(point, v[e], &dy, &dx);
      sum_value += g.e[e] * BilinearValue(point, v[e]);
      sum_dy += g.e[e] * dy;
      sum_dx += g.e[e] * dx;
    }
    if (kScatter) {
#pragma unroll
      for (int k = 0; k < 4; ++k) {
        if (point.pixel[k] < 0) continue;
        ScatterAdd<V>(grad_image + point.pixel[k] * s.in_channels + c, point.weight[k] * m, g.e);
      }
    }
  }
  sum_value = SampleGroupSum(sum_value, st.lanes);
  sum_dy = SampleGroupSum(sum_dy, st.lanes);
  sum_dx = SampleGroupSum(sum_dx, st.lanes);
  if (active && st.lane == 0) {
    grad_offset[p * s.offset_channels() + 2 * i] = FromAcc<T>(m * sum_dy);
    grad_offset[p * s.offset_channels() + 2 * i + 1] = FromAcc<T>(m * sum_dx);
    if (grad_mask) grad_mask[p * s.mask_channels() + i] = FromAcc<T>(sum_value);
  }
}

template <typename T>
cudaError_t LaunchIm2col(const DcnShape& s, const T* input, const T* offset, const T* mask,
                         int64_t row0, int64_t rows, T* cols, int64_t ld, cudaStream_t stream) {
  constexpr int kWide = 16 / sizeof(T);
  const int v = VectorWidth<T>(s), lanes_log2 = SampleLanesLog2(s, v);
  const int64_t blocks = SampleBlocks(rows * s.deformable_groups, lanes_log2);
  if (v == kWide) {
    Im2colKernel<T, kWide>
        <<<blocks, kBlock, 0, stream>>>(s, input, offset, mask, row0, rows, cols, ld, lanes_log2);
  } else {
    Im2colKernel<T, 1>
        <<<blocks, kBlock, 0, stream>>>(s, input, offset, mask, row0, rows, cols, ld, lanes_log2);
  }
  return cudaGetLastError();
}

template <typename T>
cudaError_t LaunchCol2imCoord(const DcnShape& s, const T* input, const T* offset, const T* mask,
                              const AccumulatorOf<T>* grad_cols, int64_t ld, int64_t row0,
                              int64_t rows, AccumulatorOf<T>* grad_input_acc, T* grad_offset,
                              T* grad_mask, cudaStream_t stream) {
  constexpr int kWide = 16 / sizeof(T);
  const int v = VectorWidth<T>(s), lanes_log2 = SampleLanesLog2(s, v);
  const int64_t blocks = SampleBlocks(rows * s.mask_channels(), lanes_log2);
  auto launch = [&](auto kernel) {
    kernel<<<blocks, kBlock, 0, stream>>>(s, input, offset, mask, grad_cols, ld, row0, rows,
                                          grad_input_acc, grad_offset, grad_mask, lanes_log2);
    return cudaGetLastError();
  };
  const bool scatter = grad_input_acc != nullptr;
  if (v == kWide) {
    return scatter ? launch(Col2imCoordKernel<T, kWide, true>)
                   : launch(Col2imCoordKernel<T, kWide, false>);
  }
  return scatter ? launch(Col2imCoordKernel<T, 1, true>) : launch(Col2imCoordKernel<T, 1, false>);
}

// Deterministic col2im, step 1: one entry per (sample, corner) with its target
// (image pixel, deformable group) as key; corners outside the image get key `absent`.
template <typename T>
__global__ void __launch_bounds__(kBlock)
    ScatterKeysKernel(DcnShape s, const T* offset, int64_t row0, int64_t rows, uint64_t absent,
                      uint64_t* keys, uint32_t* ids) {
  using Acc = AccumulatorOf<T>;
  const int64_t e = int64_t{blockIdx.x} * kBlock + threadIdx.x;
  if (e >= rows * s.mask_channels() * 4) return;
  const int mask_channels = static_cast<int>(s.mask_channels());
  const int sample = static_cast<int>(e / 4), r = sample / mask_channels,
            i = sample % mask_channels;
  const int64_t p = row0 + r;
  const OutputPixel at = LocateOutputPixel(s, p);
  BilinearPoint<Acc> point;
  Acc m;
  MakeSample(s, p, at, i, offset, static_cast<const T*>(nullptr), &point, &m);
  const int pixel = point.pixel[e % 4];
  const int64_t image_pixel = at.n * s.in_h * s.in_w + pixel;
  keys[e] =
      pixel < 0 ? absent : static_cast<uint64_t>(image_pixel) * s.deformable_groups + i / s.taps();
  ids[e] = static_cast<uint32_t>(e);
}

// Deterministic col2im, step 2: a warp per run of equal keys (sorted) sums the run's
// contributions in id order and adds them to its grad_input pixel's group channels.
template <typename T>
__global__ void __launch_bounds__(kBlock)
    ScatterReduceKernel(DcnShape s, const T* offset, const T* mask,
                        const AccumulatorOf<T>* grad_cols, int64_t ld, int64_t row0,
                        int64_t entries, uint64_t absent, const uint64_t* keys, const uint32_t* ids,
                        AccumulatorOf<T>* grad_input_acc) {
  using Acc = AccumulatorOf<T>;
  const int64_t head = (int64_t{blockIdx.x} * kBlock + threadIdx.x) / 32;
  const int lane = threadIdx.x & 31;
  if (head >= entries) return;
  const uint64_t key = keys[head];
  if (key == absent || (head > 0 && keys[head - 1] == key)) return;
  const int64_t d = static_cast<int64_t>(key % s.deformable_groups);
  const int64_t cpd = s.channels_per_deformable_group();
  const int cpg = static_cast<int>(s.in_channels_per_group());
  Acc* target = grad_input_acc + static_cast<int64_t>(key / s.deformable_groups) * s.in_channels;
  for (int64_t c = d * cpd + lane; c < (d + 1) * cpd; c += 32) {
    Acc sum = 0;
    for (int64_t j = head; j < entries && keys[j] == key; ++j) {
      const int e = static_cast<int>(ids[j]), sample = e / 4;
      const int mask_channels = static_cast<int>(s.mask_channels());
      const int r = sample / mask_channels, i = sample % mask_channels;
      const int64_t p = row0 + r;
      BilinearPoint<Acc> point;
      Acc m;
      MakeSample(s, p, LocateOutputPixel(s, p), i, offset, mask, &point, &m);
      sum +=
          point.weight[e % 4] * m * grad_cols[r * ld + ColumnIndex(cpg, s.taps(), i % s.taps(), c)];
    }
    target[c] += sum;
  }
}

// grad_weight_acc (weight layout) += sum over splits of partials[split][group][k][co].
template <typename Acc>
__global__ void WeightSplitsKernel(const Acc* partials, int splits, int groups, int64_t group_k,
                                   int64_t group_cout, Acc* grad_weight_acc) {
  const int64_t idx = int64_t{blockIdx.x} * blockDim.x + threadIdx.x;
  const int64_t per_split = groups * group_k * group_cout;
  if (idx >= per_split) return;
  const int64_t g = idx / (group_k * group_cout), k = idx / group_cout % group_k,
                co = idx % group_cout;
  Acc total = 0;
  for (int sp = 0; sp < splits; ++sp) total += partials[sp * per_split + idx];
  grad_weight_acc[k * groups * group_cout + g * group_cout + co] += total;
}

// --------------------------------------------------------------------------------------------
// Workspaces: one constructor per op lays out its buffers, used both to size and to carve the
// workspace.
// --------------------------------------------------------------------------------------------

template <typename T>
struct ForwardBuffers {
  int64_t ld, chunk;
  T* cols;
  ForwardBuffers(const DcnShape& s, const Options& o, WorkspaceLayout* w)
      : ld(ColumnStride(s)), chunk(ChunkRows<T>(s)), cols(w->Take<T>(chunk * ld)) {}
};

template <typename T>
struct BackwardInputBuffers {
  using Acc = AccumulatorOf<T>;
  int64_t ld, chunk, entries;
  // Sort keys are image pixel * deformable_groups + group; `absent` (corner outside the image)
  // sorts after every real key, and end_bit bounds the bits the radix sort looks at.
  uint64_t absent;
  int end_bit = 1;
  Acc* grad_input_acc = nullptr;  // only when T is not the accumulator type
  Acc* grad_cols;
  uint64_t *keys = nullptr, *sorted_keys = nullptr;
  uint32_t *ids = nullptr, *sorted_ids = nullptr;
  void* sort_temp = nullptr;
  size_t sort_temp_bytes = 0;
  BackwardInputBuffers(const DcnShape& s, const Options& o, WorkspaceLayout* w)
      : ld(ColumnStride(s)),
        chunk(ChunkRows<Acc>(s)),
        entries(chunk * s.mask_channels() * 4),
        absent(static_cast<uint64_t>(s.batch) * s.in_h * s.in_w * s.deformable_groups) {
    while (end_bit < 64 && (absent >> end_bit) != 0) ++end_bit;
    if (!std::is_same_v<T, Acc>) grad_input_acc = w->Take<Acc>(s.input_elements());
    grad_cols = w->Take<Acc>(chunk * ld);
    if (o.deterministic) {
      keys = w->Take<uint64_t>(entries);
      sorted_keys = w->Take<uint64_t>(entries);
      ids = w->Take<uint32_t>(entries);
      sorted_ids = w->Take<uint32_t>(entries);
      cub::DeviceRadixSort::SortPairs(nullptr, sort_temp_bytes, keys, sorted_keys, ids, sorted_ids,
                                      static_cast<int>(entries), 0, end_bit);
      sort_temp = w->Take<char>(static_cast<int64_t>(sort_temp_bytes));
    }
  }
};

template <typename T>
struct BackwardWeightBuffers {
  using Acc = AccumulatorOf<T>;
  int64_t ld, chunk;
  int splits;
  T* cols;
  Acc* partials;
  Acc* grad_weight_acc;
  BiasGradient<T> bias;
  BackwardWeightBuffers(const DcnShape& s, const Options& o, WorkspaceLayout* w)
      : ld(ColumnStride(s)), chunk(ChunkRows<T>(s)), cols(w->Take<T>(chunk * ld)), bias(s, w) {
    // Split the pixel reduction so that the GEMM fills the GPU about twice.
    const int64_t tiles =
        CeilDiv(s.group_columns(), 128) * CeilDiv(s.out_channels_per_group(), 128) * s.groups;
    const int64_t wanted = CeilDiv(2 * int64_t{o.multiprocessors}, tiles);
    splits = static_cast<int>(std::clamp<int64_t>(wanted, 1, std::max<int64_t>(1, chunk / 256)));
    splits = static_cast<int>(std::min<int64_t>(splits, 65535 / s.groups));
    partials = w->Take<Acc>(splits * s.weight_elements());
    grad_weight_acc = w->Take<Acc>(s.weight_elements());
  }
};

template <typename Buffers>
size_t BytesOf(const DcnShape& s, const Options& o) {
  WorkspaceLayout w;
  Buffers buffers(s, o, &w);
  return w.bytes();
}

// The sum of `sum` over the block's eight rows of threads (threadIdx.y) in a fixed order, for
// the threads of row 0.
template <typename Acc>
__device__ Acc SumOverRows(Acc sum) {
  __shared__ Acc sums[8][33];
  sums[threadIdx.y][threadIdx.x] = sum;
  __syncthreads();
  Acc total = 0;
  if (threadIdx.y == 0) {
    for (int y = 0; y < 8; ++y) total += sums[y][threadIdx.x];
  }
  return total;
}

// partials[split][co] = sum of grad_output rows of that split, in a fixed order.
template <typename T>
__global__ void BiasPartialKernel(const T* grad_output, int64_t pixels, int64_t channels,
                                  int64_t rows_per_split, AccumulatorOf<T>* partials) {
  using Acc = AccumulatorOf<T>;
  const int64_t co = int64_t{blockIdx.x} * 32 + threadIdx.x;
  const int64_t begin = int64_t{blockIdx.y} * rows_per_split;
  const int64_t end = min(pixels, begin + rows_per_split);
  Acc sum = 0;
  if (co < channels) {
    for (int64_t p = begin + threadIdx.y; p < end; p += 8)
      sum += static_cast<Acc>(grad_output[p * channels + co]);
  }
  const Acc total = SumOverRows(sum);
  if (threadIdx.y == 0 && co < channels) partials[int64_t{blockIdx.y} * channels + co] = total;
}

// grad_bias[co] = the sum of the splits' partials, in a fixed order: eight threads per channel
// each add every eighth split, then row 0 adds their eight sums (one thread per channel walking
// all the splits took 8.5 us for 128 splits on the H200).
template <typename T>
__global__ void BiasFinishKernel(const AccumulatorOf<T>* partials, int splits, int64_t channels,
                                 T* grad_bias) {
  using Acc = AccumulatorOf<T>;
  const int64_t co = int64_t{blockIdx.x} * 32 + threadIdx.x;
  Acc sum = 0;
  if (co < channels) {
    for (int sp = threadIdx.y; sp < splits; sp += 8) sum += partials[sp * channels + co];
  }
  const Acc total = SumOverRows(sum);
  if (threadIdx.y == 0 && co < channels) grad_bias[co] = FromAcc<T>(total);
}

}  // namespace

template <typename T>
cudaError_t BiasGradient<T>::Run(const DcnShape& s, const T* grad_output, T* grad_bias,
                                 cudaStream_t stream) const {
  BiasPartialKernel<T><<<dim3(CeilDiv(s.out_channels, 32), splits), dim3(32, 8), 0, stream>>>(
      grad_output, s.pixels(), s.out_channels, rows_per_split, partials);
  DCN_RETURN_IF_ERROR(cudaGetLastError());
  BiasFinishKernel<T><<<CeilDiv(s.out_channels, 32), dim3(32, 8), 0, stream>>>(
      partials, splits, s.out_channels, grad_bias);
  return cudaGetLastError();
}

template <typename T>
size_t WorkspaceBytes(Op op, const DcnShape& s, const Options& o) {
  if (s.pixels() == 0) return 0;  // nothing to sample: the gradients are zero
  switch (op) {
    case Op::kForward:
      return BytesOf<ForwardBuffers<T>>(s, o);
    case Op::kBackwardInput:
      return BytesOf<BackwardInputBuffers<T>>(s, o);
    case Op::kBackwardWeight:
      return BytesOf<BackwardWeightBuffers<T>>(s, o);
  }
  return 0;
}

template <typename T>
cudaError_t Forward(const DcnShape& s, const T* input, const T* offset, const T* mask,
                    const T* weight, const T* bias, T* output, void* workspace, const Options& o,
                    cudaStream_t stream) {
  WorkspaceLayout w(workspace);
  ForwardBuffers<T> buffers(s, o, &w);
  const int64_t kg = s.group_columns(), cog = s.out_channels_per_group();
  for (int64_t row0 = 0; row0 < s.pixels(); row0 += buffers.chunk) {
    const int64_t rows = std::min(buffers.chunk, s.pixels() - row0);
    DCN_RETURN_IF_ERROR(
        LaunchIm2col(s, input, offset, mask, row0, rows, buffers.cols, buffers.ld, stream));
    GemmArgs<T, T> g;
    g.m = rows;
    g.n = cog;
    g.k = kg;
    g.a = buffers.cols;
    g.lda = buffers.ld;
    g.a_batch_stride = kg;
    g.b = weight;
    g.ldb = s.out_channels;
    g.b_batch_stride = cog;
    g.c = output + row0 * s.out_channels;
    g.ldc = s.out_channels;
    g.c_batch_stride = cog;
    g.bias = bias;
    g.bias_batch_stride = cog;
    g.batches = s.groups;
    DCN_RETURN_IF_ERROR((LaunchGemm<T, T, Layout::kRowMajor, Layout::kRowMajor>(
        g, GemmMode(o, std::is_same_v<T, float>), stream)));
  }
  return cudaSuccess;
}

template <typename T>
cudaError_t BackwardInput(const DcnShape& s, const T* grad_output, const T* input, const T* offset,
                          const T* mask, const T* weight, T* grad_input, T* grad_offset,
                          T* grad_mask, void* workspace, const Options& o, cudaStream_t stream) {
  using Acc = AccumulatorOf<T>;
  WorkspaceLayout w(workspace);
  BackwardInputBuffers<T> buffers(s, o, &w);
  Acc* grad_input_acc =
      buffers.grad_input_acc ? buffers.grad_input_acc : reinterpret_cast<Acc*>(grad_input);
  DCN_RETURN_IF_ERROR(cudaMemsetAsync(grad_input_acc, 0, s.input_elements() * sizeof(Acc), stream));
  const int64_t kg = s.group_columns(), cog = s.out_channels_per_group();
  for (int64_t row0 = 0; row0 < s.pixels(); row0 += buffers.chunk) {
    const int64_t rows = std::min(buffers.chunk, s.pixels() - row0);
    GemmArgs<T, Acc> g;
    g.m = rows;
    g.n = kg;
    g.k = cog;
    g.a = grad_output + row0 * s.out_channels;
    g.lda = s.out_channels;
    g.a_batch_stride = cog;
    g.b = weight;
    g.ldb = s.out_channels;
    g.b_batch_stride = cog;
    g.c = buffers.grad_cols;
    g.ldc = buffers.ld;
    g.c_batch_stride = kg;
    g.batches = s.groups;
    DCN_RETURN_IF_ERROR((LaunchGemm<T, Acc, Layout::kRowMajor, Layout::kColMajor>(
        g, GemmMode(o, std::is_same_v<T, float>), stream)));

    // Offset and mask gradients; outside determinism mode the atomic col2im in the same pass.
    DCN_RETURN_IF_ERROR(LaunchCol2imCoord(s, input, offset, mask, buffers.grad_cols, buffers.ld,
                                          row0, rows, o.deterministic ? nullptr : grad_input_acc,
                                          grad_offset, grad_mask, stream));
    if (o.deterministic) {
      const int64_t entries = rows * s.mask_channels() * 4;
      ScatterKeysKernel<T><<<CeilDiv(entries, kBlock), kBlock, 0, stream>>>(
          s, offset, row0, rows, buffers.absent, buffers.keys, buffers.ids);
      DCN_RETURN_IF_ERROR(cudaGetLastError());
      size_t temp_bytes = buffers.sort_temp_bytes;
      DCN_RETURN_IF_ERROR(cub::DeviceRadixSort::SortPairs(
          buffers.sort_temp, temp_bytes, buffers.keys, buffers.sorted_keys, buffers.ids,
          buffers.sorted_ids, static_cast<int>(entries), 0, buffers.end_bit, stream));
      ScatterReduceKernel<T><<<CeilDiv(entries * 32, kBlock), kBlock, 0, stream>>>(
          s, offset, mask, buffers.grad_cols, buffers.ld, row0, entries, buffers.absent,
          buffers.sorted_keys, buffers.sorted_ids, grad_input_acc);
      DCN_RETURN_IF_ERROR(cudaGetLastError());
    }
  }
  if (buffers.grad_input_acc)
    return Convert(s.input_elements(), buffers.grad_input_acc, grad_input, stream);
  return cudaSuccess;
}

template <typename T>
cudaError_t BackwardWeight(const DcnShape& s, const T* grad_output, const T* input, const T* offset,
                           const T* mask, T* grad_weight, T* grad_bias, void* workspace,
                           const Options& o, cudaStream_t stream) {
  using Acc = AccumulatorOf<T>;
  if (s.pixels() == 0) {  // an empty batch: zero gradients, no workspace
    DCN_RETURN_IF_ERROR(cudaMemsetAsync(grad_weight, 0, s.weight_elements() * sizeof(T), stream));
    if (grad_bias)
      DCN_RETURN_IF_ERROR(cudaMemsetAsync(grad_bias, 0, s.out_channels * sizeof(T), stream));
    return cudaSuccess;
  }
  WorkspaceLayout w(workspace);
  BackwardWeightBuffers<T> buffers(s, o, &w);
  DCN_RETURN_IF_ERROR(
      cudaMemsetAsync(buffers.grad_weight_acc, 0, s.weight_elements() * sizeof(Acc), stream));
  const int64_t kg = s.group_columns(), cog = s.out_channels_per_group();
  for (int64_t row0 = 0; row0 < s.pixels(); row0 += buffers.chunk) {
    const int64_t rows = std::min(buffers.chunk, s.pixels() - row0);
    DCN_RETURN_IF_ERROR(
        LaunchIm2col(s, input, offset, mask, row0, rows, buffers.cols, buffers.ld, stream));
    const int splits =
        static_cast<int>(std::min<int64_t>(buffers.splits, CeilDiv(rows, kGemmKAlign)));
    GemmArgs<T, Acc> g;
    g.m = kg;
    g.n = cog;
    g.k = rows;
    g.a = buffers.cols;
    g.lda = buffers.ld;
    g.a_batch_stride = kg;
    g.b = grad_output + row0 * s.out_channels;
    g.ldb = s.out_channels;
    g.b_batch_stride = cog;
    g.c = buffers.partials;
    g.ldc = cog;
    g.c_batch_stride = kg * cog;
    g.batches = s.groups;
    g.splits = splits;
    g.k_per_split = RoundUp(CeilDiv(rows, splits), kGemmKAlign);
    g.c_split_stride = s.weight_elements();
    DCN_RETURN_IF_ERROR((LaunchGemm<T, Acc, Layout::kColMajor, Layout::kRowMajor>(
        g, GemmMode(o, std::is_same_v<T, float>), stream)));
    WeightSplitsKernel<Acc><<<CeilDiv(s.weight_elements(), kBlock), kBlock, 0, stream>>>(
        buffers.partials, splits, s.groups, kg, cog, buffers.grad_weight_acc);
    DCN_RETURN_IF_ERROR(cudaGetLastError());
  }
  DCN_RETURN_IF_ERROR(Convert(s.weight_elements(), buffers.grad_weight_acc, grad_weight, stream));
  return grad_bias ? buffers.bias.Run(s, grad_output, grad_bias, stream) : cudaSuccess;
}

#define INSTANTIATE(T)                                                                            \
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
INSTANTIATE(double)
template struct BiasGradient<__half>;
template struct BiasGradient<__nv_bfloat16>;
template struct BiasGradient<float>;
template struct BiasGradient<double>;
#undef INSTANTIATE

}  // namespace im2col
}  // namespace cuda
}  // namespace tensorflow_dcn
