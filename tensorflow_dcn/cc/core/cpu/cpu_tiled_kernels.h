// The tiled CPU implementation for one instruction set. cpu_tiled.cc includes this file once per
// instruction set, each time inside its own namespace and `#pragma GCC target` region, with
//   TFDCN_VECTOR_BYTES  16, 32 or 64: the width of the vectors the kernels work on
//   TFDCN_F16C          1 when the F16C half <-> float conversions may be used
// defined, and every header it needs already included. No include guard: included several times.
//
// The work is done per tile of output pixels, as the GPU's fused kernels do:
//  - forward: the masked bilinear samples of a tile (vectors over the contiguous NHWC channels,
//    four corner weights once per tap and pixel) are gathered into a blocked column tile
//    [depth / 16][tile][16] that stays in cache, and multiplied at once by the weights, packed once
//    per run into micro-panels [column strip][depth][kNR];
//  - backward input: per image and channel slice, the column gradient of a tile (grad_output tile
//    x weight^T, the slice's columns only) and, in the same pass, its scatter into grad_input and
//    the slice's share of the offset and mask gradients. A unit owns its image and channel slice of
//    grad_input, so every element has one writer; the shares are summed in slice order after;
//  - backward weight: gathered tile^T x grad_output tile, accumulated per fixed range of tiles and
//    summed over the ranges in order.
// Products run in register-blocked micro-kernels (kRows x kNR outputs held in vector registers).
// Half and bfloat16 are converted in the tiles; everything accumulates in float.

constexpr int kLanes = TFDCN_VECTOR_BYTES / 4;
typedef float Vec __attribute__((vector_size(TFDCN_VECTOR_BYTES)));
typedef uint32_t Bits __attribute__((vector_size(TFDCN_VECTOR_BYTES)));
typedef uint16_t Bits16 __attribute__((vector_size(TFDCN_VECTOR_BYTES / 2)));

// Micro-kernel sizes: kNR output columns (two vectors) by kRows rows, so that the kRows * 2
// accumulators, two column vectors and a broadcast fit the 32 (AVX-512) or 16 vector registers.
constexpr int kNR = 2 * kLanes;
constexpr int kRows = kLanes == 16 ? 12 : 6;            // tile x packed weights
constexpr int kTransposedRows = kLanes == 16 ? 8 : 4;   // tile^T x grad_output (divides kDepthBlock)
// Depth (GEMM reduction) block of the column tiles: a tile is [depth / 16][pixels][16].
constexpr int kDepthBlock = 16;
// Output pixels per tile: a multiple of kRows; the column tile of a 3x3x128 problem is 221 KB.
constexpr int kTile = 48;
// Backward weight: the fixed number of tile ranges whose weight gradients are summed in order
// (enough for load balance on a few cores; the workspace holds one weight gradient per range).
constexpr int kWeightRanges = 16;
// Backward input: units (image, channel slice) wanted per run, and the slice widths tried.
constexpr int kInputUnits = 4;
constexpr int kMinSlice = 16, kMaxSlice = 64;
// Bound on the workspace that grows with the batch (backward input's per-chunk buffers).
constexpr int64_t kChunkBytes = int64_t{64} << 20;

int64_t RoundUp(int64_t n, int64_t m) { return (n + m - 1) / m * m; }

// ---- Vectors and conversions -------------------------------------------------------------------

inline Vec Load(const float* p) {
  Vec v;
  __builtin_memcpy(&v, p, sizeof(v));
  return v;
}
inline void Store(float* p, Vec v) { __builtin_memcpy(p, &v, sizeof(v)); }

// The lane sums of four vectors (a fixed order of additions).
inline void Sum4(Vec a, Vec b, Vec c, Vec d, float sums[4]) {
#if TFDCN_VECTOR_BYTES >= 32
#if TFDCN_VECTOR_BYTES == 64
  const __m256 a8 = _mm256_add_ps(_mm512_castps512_ps256((__m512)a),
                                  _mm512_extractf32x8_ps((__m512)a, 1));
  const __m256 b8 = _mm256_add_ps(_mm512_castps512_ps256((__m512)b),
                                  _mm512_extractf32x8_ps((__m512)b, 1));
  const __m256 c8 = _mm256_add_ps(_mm512_castps512_ps256((__m512)c),
                                  _mm512_extractf32x8_ps((__m512)c, 1));
  const __m256 d8 = _mm256_add_ps(_mm512_castps512_ps256((__m512)d),
                                  _mm512_extractf32x8_ps((__m512)d, 1));
#else
  const __m256 a8 = (__m256)a, b8 = (__m256)b, c8 = (__m256)c, d8 = (__m256)d;
#endif
  // [a0+a1 a2+a3 b0+b1 b2+b3 | a4+a5 ...], then [a0..3 b0..3 c0..3 d0..3 | a4..7 ...].
  const __m256 h = _mm256_hadd_ps(_mm256_hadd_ps(a8, b8), _mm256_hadd_ps(c8, d8));
  _mm_storeu_ps(sums, _mm_add_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps(h, 1)));
