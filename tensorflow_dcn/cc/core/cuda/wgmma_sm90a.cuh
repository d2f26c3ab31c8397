// The Hopper implementation of the CUDA core (sm_90a only), with wgmma tensor cores and the TMA
// copy engine: the forward and the backward weight in fp16, bf16, and fp32 as TF32 or, with TF32
// off, as 3xTF32 (each operand a TF32 "big" part plus the TF32 of what it leaves; three products
// per step keep fp32's accuracy); the backward input as well.
//
// The forward and the backward weight are warp-specialised GEMMs whose A operand is gathered:
//   producers (2 warpgroups)  gather the four corner vectors of the bilinear samples of one K
//                             step and blend them into shared memory: the A operand, in one of
//                             wgmma's 128-byte-swizzled layouts; one thread also starts the TMA
//                             copy of the step's B tile;
//   consumers (2 warpgroups)  multiply each step with wgmma.mma_async, 64 rows x 128 columns each.
// Producers and consumers hand stages over with mbarriers (3 stages; 2 with 3xTF32's double
// tiles), so the gather of the next steps overlaps the multiply of this one. Tiles: 128 x 128, or
// 64 x 256 when a group has more than 128 output channels (one gather then serves 256 outputs).
// Blocks run in clusters of two neighbouring tiles of A rows: each copies half of a step's B tile
// and the TMA multicasts it to both, so B crosses from L2 once per two tiles. wgmma reads TF32
// operands K-major only: B is K-major for TF32 and MN-major, where it lies, for fp16/bf16; A is
// K-major but for the fp16/bf16 backward weight (below).
//
// Forward: output pixels x output channels, K = taps x input channels. K steps run over channel
// slabs (128 bytes of channels), and within a slab over the taps: the corners one tap of a slab
// reads are mostly in L1 when its other taps read them. The samples (corner pixels and weights)
// of the tile's pixels and taps are worked out once per deformable group into a table in shared
// memory. B: the weights. fp16/bf16 read them where they lie, MN-major by TMA (wgmma's
// transposed B; copied with padded rows only when Cout is not a multiple of 8); fp32 copies them
// into the workspace as [Cout][K] in that K order as TF32 (with 3xTF32 the small parts follow as
// rows Cout..2 Cout).
//
// Backward weight: rows k = tap x Cin/groups + channel (the weight's rows) x output channels, K
// = output pixels, split over blocks that add their tiles into a float grad_weight with atomics
// (not deterministic). fp16/bf16 store the blended columns MN-major, a row of 64 channels per
// pixel as the forward's A rows (wgmma reads A transposed), so that the corners are read along
// the channels; TF32 stores them K-major, transposed (a row of pixels per channel). B:
// grad_output, read in place by fp16/bf16 (as the forward's weights); fp32 transposes it into the
// workspace one chunk of pixels (at most 8 MiB) at a time.
//
// Backward input: column gradients grad_output x weight^T (output pixels x taps x Cin/groups, K =
// output channels), 128 x 128 tiles whose operands the TMA reads where they lie (both K-major),
// the weights multicast to a cluster of two pixel tiles; input_scatter's epilogue scatters each
// tile (not deterministic). wgmma truncates the TF32 operands, which the TMA copies as they lie;
// 3xTF32 splits each stage in shared memory once it lands.
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

// Whether a kernel here runs op on this problem on this device (can_implement): compute
// capability 9.0, T in {__half, __nv_bfloat16, float}; the backward ops not in deterministic
// mode. The forward and the backward weight: float with TF32 off as 3xTF32, channels per group
// and per deformable group multiples of 128 bytes (64 fp16/bf16 or 32 fp32 channels), the tile's
// shared memory (the forward's sample table, 32 bytes per tile row and tap, included). The
// backward input: those channels multiples of 4, Cout a multiple of 16 bytes, with groups each
// group's output channels a multiple of 128 bytes.
template <typename T>
bool Supported(Op op, const DcnShape& s, const Options& o);

// Whether the sm_90a module loaded on the current device (checked once per device), and the
// driver's tensor-map encoder was found. TFDCN_SIMULATE_SM90A_UNAVAILABLE=1 makes it report
// false, as a failed load would, so that tests can drive the fallback.
bool Available();

template <typename T>
size_t WorkspaceBytes(Op op, const DcnShape& s, const Options& o);

template <typename T>
cudaError_t Forward(const DcnShape& s, const T* input, const T* offset, const T* mask,
                    const T* weight, const T* bias, T* output, void* workspace, const Options& o,
                    cudaStream_t stream);
template <typename T>
cudaError_t BackwardInput(const DcnShape& s, const T* grad_output, const T* input, const T* offset,
                          const T* mask, const T* weight, T* grad_input, T* grad_offset,
                          T* grad_mask, void* workspace, const Options& o, cudaStream_t stream);
template <typename T>
cudaError_t BackwardWeight(const DcnShape& s, const T* grad_output, const T* input, const T* offset,
                           const T* mask, T* grad_weight, T* grad_bias, void* workspace,
                           const Options& o, cudaStream_t stream);

}  // namespace wgmma_sm90a
}  // namespace cuda
}  // namespace tensorflow_dcn

#endif  // TENSORFLOW_DCN_CC_CORE_CUDA_WGMMA_SM90A_CUH_
