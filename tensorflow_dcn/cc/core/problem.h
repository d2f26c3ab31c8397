// One DCNv2 problem, free of any framework: its attributes, its operands' dimensions, the check
// that says whether it can run (and why not), and the geometry every kernel works from. The
// TensorFlow kernels, the shape functions, the XLA lowerings and the standalone CUDA harness all
// describe and check a problem through this header.
//
// Layouts (NHWC everywhere):
//   input   [N, H, W, Cin]
//   offset  [N, Ho, Wo, dg, taps, 2]    (dy, dx) per deformable group and tap, taps row-major
//   mask    [N, Ho, Wo, dg, taps]
//   weight  [kh, kw, Cin/groups, Cout]  (Keras Conv2D)
//   output  [N, Ho, Wo, Cout]
// Column matrices ("im2col") are [pixels, groups, taps, Cin/groups]: one group's block of a row
// is contiguous and multiplies weight rows (tap, ci) of that group.
#ifndef TENSORFLOW_DCN_CC_CORE_PROBLEM_H_
#define TENSORFLOW_DCN_CC_CORE_PROBLEM_H_

#include <cstdint>
#include <string>
#include <type_traits>

#if defined(__CUDACC__)
#define DCN_HOST_DEVICE __host__ __device__ __forceinline__
#else
#define DCN_HOST_DEVICE inline
#endif

namespace tensorflow_dcn {

struct DcnShape {
  int64_t batch = 0, in_h = 0, in_w = 0, in_channels = 0;
  int64_t out_h = 0, out_w = 0, out_channels = 0;
  int kernel_h = 1, kernel_w = 1;
  int stride_h = 1, stride_w = 1;
  int pad_h = 0, pad_w = 0;
  int dilation_h = 1, dilation_w = 1;
  int groups = 1, deformable_groups = 1;
  bool has_mask = true, has_bias = true;

  DCN_HOST_DEVICE int taps() const { return kernel_h * kernel_w; }
  DCN_HOST_DEVICE int64_t in_channels_per_group() const { return in_channels / groups; }
  DCN_HOST_DEVICE int64_t out_channels_per_group() const { return out_channels / groups; }
  DCN_HOST_DEVICE int64_t channels_per_deformable_group() const {
    return in_channels / deformable_groups;
  }
  DCN_HOST_DEVICE int64_t out_pixels_per_image() const { return out_h * out_w; }
  DCN_HOST_DEVICE int64_t pixels() const { return batch * out_h * out_w; }
  DCN_HOST_DEVICE int64_t offset_channels() const { return 2 * mask_channels(); }
  DCN_HOST_DEVICE int64_t mask_channels() const {
    return static_cast<int64_t>(deformable_groups) * taps();
  }
  // GEMM depth of one group: a column row block (taps x Cin/groups).
  DCN_HOST_DEVICE int64_t group_columns() const { return taps() * in_channels_per_group(); }
  // A full column row: all groups.
  DCN_HOST_DEVICE int64_t columns() const { return taps() * in_channels; }
  DCN_HOST_DEVICE int64_t image_elements() const { return in_h * in_w * in_channels; }
  DCN_HOST_DEVICE int64_t input_elements() const { return batch * image_elements(); }
  DCN_HOST_DEVICE int64_t weight_elements() const { return group_columns() * out_channels; }

  // Where tap (ky, kx) of output pixel (oy, ox) samples before its offset is added.
  DCN_HOST_DEVICE int64_t base_y(int64_t oy, int ky) const {
    return oy * stride_h - pad_h + static_cast<int64_t>(ky) * dilation_h;
  }
  DCN_HOST_DEVICE int64_t base_x(int64_t ox, int kx) const {
    return ox * stride_w - pad_w + static_cast<int64_t>(kx) * dilation_w;
  }
};

// Every kernel sums in float for half and bfloat16, in double for double.
template <typename T>
using AccumulatorOf = std::conditional_t<std::is_same_v<T, double>, double, float>;

// Output size of a convolution along one axis; < 1 means the configuration is invalid.
DCN_HOST_DEVICE int64_t ConvOutputSize(int64_t in, int kernel, int stride, int pad, int dilation) {
  const int64_t room =
      in + 2 * static_cast<int64_t>(pad) - (static_cast<int64_t>(dilation) * (kernel - 1) + 1);
  return room < 0 ? 0 : room / stride + 1;  // C++ division truncates: keep negatives out of it
}

// The three computations.
enum class Op { kForward, kBackwardInput, kBackwardWeight };
inline constexpr int kNumOps = 3;
const char* OpName(Op op);  // "DCNv2Forward", ...

// Element types the kernels are instantiated for.
enum class DType { kHalf, kBFloat16, kFloat, kDouble };

// The ops' attributes.
struct Attrs {
  int kernel_h = 1, kernel_w = 1;
  int stride_h = 1, stride_w = 1;
  int pad_h = 0, pad_w = 0;
  int dilation_h = 1, dilation_w = 1;
  int groups = 1, deformable_groups = 1;
  bool has_mask = true;  // a mask operand is given
  bool has_bias = true;  // forward: a bias operand is given; backward weight: grad_bias is wanted
};

// Dimensions of one operand as the caller has them; rank -1 when the op has no such operand.
struct Dims {
  int rank = -1;
  int64_t size[8] = {};

  bool present() const { return rank >= 0; }
  std::string DebugString() const;  // "[1,5,5,2]", as TensorFlow prints shapes
};

// The operands an op sees (forward: input, offset, mask, weight, bias; backward input:
// grad_output, input, offset, mask, weight; backward weight: grad_output, input, offset, mask).
struct OperandDims {
  Dims input, offset, mask, weight, bias, grad_output;
};

// The ranges of the attributes alone (kernel, stride, dilation >= 1, padding >= 0, ...). Returns
// "" when they are valid, else a message naming the attribute at fault.
std::string CheckAttrs(const Attrs& a);

// Checks the operands of `op` against the attributes and each other, and the limits every kernel
// relies on (32-bit indexing within an image, exact float sample coordinates); fills `shape`.
// Returns "" when the problem can run, else a message naming the operand or attribute at fault.
// The operands present must be those of `op`, with mask and bias as the attributes say.
std::string CheckProblem(Op op, const Attrs& a, const OperandDims& operands, DcnShape* shape);

}  // namespace tensorflow_dcn

#endif  // TENSORFLOW_DCN_CC_CORE_PROBLEM_H_
