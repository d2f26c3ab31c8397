// The im2col implementation on the CPU: deformable im2col over blocks of output pixels, Eigen
// GEMMs per group, col2im by channel blocks. The simple CPU path, kept as the oracle the faster
// kernels are tested against.
#include "tensorflow_dcn/cc/core/cpu/cpu_im2col.h"

#include <algorithm>
#include <type_traits>
#include <vector>

#include "Eigen/Core"
#include "tensorflow_dcn/cc/core/bilinear.h"
#include "tensorflow_dcn/cc/core/workspace.h"

namespace tensorflow_dcn {
namespace cpu {
namespace im2col {
namespace {

template <typename Acc>
using Matrix = Eigen::Matrix<Acc, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
template <typename Acc>
using ConstMatrixMap = Eigen::Map<const Matrix<Acc>, Eigen::Unaligned, Eigen::OuterStride<>>;
template <typename Acc>
using MatrixMap = Eigen::Map<Matrix<Acc>, Eigen::Unaligned, Eigen::OuterStride<>>;

// Column buffers are processed in chunks of at most this many bytes (bounded extra memory).
constexpr int64_t kChunkBytes = int64_t{64} << 20;

// Pixels per work block: enough rows for an efficient GEMM, few enough to stay in cache.
int64_t BlockPixels(const DcnShape& s) {
  return std::clamp<int64_t>((int64_t{1} << 18) / std::max<int64_t>(s.columns(), 1), 16, 1024);
}

// Pixels per chunk of a chunk-sized column buffer of Acc.
template <typename Acc>
int64_t ChunkPixels(const DcnShape& s) {
  return std::max<int64_t>(1, kChunkBytes / static_cast<int64_t>(sizeof(Acc) * s.columns()));
}

// Visits the samples of output pixel p: fn(deformable group, tap, point, mask value).
template <typename Acc, typename T, typename Fn>
void ForEachSample(const DcnShape& s, int64_t p, const T* offset, const T* mask, Fn&& fn) {
  const OutputPixel at = LocateOutputPixel(s, p);
  for (int d = 0; d < s.deformable_groups; ++d) {
    for (int t = 0; t < s.taps(); ++t) {
      BilinearPoint<Acc> point;
      Acc m;
      MakeSample(s, p, at, d * s.taps() + t, offset, mask, &point, &m);
      fn(d, t, point, m);
    }
  }
}

// Fills rows [0, end - begin) of `cols` (row stride s.columns()) with the masked samples of output
// pixels [begin, end).
template <typename T, typename Acc>
void Im2col(const DcnShape& s, const T* input, const T* offset, const T* mask, int64_t begin,
            int64_t end, Acc* cols) {
  const int64_t cpd = s.channels_per_deformable_group();
  const int cpg = static_cast<int>(s.in_channels_per_group());
  for (int64_t p = begin; p < end; ++p) {
    const T* image = input + (p / s.out_pixels_per_image()) * s.image_elements();
    Acc* row = cols + (p - begin) * s.columns();
    ForEachSample<Acc>(s, p, offset, mask,
                       [&](int d, int t, const BilinearPoint<Acc>& point, Acc m) {
                         for (int64_t c = d * cpd; c < (d + 1) * cpd; ++c) {
                           row[ColumnIndex(cpg, s.taps(), t, c)] =
                               m * BilinearSample(point, image, s.in_channels, c);
                         }
                       });
  }
}

// Copies n elements to the accumulation type (a no-op view when they already are).
template <typename Acc, typename T>
const Acc* AsAcc(const T* src, int64_t n, std::vector<Acc>* storage) {
  if constexpr (std::is_same_v<T, Acc>) {
    return src;
  } else {
    storage->resize(n);
    for (int64_t i = 0; i < n; ++i) (*storage)[i] = static_cast<Acc>(src[i]);
    return storage->data();
  }
}

// The workspace of each op, laid out by one function per op for sizing and for running.
template <typename T>
struct BackwardInputBuffers {
  using Acc = AccumulatorOf<T>;
  int64_t chunk, block;
  Acc* grad_input_acc = nullptr;  // only when T is not Acc
  Acc* grad_cols;
  BackwardInputBuffers(const DcnShape& s, WorkspaceLayout* w)
      : chunk(std::min(ChunkPixels<Acc>(s), std::max<int64_t>(s.pixels(), 1))),
        block(std::min(BlockPixels(s), chunk)) {
    if (!std::is_same_v<T, Acc>) grad_input_acc = w->Take<Acc>(s.input_elements());
    grad_cols = w->Take<Acc>(chunk * s.columns());
  }
};

template <typename T>
struct BackwardWeightBuffers {
  using Acc = AccumulatorOf<T>;
  int64_t chunk, block;
  Acc* grad_weight_acc = nullptr;  // only when T is not Acc
  Acc* cols;
  Acc* grad_out = nullptr;  // grad_output rows converted to Acc, only when T is not Acc
  BackwardWeightBuffers(const DcnShape& s, WorkspaceLayout* w)
      : chunk(std::min(ChunkPixels<Acc>(s), std::max<int64_t>(s.pixels(), 1))),
        block(std::min(BlockPixels(s), chunk)) {
    if (!std::is_same_v<T, Acc>) {
      grad_weight_acc = w->Take<Acc>(s.weight_elements());
      grad_out = w->Take<Acc>(chunk * s.out_channels);
    }
    cols = w->Take<Acc>(chunk * s.columns());
  }
};

template <typename Buffers>
size_t BytesOf(const DcnShape& s) {
  WorkspaceLayout w;
  Buffers buffers(s, &w);
  return w.bytes();
}

}  // namespace

template <typename T>
size_t WorkspaceBytes(Op op, const DcnShape& s) {
  switch (op) {
    case Op::kForward:
      return 0;
    case Op::kBackwardInput:
      return BytesOf<BackwardInputBuffers<T>>(s);
    case Op::kBackwardWeight:
      return BytesOf<BackwardWeightBuffers<T>>(s);
  }
  return 0;
}

template <typename T>
void Forward(const DcnShape& s, const T* input, const T* offset, const T* mask, const T* weight,
             const T* bias, T* output, const ParallelFor& parallel_for) {
  using Acc = AccumulatorOf<T>;
  std::vector<Acc> weight_storage, bias_storage;
  const Acc* w = AsAcc<Acc>(weight, s.weight_elements(), &weight_storage);
  const Acc* b = bias ? AsAcc<Acc>(bias, s.out_channels, &bias_storage) : nullptr;
  const int64_t kg = s.group_columns(), cog = s.out_channels_per_group();
  const int64_t block = BlockPixels(s);
  const int64_t blocks = (s.pixels() + block - 1) / block;

  parallel_for(blocks, block * s.columns() * cog * 2, [&](int64_t first, int64_t last) {
    Matrix<Acc> cols(block, s.columns()), out(block, s.out_channels);
    for (int64_t blk = first; blk < last; ++blk) {
      const int64_t begin = blk * block, rows = std::min(block, s.pixels() - begin);
      Im2col(s, input, offset, mask, begin, begin + rows, cols.data());
      for (int g = 0; g < s.groups; ++g) {
        ConstMatrixMap<Acc> a(cols.data() + g * kg, rows, kg, Eigen::OuterStride<>(s.columns()));
        ConstMatrixMap<Acc> wg(w + g * cog, kg, cog, Eigen::OuterStride<>(s.out_channels));
        out.block(0, g * cog, rows, cog).noalias() = a * wg;
      }
      for (int64_t r = 0; r < rows; ++r) {
        T* o = output + (begin + r) * s.out_channels;
        for (int64_t co = 0; co < s.out_channels; ++co) {
          o[co] = static_cast<T>(out(r, co) + (b ? b[co] : Acc(0)));
        }
      }
    }
  });
}

template <typename T>
void BackwardInput(const DcnShape& s, const T* grad_output, const T* input, const T* offset,
                   const T* mask, const T* weight, T* grad_input, T* grad_offset, T* grad_mask,
                   void* workspace, const ParallelFor& parallel_for) {
  using Acc = AccumulatorOf<T>;
  WorkspaceLayout layout(workspace);
  BackwardInputBuffers<T> buffers(s, &layout);
  std::vector<Acc> weight_storage;
  const Acc* w = AsAcc<Acc>(weight, s.weight_elements(), &weight_storage);

  // grad_input accumulates in Acc: in place for float/double, in the workspace otherwise.
  Acc* grad_input_acc;
  if constexpr (std::is_same_v<T, Acc>) {
    grad_input_acc = grad_input;
  } else {
    grad_input_acc = buffers.grad_input_acc;
  }
  std::fill(grad_input_acc, grad_input_acc + s.input_elements(), Acc(0));

  const int64_t kg = s.group_columns(), cog = s.out_channels_per_group();
  const int64_t cpd = s.channels_per_deformable_group();
  const int cpg = static_cast<int>(s.in_channels_per_group());
  const int64_t chunk = buffers.chunk, block = buffers.block;
  Acc* grad_cols = buffers.grad_cols;

  for (int64_t chunk_begin = 0; chunk_begin < s.pixels(); chunk_begin += chunk) {
    const int64_t chunk_rows = std::min(chunk, s.pixels() - chunk_begin);
    const int64_t blocks = (chunk_rows + block - 1) / block;
    // Column gradients, then offset and mask gradients, per block of pixels. The column
    // gradients are left multiplied by the mask for the scatter below.
    parallel_for(blocks, block * s.columns() * cog * 2, [&](int64_t first, int64_t last) {
      std::vector<Acc> grad_out_storage;
      for (int64_t blk = first; blk < last; ++blk) {
        const int64_t begin = chunk_begin + blk * block;
        const int64_t rows = std::min(block, chunk_begin + chunk_rows - begin);
        const Acc* go = AsAcc<Acc>(grad_output + begin * s.out_channels, rows * s.out_channels,
                                   &grad_out_storage);
        Acc* gc = grad_cols + (begin - chunk_begin) * s.columns();
        for (int g = 0; g < s.groups; ++g) {
          ConstMatrixMap<Acc> gog(go + g * cog, rows, cog, Eigen::OuterStride<>(s.out_channels));
          ConstMatrixMap<Acc> wg(w + g * cog, kg, cog, Eigen::OuterStride<>(s.out_channels));
          MatrixMap<Acc>(gc + g * kg, rows, kg, Eigen::OuterStride<>(s.columns())).noalias() =
              gog * wg.transpose();
        }
        for (int64_t p = begin; p < begin + rows; ++p) {
          const T* image = input + (p / s.out_pixels_per_image()) * s.image_elements();
          Acc* row = gc + (p - begin) * s.columns();
          T* goff = grad_offset + p * s.offset_channels();
          T* gmask = grad_mask ? grad_mask + p * s.mask_channels() : nullptr;
          ForEachSample<Acc>(s, p, offset, mask,
                             [&](int d, int t, const BilinearPoint<Acc>& point, Acc m) {
                               Acc sum_value = 0, sum_dy = 0, sum_dx = 0;
                               for (int64_t c = d * cpd; c < (d + 1) * cpd; ++c) {
                                 Acc& g = row[ColumnIndex(cpg, s.taps(), t, c)];
                                 Acc v[4], dy, dx;
                                 LoadCorners(point, image, s.in_channels, c, v);
                                 BilinearCoordinateGrad(point, v, &dy, &dx);
                                 sum_value += g * BilinearValue(point, v);
                                 sum_dy += g * dy;
                                 sum_dx += g * dx;
                                 g *= m;
                               }
                               const int64_t i = int64_t{d} * s.taps() + t;
                               goff[2 * i] = static_cast<T>(m * sum_dy);
                               goff[2 * i + 1] = static_cast<T>(m * sum_dx);
                               if (gmask) gmask[i] = static_cast<T>(sum_value);
                             });
        }
      }
    });
    // Scatter into grad_input, parallel over channel blocks so that no two threads write the
    // same element.
    const int64_t channel_block = std::max<int64_t>(1, std::min<int64_t>(cpd, 16));
    const int64_t channel_blocks = (s.in_channels + channel_block - 1) / channel_block;
    parallel_for(
        channel_blocks, chunk_rows * s.taps() * channel_block * 8,
        [&](int64_t first, int64_t last) {
          const int64_t c_begin = first * channel_block;
          const int64_t c_end = std::min(s.in_channels, last * channel_block);
          for (int64_t p = chunk_begin; p < chunk_begin + chunk_rows; ++p) {
            Acc* image = grad_input_acc + (p / s.out_pixels_per_image()) * s.image_elements();
            const Acc* row = grad_cols + (p - chunk_begin) * s.columns();
            ForEachSample<Acc>(
                s, p, offset, mask, [&](int d, int t, const BilinearPoint<Acc>& point, Acc) {
                  const int64_t lo = std::max(c_begin, d * cpd),
                                hi = std::min(c_end, (d + 1) * cpd);
                  for (int k = 0; k < 4; ++k) {
                    if (point.pixel[k] < 0) continue;
                    Acc* dst = image + point.pixel[k] * s.in_channels;
                    for (int64_t c = lo; c < hi; ++c) {
                      dst[c] += point.weight[k] * row[ColumnIndex(cpg, s.taps(), t, c)];
                    }
                  }
                });
          }
        });
  }
  if constexpr (!std::is_same_v<T, Acc>) {
    for (int64_t i = 0; i < s.input_elements(); ++i) {
      grad_input[i] = static_cast<T>(grad_input_acc[i]);
    }
  }
}

template <typename T>
void BackwardWeight(const DcnShape& s, const T* grad_output, const T* input, const T* offset,
                    const T* mask, T* grad_weight, T* grad_bias, void* workspace,
                    const ParallelFor& parallel_for) {
  using Acc = AccumulatorOf<T>;
  WorkspaceLayout layout(workspace);
  BackwardWeightBuffers<T> buffers(s, &layout);
  const int64_t kg = s.group_columns(), cog = s.out_channels_per_group();

  Acc* grad_weight_acc;
  if constexpr (std::is_same_v<T, Acc>) {
    grad_weight_acc = grad_weight;
  } else {
    grad_weight_acc = buffers.grad_weight_acc;
  }
  std::fill(grad_weight_acc, grad_weight_acc + s.weight_elements(), Acc(0));

  const int64_t chunk = buffers.chunk, block = buffers.block;
  Acc* cols = buffers.cols;
  // Rows of one group's weight gradient per work unit.
  const int64_t row_block = std::max<int64_t>(1, std::min<int64_t>(kg, 64));
  const int64_t row_blocks = (kg + row_block - 1) / row_block;

  for (int64_t chunk_begin = 0; chunk_begin < s.pixels(); chunk_begin += chunk) {
    const int64_t chunk_rows = std::min(chunk, s.pixels() - chunk_begin);
    const int64_t blocks = (chunk_rows + block - 1) / block;
    parallel_for(blocks, block * s.columns() * 16, [&](int64_t first, int64_t last) {
      for (int64_t blk = first; blk < last; ++blk) {
        const int64_t begin = chunk_begin + blk * block;
        const int64_t end = std::min(begin + block, chunk_begin + chunk_rows);
        Im2col(s, input, offset, mask, begin, end, cols + (begin - chunk_begin) * s.columns());
      }
    });
    const Acc* go;
    if constexpr (std::is_same_v<T, Acc>) {
      go = grad_output + chunk_begin * s.out_channels;
    } else {
      const T* src = grad_output + chunk_begin * s.out_channels;
      for (int64_t i = 0; i < chunk_rows * s.out_channels; ++i) {
        buffers.grad_out[i] = static_cast<Acc>(src[i]);
      }
      go = buffers.grad_out;
    }
    parallel_for(s.groups * row_blocks, chunk_rows * row_block * cog * 2,
                 [&](int64_t first, int64_t last) {
                   for (int64_t unit = first; unit < last; ++unit) {
                     const int64_t g = unit / row_blocks, r0 = unit % row_blocks * row_block;
                     const int64_t rows = std::min(row_block, kg - r0);
                     ConstMatrixMap<Acc> a(cols + g * kg + r0, chunk_rows, rows,
                                           Eigen::OuterStride<>(s.columns()));
                     ConstMatrixMap<Acc> gog(go + g * cog, chunk_rows, cog,
                                             Eigen::OuterStride<>(s.out_channels));
                     MatrixMap<Acc>(grad_weight_acc + r0 * s.out_channels + g * cog, rows, cog,
                                    Eigen::OuterStride<>(s.out_channels))
                         .noalias() += a.transpose() * gog;
                   }
                 });
  }
  if constexpr (!std::is_same_v<T, Acc>) {
    for (int64_t i = 0; i < s.weight_elements(); ++i) {
      grad_weight[i] = static_cast<T>(grad_weight_acc[i]);
    }
  }
  if (grad_bias) {
    parallel_for(s.out_channels, s.pixels() * 2, [&](int64_t first, int64_t last) {
      for (int64_t co = first; co < last; ++co) {
        Acc sum = 0;
        for (int64_t p = 0; p < s.pixels(); ++p) {
          sum += static_cast<Acc>(grad_output[p * s.out_channels + co]);
        }
        grad_bias[co] = static_cast<T>(sum);
      }
    });
  }
}

#define INSTANTIATE(T)                                                                             \
  template size_t WorkspaceBytes<T>(Op, const DcnShape&);                                          \
  template void Forward<T>(const DcnShape&, const T*, const T*, const T*, const T*, const T*, T*,  \
                           const ParallelFor&);                                                    \
  template void BackwardInput<T>(const DcnShape&, const T*, const T*, const T*, const T*,          \
                                 const T*, T*, T*, T*, void*, const ParallelFor&);                 \
  template void BackwardWeight<T>(const DcnShape&, const T*, const T*, const T*, const T*, T*, T*, \
                                  void*, const ParallelFor&);
INSTANTIATE(Eigen::half)
INSTANTIATE(Eigen::bfloat16)
INSTANTIATE(float)
INSTANTIATE(double)
#undef INSTANTIATE

}  // namespace im2col
}  // namespace cpu
}  // namespace tensorflow_dcn
