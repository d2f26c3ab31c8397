// See input_scatter.cuh: the host side of the backward input's scatter.
#include "tensorflow_dcn/cc/core/cuda/input_scatter.cuh"

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <algorithm>
#include <type_traits>

#include "tensorflow_dcn/cc/core/workspace.h"

namespace tensorflow_dcn {
namespace cuda {
namespace input_scatter {
namespace {

// offset/mask gradients from the float sums ([sample][3]: m*d/dy, m*d/dx, d/dm).
template <typename T>
__global__ void CoordFinishKernel(int64_t samples, const float* coord, T* grad_offset,
                                  T* grad_mask) {
  const int64_t i = int64_t{blockIdx.x} * blockDim.x + threadIdx.x;
  if (i >= samples) return;
  grad_offset[2 * i] = FromFloat<T>(coord[3 * i]);
  grad_offset[2 * i + 1] = FromFloat<T>(coord[3 * i + 1]);
  if (grad_mask) grad_mask[i] = FromFloat<T>(coord[3 * i + 2]);
}

// The float buffers, for `images` images at a time: grad_input in float for half/bfloat16, the
// coordinate sums.
template <typename T>
struct Buffers {
  float* grad_input_acc = nullptr;  // only when T is not float
  float* coord_acc;
  Buffers(const DcnShape& s, int64_t images, WorkspaceLayout* w) {
    if (!std::is_same_v<T, float>) grad_input_acc = w->Take<float>(images * s.image_elements());
    coord_acc = w->Take<float>(images * s.out_pixels_per_image() * s.mask_channels() * 3);
  }
};

// Passes of images, as few as keep the float buffers within kBuffersBytes (and at least one image
// each), of equal size: the workspace does not grow with the batch, and no pass is left with a
// small tail of images. H200, 8x64x64x128 fp16, with the fused_sm80 epilogue of 2026-11-30: one
// pass took 0.400 ms, two within 16 MiB 0.437, three within 8 MiB 0.463.
constexpr int64_t kBuffersBytes = int64_t{16} << 20;
template <typename T>
int64_t ImagesPerPass(const DcnShape& s) {
  if (s.batch == 0) return 0;
  WorkspaceLayout one_image;
  Buffers<T> buffers(s, 1, &one_image);
  const int64_t most = std::max<int64_t>(1, kBuffersBytes / one_image.bytes());
  return CeilDiv(s.batch, CeilDiv(s.batch, most));
}

}  // namespace

template <typename T>
size_t WorkspaceBytes(const DcnShape& s) {
  WorkspaceLayout w;
  Buffers<T> buffers(s, ImagesPerPass<T>(s), &w);
  return w.bytes();
}

template <typename T>
cudaError_t RunPasses(const DcnShape& s, T* grad_input, T* grad_offset, T* grad_mask,
                      void* workspace, LaunchTiles launch, const void* context,
                      cudaStream_t stream) {
  const int64_t images = ImagesPerPass<T>(s);
  WorkspaceLayout layout(workspace);
  Buffers<T> buffers(s, images, &layout);
  if (std::is_same_v<T, float>) {
    DCN_RETURN_IF_ERROR(cudaMemsetAsync(grad_input, 0, s.input_elements() * sizeof(float), stream));
  }
  const int64_t samples_per_image = s.out_pixels_per_image() * s.mask_channels();
  for (int64_t n_begin = 0; n_begin < s.batch; n_begin += images) {
    const int64_t count = std::min(images, s.batch - n_begin);
    // This pass's part of grad_input and of the buffers.
    T* grad_input_part = grad_input + n_begin * s.image_elements();
    const Pass pass{
        n_begin, n_begin * s.out_pixels_per_image(), (n_begin + count) * s.out_pixels_per_image(),
        buffers.grad_input_acc ? buffers.grad_input_acc : reinterpret_cast<float*>(grad_input_part),
        buffers.coord_acc};
    if (buffers.grad_input_acc) {
      DCN_RETURN_IF_ERROR(cudaMemsetAsync(pass.grad_input_acc, 0,
                                          count * s.image_elements() * sizeof(float), stream));
    }
    const int64_t samples = count * samples_per_image;
    DCN_RETURN_IF_ERROR(cudaMemsetAsync(pass.coord_acc, 0, samples * 3 * sizeof(float), stream));
    DCN_RETURN_IF_ERROR(launch(pass, context));
    if (samples > 0) {
      const int64_t sample0 = n_begin * samples_per_image;
      CoordFinishKernel<T><<<CeilDiv(samples, 256), 256, 0, stream>>>(
          samples, pass.coord_acc, grad_offset + 2 * sample0,
          grad_mask ? grad_mask + sample0 : nullptr);
      DCN_RETURN_IF_ERROR(cudaGetLastError());
    }
    if (buffers.grad_input_acc) {
      DCN_RETURN_IF_ERROR(
          Convert(count * s.image_elements(), buffers.grad_input_acc, grad_input_part, stream));
    }
  }
  return cudaSuccess;
}

#define INSTANTIATE(T)                                                                            \
  template size_t WorkspaceBytes<T>(const DcnShape&);                                             \
  template cudaError_t RunPasses<T>(const DcnShape&, T*, T*, T*, void*, LaunchTiles, const void*, \
                                    cudaStream_t);
INSTANTIATE(__half)
INSTANTIATE(__nv_bfloat16)
INSTANTIATE(float)
#undef INSTANTIATE

}  // namespace input_scatter
}  // namespace cuda
}  // namespace tensorflow_dcn
