// The Hopper implementation of the CUDA core's forward (sm_90a only): fp16, bf16, and fp32 as
// TF32, with wgmma tensor cores and the TMA copy engine.
//
// One block computes a tile of output pixels x output channels of one group, warp-specialised:
//   producers (2 warpgroups)  gather the four corner vectors of each pixel's bilinear sample of
//                             one K step (one tap, 128 bytes of channels) and blend them into
//                             shared memory: the A operand, in wgmma's 128-byte-swizzled K-major
//                             layout; one thread also starts the TMA copy of the step's weights;
//   consumers (2 warpgroups)  multiply each step with wgmma.mma_async, 64 rows x 128 columns each.
// Producers and consumers hand stages over with mbarriers (3 stages), so the gather of the next
// steps overlaps the multiply of this one. Tiles: 128 pixels x 128 channels, or 64 x 256 when a
// group has more than 128 output channels (one gather then serves 256 outputs). Blocks run in
// clusters of two neighbouring pixel tiles: each copies half of a step's weights and the TMA
// multicasts it to both, so the weights cross from L2 once per two tiles.
//
// K steps run over channel slabs (128 bytes of channels), and within a slab over the taps: the
// corners one tap of a slab reads are mostly in L1 when its other taps read them. The samples
// (corner pixels and weights) of the tile's pixels and taps are worked out once per deformable
// group into a table in shared memory.
//
// The weights are first copied into the workspace as [Cout][K] in that K order (K-major, and
// rounded to TF32 for fp32): wgmma reads TF32 operands K-major only, and one layout then serves
// every dtype; the TMA reads its tiles from there.
//
// The file is built for sm_90a alone: its module loads only on compute capability 9.0 with a
// driver that runs sm_90a code. Available() checks that once per device; the planner falls back
// to the portable kernels where it does not.
#ifndef TENSORFLOW_DCN_CC_CORE_CUDA_WGMMA_SM90A_CUH_
#define TENSORFLOW_DCN_CC_CORE_CUDA_WGMMA_SM90A_CUH_

#include <cuda_runtime.h>

#include <cstddef>

#include "tensorflow_dcn/cc/core/cuda/cuda_core.h"

namespace tensorflow_dcn {
namespace cuda {
namespace wgmma_sm90a {

// Whether the kernel runs this problem on this device (can_implement): compute capability 9.0,
// T in {__half, __nv_bfloat16, float}, float only with TF32 allowed, channels per group and per
// deformable group multiples of 128 bytes (64 fp16/bf16 or 32 fp32 channels), and the sample
// table (32 bytes per tile row and tap) fits in shared memory next to the stages.
template <typename T>
bool Supported(const DcnShape& s, const Options& o);

// Whether the sm_90a module loaded on the current device (checked once per device), and the
// driver's tensor-map encoder was found. TFDCN_SIMULATE_SM90A_UNAVAILABLE=1 makes it report
// false, as a failed load would, so that tests can drive the fallback.
bool Available();

template <typename T>
size_t WorkspaceBytes(const DcnShape& s);

template <typename T>
cudaError_t Forward(const DcnShape& s, const T* input, const T* offset, const T* mask,
                    const T* weight, const T* bias, T* output, void* workspace, const Options& o,
                    cudaStream_t stream);

}  // namespace wgmma_sm90a
}  // namespace cuda
}  // namespace tensorflow_dcn

#endif  // TENSORFLOW_DCN_CC_CORE_CUDA_WGMMA_SM90A_CUH_
