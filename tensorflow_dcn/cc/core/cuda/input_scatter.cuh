// The backward input's scatter, shared by the CUDA kernels that compute its column gradients
// (grad_output x weight^T) tile by tile as a GEMM: fused_sm80 on mma.sync, wgmma_sm90a on wgmma.
// A block stages its 128 x 128 tile (output pixels x the group's (tap, channel) columns) in
// shared memory as floats; ScatterTile then adds each column gradient, times its sample's bilinear
// weights and mask, to the sample's four corners in grad_input (float atomics) and sums its
// products with the corners' values into the offset and mask gradients. The host side runs the
// passes over images whose float buffers bound the workspace, and finishes the outputs.
#ifndef TENSORFLOW_DCN_CC_CORE_CUDA_INPUT_SCATTER_CUH_
#define TENSORFLOW_DCN_CC_CORE_CUDA_INPUT_SCATTER_CUH_

#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

#include "tensorflow_dcn/cc/core/bilinear.h"
#include "tensorflow_dcn/cc/core/cuda/device_util.cuh"

namespace tensorflow_dcn {
namespace cuda {
namespace input_scatter {

constexpr int kTileRows = 128, kTileColumns = 128;  // a staged tile
constexpr int kThreads = 256;                       // the threads that scatter it
constexpr int kStagedStride = kTileColumns + 8;  // floats per staged row: conflict-free pair stores
constexpr int kStagedBytes = kTileRows * kStagedStride * static_cast<int>(sizeof(float));

constexpr int kQuad = 4;         // columns per quad
constexpr int kLanesPerRow = 8;  // lanes of a warp on one tile row: 128 bytes of each corner
constexpr int kRowsPerWarp = 32 / kLanesPerRow;
constexpr int kQuadsPerLane = kTileColumns / kQuad / kLanesPerRow;  // quads l, l + 8, .. of lane l
constexpr int kRowsPerStep = kThreads / 32 * kRowsPerWarp;          // rows the block takes per step
static_assert(kQuadsPerLane == 4 && kTileRows % kRowsPerStep == 0, "");

// Whether ScatterTile takes the problem: whole quads of channels per group and deformable group.
inline bool Supported(const DcnShape& s) {
  return s.in_channels_per_group() % kQuad == 0 && s.channels_per_deformable_group() % kQuad == 0;
}

// The four corner quads of a sample (zero outside), `image` at the quad's first channel, loads
// issued together.
template <typename T>
__device__ __forceinline__ void LoadCornerQuads(const int (&pixel)[4], const T* image,
                                                int64_t channels, Vec<T, kQuad> (&raw)[4]) {
#pragma unroll
  for (int k = 0; k < 4; ++k) {
    raw[k] = Vec<T, kQuad>{};
    if (pixel[k] >= 0)
      raw[k] = *reinterpret_cast<const Vec<T, kQuad>*>(image + pixel[k] * channels);
  }
}

// Sums v over the aligned groups of lanes (1, 2, 4 or 8, within a row's 8 lanes) that share
// `key`, the widest such that every group of the warp shares it; returns the group width (its
// first lane holds the sums).
__device__ __forceinline__ int SumOverRowLanes(int key, float (&v)[3]) {
  int width = 1;
#pragma unroll
  for (int delta = 1; delta < kLanesPerRow; delta <<= 1) {
    if (!__all_sync(0xffffffffu, key == __shfl_xor_sync(0xffffffffu, key, delta))) break;
#pragma unroll
    for (int e = 0; e < 3; ++e) v[e] += __shfl_xor_sync(0xffffffffu, v[e], delta);
    width = 2 * delta;
  }
  return width;
}

// Thread `thread` (< kThreads; whole warps) of the block that staged the tile of group `group` at
// output pixel m0 and column n0 (rows of kStagedStride floats at `staged`): the 8 lanes of a row
// group take quads of 4 columns 32 apart (4 quads a lane, so 128 bytes of a corner per row group
// and quad: whole sectors), a warp four rows per step, the rows 32 apart. Per row it scatters
// each quad to its sample's four corners in grad_input (one vector float atomic per corner) and
// sums the offset / mask gradients over the quads and lanes that share the sample; a row's
// position and sample are worked out once for the quads that share them. The row walk carries
// its position (no division per row) and reads the next row's offset and mask a step ahead. The
// pass covers the pixels of images [n_begin, ...) up to p_end; the float buffers hold those
// images only.
template <typename T>
__device__ __forceinline__ void ScatterTile(const DcnShape& s, const float* staged, int thread,
                                            int group, int64_t m0, int64_t n0, const T* input,
                                            const T* offset, const T* mask, float* grad_input_acc,
                                            float* coord_acc, int64_t n_begin, int64_t p_end) {
  const int64_t kg = s.group_columns();
  // Lane 8 g + l of warp w walks rows 4 w + g, 32 apart, with quads l, l + 8, l + 16, l + 24
  // of each (columns 4 l + 32 m): per quad its first input channel and sample index. The 8
  // lanes of a row cover 128 bytes of every corner a quad scatters to (whole sectors).
  const int lane = thread % 32;
  const int row_lane = lane % kLanesPerRow;
  const int cpg = static_cast<int>(s.in_channels_per_group());
  const int cpd = static_cast<int>(s.channels_per_deformable_group());
  int quad_c[kQuadsPerLane], quad_i[kQuadsPerLane];  // input channel, sample; -1: past the tile
#pragma unroll
  for (int m = 0; m < kQuadsPerLane; ++m) {
    const int64_t column = n0 + kQuad * (row_lane + kLanesPerRow * m);
    const int t = static_cast<int>(column / cpg);
    quad_c[m] = group * cpg + static_cast<int>(column % cpg);
    quad_i[m] = column < kg ? quad_c[m] / cpd * s.taps() + t : -1;
  }
  // The tap's part of a sample position (the rest in 32 bits: CheckProblem keeps positions
  // below 2^24), once per quad's sample rather than per row where it can.
  auto tap_part = [&](int i, int* tap_y, int* tap_x) {
    const int t = i % s.taps();
    *tap_y = t / s.kernel_w * s.dilation_h - s.pad_h;
    *tap_x = t % s.kernel_w * s.dilation_w - s.pad_w;
  };
  int tap_y0 = 0, tap_x0 = 0;
  if (quad_i[0] >= 0) tap_part(quad_i[0], &tap_y0, &tap_x0);
  // Runs of quads that take one sample: whether quad m + 1 takes quad m's sample in every lane of
  // the warp (32 or more channels per group: at 64, two runs of two quads). Uniform over the
  // warp, so the reductions' shuffles stay converged. A row works out a run's position once and
  // reduces its sums over the row's lanes once.
  bool same_as_next[kQuadsPerLane - 1];
  // One run over every quad of the warp (one tap and deformable group over the tile's columns,
  // as with 128 or more channels per group): its own path below, without the run walk.
  bool one_sample = __all_sync(0xffffffffu, quad_i[0] >= 0);
#pragma unroll
  for (int m = 0; m + 1 < kQuadsPerLane; ++m) {
    same_as_next[m] = __all_sync(0xffffffffu, quad_i[m + 1] == quad_i[m]);
    one_sample &= same_as_next[m];
  }
  const int mask_channels = static_cast<int>(s.mask_channels());
  const int out_h = static_cast<int>(s.out_h), out_w = static_cast<int>(s.out_w);

  const int first_row = thread / 32 * kRowsPerWarp + lane / kLanesPerRow;
  int64_t p = m0 + first_row;
  OutputPixel at = LocateOutputPixel(s, p);
  // Pointers that the row walk advances: the row's image and float gradient, its offsets and
  // masks, its offset/mask sums.
  const T* image = input + at.n * s.image_elements();
  float* grad_image = grad_input_acc + (at.n - n_begin) * s.image_elements();
  const T* offset_row = offset + p * s.offset_channels();
  const T* mask_row = mask ? mask + p * mask_channels : nullptr;
  float* coord = coord_acc + (p - n_begin * s.out_pixels_per_image()) * mask_channels * 3;
  auto read_offset = [&](int64_t rows_on, int i) {
    const int64_t at_row = rows_on * kRowsPerStep;
    return SampleOffset<float>{
        static_cast<float>(offset_row[at_row * s.offset_channels() + 2 * i]),
        static_cast<float>(offset_row[at_row * s.offset_channels() + 2 * i + 1]),
        mask_row ? static_cast<float>(mask_row[at_row * mask_channels + i]) : 1.f};
  };
  // Adds quad m's column gradients at the sample `point` to grad_input, and its parts of the
  // sample's offset/mask sums (d/dy, d/dx without the mask, the value) to `sums`.
  auto add_quad = [&](int m, int r_row, const BilinearPoint<float>& point, float mask_value,
                      float(&sums)[3]) {
    Vec<T, kQuad> raw[4];
    LoadCornerQuads(point.pixel, image + quad_c[m], s.in_channels, raw);
    const float4 q = *reinterpret_cast<const float4*>(staged + r_row * kStagedStride +
                                                      kQuad * (row_lane + kLanesPerRow * m));
    const float gc[kQuad] = {q.x, q.y, q.z, q.w};
#pragma unroll
    for (int e = 0; e < kQuad; ++e) {
      float v[4], dy, dx;
#pragma unroll
      for (int k = 0; k < 4; ++k) v[k] = static_cast<float>(raw[k].e[e]);
      BilinearCoordinateGrad(point, v, &dy, &dx);
      sums[0] += gc[e] * dy;
      sums[1] += gc[e] * dx;
      sums[2] += gc[e] * BilinearValue(point, v);
    }
#pragma unroll
    for (int k = 0; k < 4; ++k) {
      if (point.pixel[k] < 0) continue;
      ScatterAdd<kQuad>(grad_image + quad_c[m] + point.pixel[k] * s.in_channels,
                        point.weight[k] * mask_value, gc);
    }
  };
  // Sums `sums` of sample i (-1: none) over the row's lanes that share it; one lane per group
  // adds them, times the mask where the chain rule has it, to the sample's offset/mask sums.
  auto flush = [&](int r_row, int i, float mask_value, float(&sums)[3]) {
    const int width = SumOverRowLanes(i >= 0 ? r_row * mask_channels + i : -1, sums);
    if (i >= 0 && (row_lane & (width - 1)) == 0) {
      float* to = coord + i * 3;
      atomicAdd(to, mask_value * sums[0]);
      atomicAdd(to + 1, mask_value * sums[1]);
      atomicAdd(to + 2, sums[2]);
    }
  };
  // Quad 0's sample of the row, read a step ahead.
  SampleOffset<float> next{};
  if (quad_i[0] >= 0 && p < p_end) next = read_offset(0, quad_i[0]);
  // Every lane takes the same number of steps, a constant, so that the compiler sees the
  // shuffles and votes below converged (nvcc wraps them in convergence code otherwise).
  constexpr int kSteps = kTileRows / kRowsPerStep;
  for (int step = 0; step < kSteps; ++step, p += kRowsPerStep) {
    const int r = first_row + step * kRowsPerStep;
    const bool row_active = p < p_end;
    const SampleOffset<float> first = next;
    if (quad_i[0] >= 0 && p + kRowsPerStep < p_end && step + 1 < kSteps) {
      next = read_offset(1, quad_i[0]);
    }
    if (one_sample) {
      float sums[3] = {};
      if (row_active) {
        BilinearPoint<float> point;
        MakeBilinearPoint(static_cast<float>(at.oy * s.stride_h + tap_y0) + first.dy,
                          static_cast<float>(at.ox * s.stride_w + tap_x0) + first.dx, s.in_h,
                          s.in_w, &point);
#pragma unroll
        for (int m = 0; m < kQuadsPerLane; ++m) add_quad(m, r, point, first.m, sums);
      }
      flush(r, row_active ? quad_i[0] : -1, first.m, sums);
    } else {
      float sums[3] = {};
      SampleOffset<float> o{};
      BilinearPoint<float> point{};
#pragma unroll
      for (int m = 0; m < kQuadsPerLane; ++m) {
        const int i = row_active ? quad_i[m] : -1;
        if ((m == 0 || !same_as_next[m - 1]) && i >= 0) {  // a run's first quad: its sample
          int tap_y = tap_y0, tap_x = tap_x0;
          if (i != quad_i[0]) tap_part(i, &tap_y, &tap_x);
          o = i == quad_i[0] ? first : read_offset(0, i);
          MakeBilinearPoint(static_cast<float>(at.oy * s.stride_h + tap_y) + o.dy,
                            static_cast<float>(at.ox * s.stride_w + tap_x) + o.dx, s.in_h, s.in_w,
                            &point);
        }
        if (i >= 0) add_quad(m, r, point, o.m, sums);
        if (m + 1 == kQuadsPerLane || !same_as_next[m]) {  // a run's last quad: its sums
          flush(r, i, o.m, sums);
          sums[0] = sums[1] = sums[2] = 0.f;
        }
      }
    }
    // The next row's position and pointers, kRowsPerStep output pixels on.
    offset_row += kRowsPerStep * s.offset_channels();
    if (mask_row) mask_row += kRowsPerStep * mask_channels;
    coord += kRowsPerStep * mask_channels * 3;
    at.ox += kRowsPerStep;
    while (at.ox >= out_w) {
      at.ox -= out_w;
      if (++at.oy == out_h) {
        at.oy = 0;
        ++at.n;
        image += s.image_elements();
        grad_image += s.image_elements();
      }
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Host side.
// ---------------------------------------------------------------------------------------------

// One pass: images [n_begin, ...), their output pixels [p_begin, p_end), and the float buffers
// the tiles scatter into (zeroed): grad_input of those images, their offset/mask sums.
struct Pass {
  int64_t n_begin, p_begin, p_end;
  float* grad_input_acc;
  float* coord_acc;
};
using LaunchTiles = cudaError_t (*)(const Pass& pass, const void* context);

template <typename T>
size_t WorkspaceBytes(const DcnShape& s);

// The backward input in passes: zeroes each pass's buffers, calls launch(pass, context) to run
// its tiles, then writes the pass's grad_offset / grad_mask and, for half/bfloat16, grad_input.
template <typename T>
cudaError_t RunPasses(const DcnShape& s, T* grad_input, T* grad_offset, T* grad_mask,
                      void* workspace, LaunchTiles launch, const void* context,
                      cudaStream_t stream);

// The same with any callable launch(const Pass&).
template <typename T, typename Launch>
cudaError_t RunPasses(const DcnShape& s, T* grad_input, T* grad_offset, T* grad_mask,
                      void* workspace, const Launch& launch, cudaStream_t stream) {
  return RunPasses<T>(
      s, grad_input, grad_offset, grad_mask, workspace,
      [](const Pass& pass, const void* context) {
        return (*static_cast<const Launch*>(context))(pass);
      },
      &launch, stream);
}

}  // namespace input_scatter
}  // namespace cuda
}  // namespace tensorflow_dcn

#endif  // TENSORFLOW_DCN_CC_CORE_CUDA_INPUT_SCATTER_CUH_
