// Bilinear sampling against a zero border and its gradients: the one place this math lives.
// Used by the CPU kernels and by every CUDA kernel (host and device).
//
// A sample at (y, x) reads the cell whose top-left corner is (floor(y), floor(x)); corners outside
// the image read zero. Within that cell the value is
//   v = hh*hw*v00 + hh*lw*v01 + lh*hw*v10 + lh*lw*v11,  lh = y - y0, hh = 1 - lh (same for x)
// and its derivatives are taken in the same cell. At integer positions this is the one-sided
// (right-sided) derivative, as torchvision computes it; at y = -1 it is v(0) - 0, not zero.
// Samples with y or x outside [-1, H) x [-1, W) touch no pixel: value and gradients are zero.
// Non-finite coordinates (NaN, +-Inf, huge offsets) fail that range test and also read zero, so
// no index is ever formed from them.
#ifndef TENSORFLOW_DCN_CC_CORE_BILINEAR_H_
#define TENSORFLOW_DCN_CC_CORE_BILINEAR_H_

#include <cmath>
#include <cstdint>

#include "tensorflow_dcn/cc/core/problem.h"

namespace tensorflow_dcn {

// The four corners of one sample. `pixel[k]` is the corner's pixel index y * W + x within its
// image, or -1 when the corner is outside; `weight[k]` is its bilinear weight (0 when outside).
// Corner order: (y0, x0), (y0, x0 + 1), (y0 + 1, x0), (y0 + 1, x0 + 1).
DCN_HOST_DEVICE float FloorOf(float v) { return floorf(v); }
DCN_HOST_DEVICE double FloorOf(double v) { return floor(v); }

template <typename Acc>
struct BilinearPoint {
  int pixel[4];
  Acc weight[4];
  Acc ly, lx;  // fractional parts, for the coordinate derivatives
};

// Sets up the sample at (y, x) in an image of height x width. Returns false (and leaves every
// corner outside, weights zero) when the sample touches no pixel.
template <typename Acc>
DCN_HOST_DEVICE bool MakeBilinearPoint(Acc y, Acc x, int64_t height, int64_t width,
                                       BilinearPoint<Acc>* p) {
  // Written so that NaN fails the test.
  const bool inside = y >= Acc(-1) && y < Acc(height) && x >= Acc(-1) && x < Acc(width);
  if (!inside) {
    for (int k = 0; k < 4; ++k) {
      p->pixel[k] = -1;
      p->weight[k] = Acc(0);
    }
    p->ly = p->lx = Acc(0);
    return false;
  }
  const Acc fy = FloorOf(y), fx = FloorOf(x);
  const int y0 = static_cast<int>(fy), x0 = static_cast<int>(fx);
  const Acc ly = y - fy, lx = x - fx, hy = Acc(1) - ly, hx = Acc(1) - lx;
  const bool y0_in = y0 >= 0, y1_in = y0 + 1 < height;
  const bool x0_in = x0 >= 0, x1_in = x0 + 1 < width;
  const int w = static_cast<int>(width);
  p->pixel[0] = (y0_in && x0_in) ? y0 * w + x0 : -1;
  p->pixel[1] = (y0_in && x1_in) ? y0 * w + x0 + 1 : -1;
  p->pixel[2] = (y1_in && x0_in) ? (y0 + 1) * w + x0 : -1;
  p->pixel[3] = (y1_in && x1_in) ? (y0 + 1) * w + x0 + 1 : -1;
  p->weight[0] = (p->pixel[0] >= 0) ? hy * hx : Acc(0);
  p->weight[1] = (p->pixel[1] >= 0) ? hy * lx : Acc(0);
  p->weight[2] = (p->pixel[2] >= 0) ? ly * hx : Acc(0);
  p->weight[3] = (p->pixel[3] >= 0) ? ly * lx : Acc(0);
  p->ly = ly;
  p->lx = lx;
  return true;
}

// The four corner values of channel `c` (zero outside). `image` points at the image's first
// element, `channels` is the pixel stride.
template <typename Acc, typename T>
DCN_HOST_DEVICE void LoadCorners(const BilinearPoint<Acc>& p, const T* image, int64_t channels,
                                 int64_t c, Acc v[4]) {
  for (int k = 0; k < 4; ++k) {
    v[k] = p.pixel[k] >= 0 ? static_cast<Acc>(image[p.pixel[k] * channels + c]) : Acc(0);
  }
}

// The corner values `v` are Acc, or (below, through pointers only) a vector of Acc lanes: several
// channels at once in the CPU's tiled kernels. Pointers because those kernels are compiled for
// wider instruction sets than these functions, and a vector passed by value would cross that
// boundary with a different calling convention where the call is not inlined.
template <typename Acc, typename V>
DCN_HOST_DEVICE void BilinearValue(const BilinearPoint<Acc>& p, const V v[4], V* value) {
  *value = p.weight[0] * v[0] + p.weight[1] * v[1] + p.weight[2] * v[2] + p.weight[3] * v[3];
}
template <typename Acc>
DCN_HOST_DEVICE Acc BilinearValue(const BilinearPoint<Acc>& p, const Acc v[4]) {
  Acc value;
  BilinearValue(p, v, &value);
  return value;
}

// d value / d y and d value / d x in the sample's cell (corners outside read zero).
template <typename Acc, typename V>
DCN_HOST_DEVICE void BilinearCoordinateGrad(const BilinearPoint<Acc>& p, const V v[4], V* dy,
                                            V* dx) {
  const Acc hy = Acc(1) - p.ly, hx = Acc(1) - p.lx;
  *dy = hx * (v[2] - v[0]) + p.lx * (v[3] - v[1]);
  *dx = hy * (v[1] - v[0]) + p.ly * (v[3] - v[2]);
}

// Value of channel c at the sample.
template <typename Acc, typename T>
DCN_HOST_DEVICE Acc BilinearSample(const BilinearPoint<Acc>& p, const T* image, int64_t channels,
                                   int64_t c) {
  Acc v[4];
  LoadCorners(p, image, channels, c, v);
  return BilinearValue(p, v);
}

// Output pixel p (flat over N, Ho, Wo) as (image, row, column): one 64-bit division, the rest in
// 32 bits (an image has fewer than 2^31 output pixels).
struct OutputPixel {
  int64_t n;
  int oy, ox;
};
DCN_HOST_DEVICE OutputPixel LocateOutputPixel(const DcnShape& s, int64_t p) {
  const int64_t n = p / s.out_pixels_per_image();
  const int rem = static_cast<int>(p - n * s.out_pixels_per_image());
  const int w = static_cast<int>(s.out_w);
  return {n, rem / w, rem % w};
}

// The bilinear point of tap t of output pixel `at` displaced by (dy, dx).
template <typename Acc>
DCN_HOST_DEVICE bool MakeTapPoint(const DcnShape& s, const OutputPixel& at, int t, Acc dy, Acc dx,
                                  BilinearPoint<Acc>* point) {
  const Acc y = static_cast<Acc>(s.base_y(at.oy, t / s.kernel_w)) + dy;
  const Acc x = static_cast<Acc>(s.base_x(at.ox, t % s.kernel_w)) + dx;
  return MakeBilinearPoint(y, x, s.in_h, s.in_w, point);
}

// The displacement and mask value (1 without a mask) of sample `i` (= deformable group * taps +
// tap) of output pixel `p`.
template <typename Acc>
struct SampleOffset {
  Acc dy, dx, m;
};
template <typename Acc, typename T>
DCN_HOST_DEVICE SampleOffset<Acc> ReadSampleOffset(const DcnShape& s, int64_t p, int i,
                                                   const T* offset, const T* mask) {
  const T* off = offset + p * s.offset_channels() + 2 * i;
  return {static_cast<Acc>(off[0]), static_cast<Acc>(off[1]),
          mask ? static_cast<Acc>(mask[p * s.mask_channels() + i]) : Acc(1)};
}

// Sets up sample `i` of output pixel `p` at `at`: its position from the offset, its bilinear
// point and its mask value.
template <typename Acc, typename T>
DCN_HOST_DEVICE bool MakeSample(const DcnShape& s, int64_t p, const OutputPixel& at, int i,
                                const T* offset, const T* mask, BilinearPoint<Acc>* point, Acc* m) {
  const SampleOffset<Acc> o = ReadSampleOffset<Acc>(s, p, i, offset, mask);
  *m = o.m;
  return MakeTapPoint(s, at, i % s.taps(), o.dy, o.dx, point);
}

// Column index of input channel c at tap t in a column row laid out [group][tap][channel in
// group], the order in which one group's block multiplies that group's weight rows (tap, ci).
// Column rows are shorter than 2^31 (validated), so 32 bits suffice.
DCN_HOST_DEVICE int ColumnIndex(int channels_per_group, int taps, int t, int c) {
  return (c / channels_per_group * taps + t) * channels_per_group + c % channels_per_group;
}

}  // namespace tensorflow_dcn

#endif  // TENSORFLOW_DCN_CC_CORE_BILINEAR_H_