#else
  float lanes[4][kLanes];
  __builtin_memcpy(lanes[0], &a, sizeof(a));
  __builtin_memcpy(lanes[1], &b, sizeof(b));
  __builtin_memcpy(lanes[2], &c, sizeof(c));
  __builtin_memcpy(lanes[3], &d, sizeof(d));
  for (int k = 0; k < 4; ++k) {
    float sum = 0.f;
    for (int l = 0; l < kLanes; ++l) sum += lanes[k][l];
    sums[k] = sum;
  }
#endif
}

inline float ToFloat(float x) { return x; }
inline float ToFloat(Eigen::half x) { return static_cast<float>(x); }
inline float ToFloat(Eigen::bfloat16 x) { return static_cast<float>(x); }

// kLanes elements of T as floats.
inline Vec LoadAs(const float* p) { return Load(p); }
inline Vec LoadAs(const Eigen::bfloat16* p) {
  Bits16 b;
  __builtin_memcpy(&b, p, sizeof(b));
  const Bits wide = __builtin_convertvector(b, Bits) << 16;
  Vec v;
  __builtin_memcpy(&v, &wide, sizeof(v));
  return v;
}
inline Vec LoadAs(const Eigen::half* p) {
#if TFDCN_F16C && TFDCN_VECTOR_BYTES == 64
  return (Vec)_mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
#elif TFDCN_F16C && TFDCN_VECTOR_BYTES == 32
  return (Vec)_mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
#else
  Vec v;
  for (int l = 0; l < kLanes; ++l) v[l] = static_cast<float>(p[l]);
  return v;
#endif
}

// kLanes floats stored as T, rounded to nearest even as static_cast<T> does.
inline void StoreAs(float* p, Vec v) { Store(p, v); }
inline void StoreAs(Eigen::bfloat16* p, Vec v) {
  Bits b;
  __builtin_memcpy(&b, &v, sizeof(b));
  const Bits rounded = (b + 0x7fffu + ((b >> 16) & 1u)) >> 16;
  const Bits quiet_nan = (b >> 16) | 0x40u;
  const Bits result = v != v ? quiet_nan : rounded;
  const Bits16 narrow = __builtin_convertvector(result, Bits16);
  __builtin_memcpy(static_cast<void*>(p), &narrow, sizeof(narrow));
}
inline void StoreAs(Eigen::half* p, Vec v) {
#if TFDCN_F16C && TFDCN_VECTOR_BYTES == 64
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(p),
                      _mm512_cvtps_ph((__m512)v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
#elif TFDCN_F16C && TFDCN_VECTOR_BYTES == 32
  _mm_storeu_si128(reinterpret_cast<__m128i*>(p),
                   _mm256_cvtps_ph((__m256)v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
#else
  for (int l = 0; l < kLanes; ++l) p[l] = static_cast<Eigen::half>(v[l]);
#endif
}

// dst[i] = T(src[i]) for n elements.
template <typename T>
void ConvertFromFloat(const float* src, int64_t n, T* dst) {
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes) StoreAs(dst + i, Load(src + i));
  for (; i < n; ++i) dst[i] = static_cast<T>(src[i]);
}

// ---- Micro-kernels -----------------------------------------------------------------------------

// c[MR][kNR] (row stride ldc) = a x b over `blocks` depth blocks. a: the MR rows of a blocked
// column tile, element (row i, depth k) at a[(k / 16) * block_stride + i * 16 + k % 16]; b: a
// packed micro-panel [depth][kNR].
template <int MR>
inline void MultiplyMicroTile(const float* a, int64_t block_stride, int blocks, const float* b,
                              float* c, int64_t ldc) {
  Vec acc[MR][2] = {};
  for (int kb = 0; kb < blocks; ++kb) {
    const float* ak = a + kb * block_stride;
    const float* bk = b + kb * kDepthBlock * kNR;
#pragma GCC unroll 16
    for (int k = 0; k < kDepthBlock; ++k) {
      const Vec b0 = Load(bk + k * kNR), b1 = Load(bk + k * kNR + kLanes);
#pragma GCC unroll 16
      for (int i = 0; i < MR; ++i) {
        const float x = ak[i * kDepthBlock + k];
        acc[i][0] += x * b0;
        acc[i][1] += x * b1;
      }
    }
  }
#pragma GCC unroll 16
  for (int i = 0; i < MR; ++i) {
    Store(c + i * ldc, acc[i][0]);
    Store(c + i * ldc + kLanes, acc[i][1]);
  }
}

// c[rows][strips * kNR] (row stride ldc) = tile x packed, for a blocked tile of `tile` pixels and
// `blocks` depth blocks and the packed micro-panels of `strips` column strips. Rows up to the
// next multiple of kRows are computed too (from the tile's zero rows).
inline void MultiplyTile(const float* tile_a, int tile, int blocks, const float* packed,
                         int strips, int rows, float* c, int64_t ldc) {
  const int row_blocks = (rows + kRows - 1) / kRows;
  for (int j = 0; j < strips; ++j) {
    const float* panel = packed + int64_t{j} * blocks * kDepthBlock * kNR;
    for (int ib = 0; ib < row_blocks; ++ib) {
      MultiplyMicroTile<kRows>(tile_a + ib * kRows * kDepthBlock, int64_t{tile} * kDepthBlock,
                               blocks, panel, c + ib * kRows * ldc + j * kNR, ldc);
    }
  }
}

// c[MR][kNR] (row stride ldc) += a^T x b over `rows` pixels: a is MR consecutive depth rows
// within one depth block of a blocked tile (element (depth i, pixel p) at a[p * 16 + i]), b the
// pixels' grad_output rows (row stride ldb).
template <int MR>
inline void MultiplyTransposedMicroTile(const float* a, const float* b, int64_t ldb, int rows,
                                        float* c, int64_t ldc) {
  Vec acc[MR][2];
#pragma GCC unroll 16
  for (int i = 0; i < MR; ++i) {
    acc[i][0] = Load(c + i * ldc);
    acc[i][1] = Load(c + i * ldc + kLanes);
  }
  for (int p = 0; p < rows; ++p) {
    const Vec b0 = Load(b + p * ldb), b1 = Load(b + p * ldb + kLanes);
#pragma GCC unroll 16
    for (int i = 0; i < MR; ++i) {
      const float x = a[p * kDepthBlock + i];
      acc[i][0] += x * b0;
      acc[i][1] += x * b1;
    }
  }
#pragma GCC unroll 16
  for (int i = 0; i < MR; ++i) {
    Store(c + i * ldc, acc[i][0]);
    Store(c + i * ldc + kLanes, acc[i][1]);
  }
}

// ---- Geometry ------------------------------------------------------------------------------------

struct Geometry {
  int taps, groups, deformable_groups;
  int channels, out_channels;
  int cpg, cog, cpd;  // channels per group, output channels per group, per deformable group
  int depth;          // GEMM depth of one group: taps x cpg columns
  int depth_pad;      // ... padded to whole depth blocks
  int npad, strips;   // output channels of a group padded to whole kNR strips
  int64_t tile_floats;  // one group's blocked column tile of kTile pixels

  explicit Geometry(const DcnShape& s)
      : taps(s.taps()),
        groups(s.groups),
        deformable_groups(s.deformable_groups),
        channels(static_cast<int>(s.in_channels)),
        out_channels(static_cast<int>(s.out_channels)),
        cpg(static_cast<int>(s.in_channels_per_group())),
        cog(static_cast<int>(s.out_channels_per_group())),
        cpd(static_cast<int>(s.channels_per_deformable_group())),
        depth(taps * cpg),
        depth_pad(static_cast<int>(RoundUp(depth, kDepthBlock))),
        npad(static_cast<int>(RoundUp(cog, kNR))),
        strips(npad / kNR),
        tile_floats(int64_t{depth_pad} * kTile) {}
};

// Calls fn(g, begin, end) for each conv group's share [begin, end) of deformable group d's channels.
template <typename Fn>
inline void ForEachGroupShare(const Geometry& geo, int d, Fn&& fn) {
  const int last = (d + 1) * geo.cpd;
  for (int c = d * geo.cpd; c < last;) {
    const int g = c / geo.cpg;
    const int end = std::min(last, (g + 1) * geo.cpg);
    fn(g, c, end);
    c = end;
  }
}

// Pointers to the four corners of a sample at channel `c`, or to `outside` (a row of zeros to
// read, or one to write and ignore) for corners outside the image.
template <typename U>
inline void CornerPointers(const BilinearPoint<float>& point, U* image, int64_t channels, int c,
                           U* outside, U* corner[4]) {
  for (int k = 0; k < 4; ++k) {
    corner[k] = point.pixel[k] >= 0 ? image + int64_t{point.pixel[k]} * channels + c : outside;
  }
}

// ---- Gather --------------------------------------------------------------------------------------

// Per-thread scratch of the gather: a row of every group's columns (padding kept zero), a zero
// image row for corners outside the image, and the blocked column tiles of every group.
template <typename T>
struct GatherScratch {
  std::vector<float> row, tiles;
  std::vector<T> zeros;
  explicit GatherScratch(const Geometry& geo)
      : row(int64_t{geo.groups} * geo.depth_pad, 0.f),
        tiles(geo.groups * geo.tile_floats, 0.f),
        zeros(geo.cpg, T(0.f)) {}
};

// Writes the masked samples of output pixels [begin, begin + rows) into the blocked column tiles
// (group g's at tiles + g * tile_floats); the tile's rows from `rows` on are zero.
template <typename T>
void GatherTile(const DcnShape& s, const Geometry& geo, const T* input, const T* offset,
                const T* mask, int64_t begin, int rows, GatherScratch<T>* scratch) {
  float* row = scratch->row.data();
  const T* zeros = scratch->zeros.data();
  for (int r = 0; r < rows; ++r) {
    const int64_t p = begin + r;
    const OutputPixel at = LocateOutputPixel(s, p);
    const T* image = input + at.n * s.image_elements();
    for (int d = 0; d < geo.deformable_groups; ++d) {
      for (int t = 0; t < geo.taps; ++t) {
        BilinearPoint<float> point;
        float m;
        MakeSample(s, p, at, d * geo.taps + t, offset, mask, &point, &m);
        for (float& w : point.weight) w *= m;
        ForEachGroupShare(geo, d, [&](int g, int cb, int ce) {
          const T* corner[4];
          CornerPointers(point, image, geo.channels, cb, zeros, corner);
          float* out = row + g * geo.depth_pad + t * geo.cpg + (cb - g * geo.cpg);
          const int n = ce - cb;
          int c = 0;
          for (; c + kLanes <= n; c += kLanes) {
            const Vec v[4] = {LoadAs(corner[0] + c), LoadAs(corner[1] + c),
                              LoadAs(corner[2] + c), LoadAs(corner[3] + c)};
            Vec value;
            BilinearValue(point, v, &value);
            Store(out + c, value);
          }
          for (; c < n; ++c) {
            const float v[4] = {ToFloat(corner[0][c]), ToFloat(corner[1][c]),
                                ToFloat(corner[2][c]), ToFloat(corner[3][c])};
            out[c] = BilinearValue(point, v);
          }
        });
      }
    }
    for (int g = 0; g < geo.groups; ++g) {
      const float* src = row + g * geo.depth_pad;
      float* dst = scratch->tiles.data() + g * geo.tile_floats + r * kDepthBlock;
      for (int kb = 0; kb < geo.depth_pad / kDepthBlock; ++kb) {
        __builtin_memcpy(dst + int64_t{kb} * kTile * kDepthBlock, src + kb * kDepthBlock,
                         kDepthBlock * sizeof(float));
      }
    }
  }
  for (int r = rows; r < kTile; ++r) {
    for (int g = 0; g < geo.groups; ++g) {
      float* dst = scratch->tiles.data() + g * geo.tile_floats + r * kDepthBlock;
      for (int kb = 0; kb < geo.depth_pad / kDepthBlock; ++kb) {
        std::fill_n(dst + int64_t{kb} * kTile * kDepthBlock, kDepthBlock, 0.f);
      }
    }
  }
}

// ---- Forward -------------------------------------------------------------------------------------

struct ForwardBuffers {
  float* weights;  // per group: [strips][depth_pad][kNR]
  float* bias;     // per group: [npad]
  ForwardBuffers(const Geometry& geo, WorkspaceLayout* w)
      : weights(w->Take<float>(int64_t{geo.groups} * geo.depth_pad * geo.npad)),
        bias(w->Take<float>(int64_t{geo.groups} * geo.npad)) {}
};

template <typename T>
void Forward(const DcnShape& s, const T* input, const T* offset, const T* mask, const T* weight,
             const T* bias, T* output, void* workspace, const ParallelFor& parallel_for) {
  const Geometry geo(s);
  WorkspaceLayout layout(workspace);
  const ForwardBuffers buffers(geo, &layout);

  // Pack the weights once: micro-panels per group and column strip, zero-padded.
  parallel_for(geo.groups * geo.strips, int64_t{geo.depth_pad} * kNR,
               [&](int64_t first, int64_t last) {
    for (int64_t unit = first; unit < last; ++unit) {
      const int g = static_cast<int>(unit / geo.strips), j = static_cast<int>(unit % geo.strips);
      float* panel = buffers.weights + (int64_t{g} * geo.strips + j) * geo.depth_pad * kNR;
      for (int k = 0; k < geo.depth_pad; ++k) {
        for (int q = 0; q < kNR; ++q) {
          const int co = j * kNR + q;
          panel[k * kNR + q] = k < geo.depth && co < geo.cog
              ? ToFloat(weight[int64_t{k} * geo.out_channels + g * geo.cog + co])
              : 0.f;
        }
      }
      for (int q = 0; q < kNR; ++q) {
        const int co = j * kNR + q;
        buffers.bias[g * geo.npad + co] =
            bias && co < geo.cog ? ToFloat(bias[g * geo.cog + co]) : 0.f;
      }
    }
  });

  const int64_t tiles = (s.pixels() + kTile - 1) / kTile;
  const int64_t cost = int64_t{kTile} * geo.depth * s.out_channels * 2;
  parallel_for(tiles, cost, [&](int64_t first, int64_t last) {
    GatherScratch<T> scratch(geo);
    std::vector<float> products(int64_t{kTile} * geo.npad);
    for (int64_t tile = first; tile < last; ++tile) {
      const int64_t begin = tile * kTile;
      const int rows = static_cast<int>(std::min<int64_t>(kTile, s.pixels() - begin));
      GatherTile(s, geo, input, offset, mask, begin, rows, &scratch);
      for (int g = 0; g < geo.groups; ++g) {
        MultiplyTile(scratch.tiles.data() + g * geo.tile_floats, kTile,
                     geo.depth_pad / kDepthBlock,
                     buffers.weights + int64_t{g} * geo.strips * geo.depth_pad * kNR, geo.strips,
                     rows, products.data(), geo.npad);
        const float* b = buffers.bias + g * geo.npad;
        for (int r = 0; r < rows; ++r) {
          const float* src = products.data() + int64_t{r} * geo.npad;
          T* dst = output + (begin + r) * geo.out_channels + g * geo.cog;
          int co = 0;
          for (; co + kLanes <= geo.cog; co += kLanes) {
            StoreAs(dst + co, Load(src + co) + Load(b + co));
          }
          for (; co < geo.cog; ++co) dst[co] = static_cast<T>(src[co] + b[co]);
        }
      }
    }
  });
}

// ---- Backward weight -----------------------------------------------------------------------------

// One range's weight gradient: per group [depth_pad][npad], then the bias gradient [out_channels].
struct BackwardWeightBuffers {
  int ranges;
  int64_t range_floats;
  float* sums;
  BackwardWeightBuffers(const DcnShape& s, const Geometry& geo, WorkspaceLayout* w) {
    const int64_t tiles = (s.pixels() + kTile - 1) / kTile;
    range_floats = RoundUp(int64_t{geo.groups} * geo.depth_pad * geo.npad + geo.out_channels, 64);
    const int64_t fit = std::max<int64_t>(1, kChunkBytes / (range_floats * 4));
    ranges = static_cast<int>(std::clamp<int64_t>(std::min<int64_t>(tiles, fit), 1, kWeightRanges));
    sums = w->Take<float>(ranges * range_floats);
  }
};

template <typename T>
void BackwardWeight(const DcnShape& s, const T* grad_output, const T* input, const T* offset,
                    const T* mask, T* grad_weight, T* grad_bias, void* workspace,
                    const ParallelFor& parallel_for) {
  const Geometry geo(s);
  WorkspaceLayout layout(workspace);
  const BackwardWeightBuffers buffers(s, geo, &layout);
  const int64_t tiles = (s.pixels() + kTile - 1) / kTile;
  const int64_t group_floats = int64_t{geo.depth_pad} * geo.npad;
  const int blocks = geo.depth_pad / kDepthBlock;

  parallel_for(buffers.ranges, (tiles + buffers.ranges - 1) / buffers.ranges * kTile * geo.depth *
                                   s.out_channels * 2,
               [&](int64_t first, int64_t last) {
    GatherScratch<T> scratch(geo);
    std::vector<float> go(int64_t{kTile} * geo.npad, 0.f);  // one group's grad_output tile
    for (int64_t range = first; range < last; ++range) {
      float* sums = buffers.sums + range * buffers.range_floats;
      float* bias_sums = sums + geo.groups * group_floats;
      std::fill_n(sums, buffers.range_floats, 0.f);
      const int64_t tile_begin = tiles * range / buffers.ranges;
      const int64_t tile_end = tiles * (range + 1) / buffers.ranges;
      for (int64_t tile = tile_begin; tile < tile_end; ++tile) {
        const int64_t begin = tile * kTile;
        const int rows = static_cast<int>(std::min<int64_t>(kTile, s.pixels() - begin));
        GatherTile(s, geo, input, offset, mask, begin, rows, &scratch);
        for (int g = 0; g < geo.groups; ++g) {
          for (int r = 0; r < rows; ++r) {
            const T* src = grad_output + (begin + r) * geo.out_channels + g * geo.cog;
            float* dst = go.data() + int64_t{r} * geo.npad;
            int co = 0;
            for (; co + kLanes <= geo.cog; co += kLanes) Store(dst + co, LoadAs(src + co));
            for (; co < geo.cog; ++co) dst[co] = ToFloat(src[co]);
            float* bias_row = bias_sums + g * geo.cog;
            co = 0;
            for (; co + kLanes <= geo.cog; co += kLanes) {
              Store(bias_row + co, Load(bias_row + co) + Load(dst + co));
            }
            for (; co < geo.cog; ++co) bias_row[co] += dst[co];
          }
          const float* tile_g = scratch.tiles.data() + g * geo.tile_floats;
          float* sums_g = sums + g * group_floats;
          for (int kb = 0; kb < blocks; ++kb) {
            for (int h = 0; h < kDepthBlock; h += kTransposedRows) {
              for (int j = 0; j < geo.strips; ++j) {
                MultiplyTransposedMicroTile<kTransposedRows>(
                    tile_g + int64_t{kb} * kTile * kDepthBlock + h, go.data() + j * kNR,
                    geo.npad, rows, sums_g + int64_t{kb * kDepthBlock + h} * geo.npad + j * kNR,
                    geo.npad);
              }
            }
          }
        }
      }
    }
  });

  // Sum the ranges in order, one writer per weight row.
  const int64_t weight_rows = geo.depth;
  parallel_for(weight_rows, int64_t{buffers.ranges} * s.out_channels,
               [&](int64_t first, int64_t last) {
    std::vector<float> row(geo.out_channels);
    for (int64_t k = first; k < last; ++k) {
      for (int g = 0; g < geo.groups; ++g) {
        float* dst = row.data() + g * geo.cog;
        const float* src = buffers.sums + g * group_floats + k * geo.npad;
        std::copy_n(src, geo.cog, dst);
        for (int range = 1; range < buffers.ranges; ++range) {
          const float* more = src + range * buffers.range_floats;
          for (int co = 0; co < geo.cog; ++co) dst[co] += more[co];
        }
      }
      ConvertFromFloat(row.data(), geo.out_channels, grad_weight + k * geo.out_channels);
    }
  });
  if (grad_bias) {
    std::vector<float> sum(buffers.sums + geo.groups * group_floats,
                           buffers.sums + geo.groups * group_floats + geo.out_channels);
    for (int range = 1; range < buffers.ranges; ++range) {
      const float* more = buffers.sums + range * buffers.range_floats + geo.groups * group_floats;
      for (int co = 0; co < geo.out_channels; ++co) sum[co] += more[co];
    }
    ConvertFromFloat(sum.data(), geo.out_channels, grad_bias);
  }
}

// ---- Backward input ------------------------------------------------------------------------------

// A slice of channels within one conv group and one deformable group: the unit of ownership of
// grad_input (with an image) and of the column-gradient GEMM's columns (tap, channel in slice).
struct Slice {
  int g, d, begin, end;
  int columns_pad;        // taps x (end - begin), padded to whole kNR strips
  int64_t packed_offset;  // of its weight micro-panels [strip][opad][kNR]
};

struct BackwardInputBuffers {
  std::vector<Slice> slices;
  int opad;              // output channels of a group padded to whole depth blocks
  int64_t chunk_images;  // images per chunk
  float* weights;        // the slices' weight^T micro-panels
  BilinearPoint<float>* points;  // [chunk pixels][samples]
  float* masks;                  // [chunk pixels][samples]
  float* shares;                 // [chunk pixels][slices][taps][3]: (dy, dx, value) sums
  // The chunk's input images and their grad_input in float, slice-major: image n's slice at
  // n * image_elements + (in_h * in_w) * slice.begin, [in_h * in_w][slice width]. A unit's
  // corners and scatter targets are then contiguous, whatever share of the channels it has.
  float* sliced_input;
  float* sliced_grad;

  BackwardInputBuffers(const DcnShape& s, const Geometry& geo, WorkspaceLayout* w) {
    // The widest slices that still give kInputUnits units (image, slice), at least kMinSlice.
    const int64_t images = std::max<int64_t>(1, std::min<int64_t>(s.batch, kInputUnits));
    int width = kMaxSlice;
    while (width > kMinSlice && images * CountSlices(geo, width) < kInputUnits) width /= 2;
    int64_t packed = 0;
    for (int d = 0; d < geo.deformable_groups; ++d) {
      ForEachGroupShare(geo, d, [&](int g, int cb, int ce) {
        for (int c = cb; c < ce; c += width) {
          const int end = std::min(ce, c + width);
          const int columns_pad = static_cast<int>(RoundUp(int64_t{geo.taps} * (end - c), kNR));
          slices.push_back({g, d, c, end, columns_pad, packed});
          packed += int64_t{columns_pad} * RoundUp(geo.cog, kDepthBlock);
        }
      });
    }
    opad = static_cast<int>(RoundUp(geo.cog, kDepthBlock));
    const int64_t samples = int64_t{geo.deformable_groups} * geo.taps;
    const int64_t per_image =
        s.out_pixels_per_image() * (samples * int64_t{sizeof(BilinearPoint<float>) + 4} +
                                    int64_t{12} * slices.size() * geo.taps) +
        s.image_elements() * 8;
    chunk_images = std::clamp<int64_t>(kChunkBytes / std::max<int64_t>(per_image, 1), 1,
                                       std::max<int64_t>(s.batch, 1));
    const int64_t chunk_pixels = chunk_images * s.out_pixels_per_image();
    weights = w->Take<float>(packed);
    points = w->Take<BilinearPoint<float>>(chunk_pixels * samples);
    masks = w->Take<float>(chunk_pixels * samples);
    shares = w->Take<float>(chunk_pixels * slices.size() * geo.taps * 3);
    sliced_input = w->Take<float>(chunk_images * s.image_elements());
    sliced_grad = w->Take<float>(chunk_images * s.image_elements());
  }

  static int64_t CountSlices(const Geometry& geo, int width) {
    int64_t n = 0;
    for (int d = 0; d < geo.deformable_groups; ++d) {
      ForEachGroupShare(geo, d, [&](int, int cb, int ce) { n += (ce - cb + width - 1) / width; });
    }
    return n;
  }
};

// `rows` rows of `cols` elements (row stride ld) as floats into a blocked tile
// [RoundUp(cols, 16) / 16][kTile][16]; the rest of the tile (rows from `rows` on, columns from
// `cols` on) is zero.
template <typename T>
void LoadBlockedTile(const T* src, int64_t ld, int rows, int cols, float* tile) {
  const int blocks = static_cast<int>(RoundUp(cols, kDepthBlock) / kDepthBlock);
  for (int r = 0; r < kTile; ++r) {
    const T* row = r < rows ? src + r * ld : src;
    for (int kb = 0; kb < blocks; ++kb) {
      float* dst = tile + (int64_t{kb} * kTile + r) * kDepthBlock;
      const int c0 = kb * kDepthBlock;
      if (r < rows && c0 + kDepthBlock <= cols) {
        for (int l = 0; l < kDepthBlock; l += kLanes) Store(dst + l, LoadAs(row + c0 + l));
      } else {
        for (int l = 0; l < kDepthBlock; ++l) {
          dst[l] = r < rows && c0 + l < cols ? ToFloat(row[c0 + l]) : 0.f;
        }
      }
    }
  }
}

// One output pixel's share of backward input within a slice of `width` channels: for each tap,
// the column gradient `grad` (taps x width) scattered into the slice's grad_input `acc` at the
// sample's corners (weights times mask), and the slice's sums (dy, dx, value) for the offset and
// mask gradients into share[tap * 3 + ...]. `image` and `acc` are [pixels][width]; corners
// outside read `zeros` and scatter to `trash`.
inline void ScatterPixel(const BilinearPoint<float>* points, const float* masks, int taps,
                         const float* grad, int width, const float* image, float* acc,
                         const float* zeros, float* trash, float* share) {
  for (int t = 0; t < taps; ++t, grad += width) {
    const BilinearPoint<float>& point = points[t];
    const float m = masks[t];
    const float* corner[4];
    float* target[4];
    CornerPointers(point, image, width, 0, zeros, corner);
    CornerPointers(point, acc, width, 0, trash, target);
    const float mw[4] = {m * point.weight[0], m * point.weight[1], m * point.weight[2],
                         m * point.weight[3]};
    // The value and its coordinate derivatives are linear in the corner values, so their sums
    // over the channels weighted by the column gradient are those of the corners' dot products
    // with it.
    Vec dot[4] = {};
    int c = 0;
    for (; c + kLanes <= width; c += kLanes) {
      const Vec g = Load(grad + c);
      for (int k = 0; k < 4; ++k) {
        dot[k] += g * Load(corner[k] + c);
        Store(target[k] + c, Load(target[k] + c) + mw[k] * g);
      }
    }
    float dots[4];
    Sum4(dot[0], dot[1], dot[2], dot[3], dots);
    for (; c < width; ++c) {
      for (int k = 0; k < 4; ++k) {
        dots[k] += grad[c] * corner[k][c];
        target[k][c] += mw[k] * grad[c];
      }
    }
    float value, dy, dx;
    BilinearValue(point, dots, &value);
    BilinearCoordinateGrad(point, dots, &dy, &dx);
    share[t * 3 + 0] = dy;
    share[t * 3 + 1] = dx;
    share[t * 3 + 2] = value;
  }
}

template <typename T>
void BackwardInput(const DcnShape& s, const T* grad_output, const T* input, const T* offset,
                   const T* mask, const T* weight, T* grad_input, T* grad_offset, T* grad_mask,
                   void* workspace, const ParallelFor& parallel_for) {
  const Geometry geo(s);
  WorkspaceLayout layout(workspace);
  const BackwardInputBuffers buffers(s, geo, &layout);
  const std::vector<Slice>& slices = buffers.slices;
  const int num_slices = static_cast<int>(slices.size());
  const int taps = geo.taps;
  const int opad = buffers.opad;
  const int64_t samples = int64_t{geo.deformable_groups} * taps;

  // Pack weight^T per slice: column (tap, channel in slice), depth = the group's output channels.
  parallel_for(num_slices, int64_t{taps} * kMaxSlice * opad, [&](int64_t first, int64_t last) {
    for (int64_t i = first; i < last; ++i) {
      const Slice& sl = slices[i];
      const int width = sl.end - sl.begin;
      float* panels = buffers.weights + sl.packed_offset;
      for (int col = 0; col < sl.columns_pad; ++col) {
        const int t = col / width, cl = col % width;
        float* dst = panels + int64_t{col / kNR} * opad * kNR + col % kNR;
        for (int co = 0; co < opad; ++co) dst[co * kNR] = 0.f;
        if (t >= taps) continue;
        const T* src = weight + (int64_t{t} * geo.cpg + sl.begin - sl.g * geo.cpg + cl) *
                                    geo.out_channels + sl.g * geo.cog;
        for (int co = 0; co < geo.cog; ++co) dst[co * kNR] = ToFloat(src[co]);
      }
    }
  });

  const int64_t image_pixels = s.out_pixels_per_image();
  const int64_t image_tiles = (image_pixels + kTile - 1) / kTile;
  for (int64_t chunk_begin = 0; chunk_begin < s.batch; chunk_begin += buffers.chunk_images) {
    const int64_t images = std::min(buffers.chunk_images, s.batch - chunk_begin);
    const int64_t first_pixel = chunk_begin * image_pixels;
    const int64_t pixels = images * image_pixels;

    // The chunk's sample points, once.
    parallel_for(pixels, samples * 40, [&](int64_t first, int64_t last) {
      for (int64_t q = first; q < last; ++q) {
        const int64_t p = first_pixel + q;
        const OutputPixel at = LocateOutputPixel(s, p);
        for (int i = 0; i < samples; ++i) {
          MakeSample(s, p, at, i, offset, mask, &buffers.points[q * samples + i],
                     &buffers.masks[q * samples + i]);
        }
      }
    });

    // Per (image, slice): column gradients of each tile, their scatter into the unit's own
    // grad_input elements, and the slice's share of the offset and mask gradients.
    const int64_t cost = image_pixels * int64_t{taps} * kMaxSlice * (geo.cog + 24);
    parallel_for(images * num_slices, cost, [&](int64_t first, int64_t last) {
      int max_columns = 0;
      for (const Slice& sl : slices) max_columns = std::max(max_columns, sl.columns_pad);
      std::vector<float> go_tile(int64_t{opad} * kTile, 0.f);
      std::vector<float> columns(int64_t{kTile} * max_columns);
      const std::vector<float> zeros(kMaxSlice, 0.f);  // corners outside read these
      std::vector<float> trash(kMaxSlice);              // and scatter to these
      for (int64_t unit = first; unit < last; ++unit) {
        const int64_t n_local = unit / num_slices;
        const Slice& sl = slices[unit % num_slices];
        const int width = sl.end - sl.begin;
        const int64_t n = chunk_begin + n_local;
        const int64_t in_pixels = s.in_h * s.in_w;
        const int64_t region = n_local * s.image_elements() + in_pixels * sl.begin;
        float* image = buffers.sliced_input + region;
        float* acc = buffers.sliced_grad + region;
        const T* image_src = input + n * s.image_elements() + sl.begin;
        for (int64_t px = 0; px < in_pixels; ++px) {
          for (int c = 0; c < width; ++c) {
            image[px * width + c] = ToFloat(image_src[px * geo.channels + c]);
          }
        }
        std::fill_n(acc, in_pixels * width, 0.f);
        const float* panels = buffers.weights + sl.packed_offset;
        const int strips = sl.columns_pad / kNR;

        for (int64_t tile = 0; tile < image_tiles; ++tile) {
          const int64_t begin = n * image_pixels + tile * kTile;  // first pixel of the tile
          const int rows = static_cast<int>(std::min<int64_t>(kTile, image_pixels - tile * kTile));
          LoadBlockedTile(grad_output + begin * geo.out_channels + sl.g * geo.cog, geo.out_channels,
                          rows, geo.cog, go_tile.data());
          MultiplyTile(go_tile.data(), kTile, opad / kDepthBlock, panels, strips, rows,
                       columns.data(), sl.columns_pad);

          for (int r = 0; r < rows; ++r) {
            const int64_t q = begin + r - first_pixel;
            const int64_t i = q * samples + int64_t{sl.d} * taps;
            ScatterPixel(buffers.points + i, buffers.masks + i, taps,
                         columns.data() + int64_t{r} * sl.columns_pad, width, image, acc,
                         zeros.data(), trash.data(),
                         buffers.shares + ((q * num_slices + unit % num_slices) * taps) * 3);
          }
        }
        T* dst = grad_input + n * s.image_elements() + sl.begin;
        for (int64_t px = 0; px < in_pixels; ++px) {
          ConvertFromFloat(acc + px * width, width, dst + px * geo.channels);
        }
      }
    });

    // Offset and mask gradients: the slices' shares summed in slice order.
    parallel_for(pixels, samples * num_slices * 4, [&](int64_t first, int64_t last) {
      for (int64_t q = first; q < last; ++q) {
        const int64_t p = first_pixel + q;
        for (int d = 0; d < geo.deformable_groups; ++d) {
          for (int t = 0; t < taps; ++t) {
            float dy = 0.f, dx = 0.f, value = 0.f;
            for (int i = 0; i < num_slices; ++i) {
              if (slices[i].d != d) continue;
              const float* share = buffers.shares + ((q * num_slices + i) * taps + t) * 3;
              dy += share[0];
              dx += share[1];
              value += share[2];
            }
            const int64_t i = int64_t{d} * taps + t;
            const float m = buffers.masks[q * samples + i];
            grad_offset[p * 2 * samples + 2 * i] = static_cast<T>(m * dy);
            grad_offset[p * 2 * samples + 2 * i + 1] = static_cast<T>(m * dx);
            if (grad_mask) grad_mask[p * samples + i] = static_cast<T>(value);
          }
        }
      }
    });
  }
}

template <typename T>
size_t WorkspaceBytes(Op op, const DcnShape& s) {
  const Geometry geo(s);
  WorkspaceLayout w;
  switch (op) {
    case Op::kForward: {
      const ForwardBuffers buffers(geo, &w);
      break;
    }
    case Op::kBackwardInput: {
      const BackwardInputBuffers buffers(s, geo, &w);
      break;
    }
    case Op::kBackwardWeight: {
      const BackwardWeightBuffers buffers(s, geo, &w);
      break;
    }
  }
  return w.bytes();
}
