// The tiled CPU implementation for one instruction set. cpu_tiled.cc includes this file once per
// instruction set, each time inside its own namespace and `#pragma GCC target` region, with
//   TFDCN_VECTOR_BYTES  16, 32 or 64: the width of the vectors the kernels work on
//   TFDCN_F16C          1 when the F16C half <-> float conversions may be used
// defined, and every header it needs already included. No include guard: included several times.
//
// The work is done per tile of output pixels, as the GPU's fused kernels do:
//  - forward: the masked bilinear samples of a tile (vectors over the contiguous NHWC channels,
//    four corner weights once per tap and pixel, bilinear.h's math) are gathered into a blocked
//    column tile [depth / 16][tile][16] that stays in cache, and multiplied at once by the
//    weights, packed once per run into micro-panels [column strip][depth][kNR];
//  - backward input: per tile, the column gradients (grad_output tile x weight^T, a row block at
//    a time so that they stay in cache) and, in the same pass, their scatter into grad_input and
//    the offset and mask gradients. Units are (image, range of its tiles); see
//    BackwardInputBuffers for how their scatters stay deterministic;
//  - backward weight: gathered tile^T x grad_output tile, accumulated per fixed range of tiles and
//    summed over the ranges in order.
// Products run in register-blocked micro-kernels (kRows x kNR outputs held in vector registers).
// Half and bfloat16 are converted in the tiles; everything accumulates in float. Every result
// element has one writer and a fixed order of additions, whatever the parallel-for does.

constexpr int kLanes = TFDCN_VECTOR_BYTES / 4;
typedef float Vec __attribute__((vector_size(TFDCN_VECTOR_BYTES)));
typedef uint32_t Bits __attribute__((vector_size(TFDCN_VECTOR_BYTES)));
typedef uint16_t Bits16 __attribute__((vector_size(TFDCN_VECTOR_BYTES / 2)));

// Micro-kernel sizes: kNR output columns (two vectors) by kRows rows, so that the kRows * 2
// accumulators, two column vectors and a broadcast fit the 32 (AVX-512) or 16 vector registers.
constexpr int kNR = 2 * kLanes;
constexpr int kRows = kLanes == 16 ? 14 : 6;           // tile x packed weights
constexpr int kTransposedRows = kLanes == 16 ? 8 : 4;  // tile^T x grad_output; divides 16
// Depth (GEMM reduction) block of the column tiles: a tile is [depth / 16][pixels][16].
constexpr int kDepthBlock = 16;
// Output pixels per tile: a multiple of kRows; the column tile of a 3x3x128 problem is 258 KB
// (AVX-512), so that it and a strip of packed weights stay in a 1 MB L2.
constexpr int kTile = kLanes == 16 ? 56 : 48;
static_assert(kTile % kRows == 0 && kDepthBlock % kTransposedRows == 0, "tile shapes");
// Backward weight: the fixed number of tile ranges whose weight gradients are summed in order
// (enough for load balance on a few cores; the workspace holds one weight gradient per range).
constexpr int kWeightRanges = 4;
// Backward input: units (image, range of its tiles) wanted per run. A batch of one is split in
// two ranges; every further range of an image costs an image-sized buffer and a pass to add it.
constexpr int kInputUnits = 2;
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
  // Halves added: 8 lanes each.
  const __m256 a8 =
      _mm256_add_ps(_mm512_castps512_ps256((__m512)a), _mm512_extractf32x8_ps((__m512)a, 1));
  const __m256 b8 =
      _mm256_add_ps(_mm512_castps512_ps256((__m512)b), _mm512_extractf32x8_ps((__m512)b, 1));
  const __m256 c8 =
      _mm256_add_ps(_mm512_castps512_ps256((__m512)c), _mm512_extractf32x8_ps((__m512)c, 1));
  const __m256 d8 =
      _mm256_add_ps(_mm512_castps512_ps256((__m512)d), _mm512_extractf32x8_ps((__m512)d, 1));
#else
  const __m256 a8 = (__m256)a, b8 = (__m256)b, c8 = (__m256)c, d8 = (__m256)d;
#endif
  // [a0+a1 a2+a3 b0+b1 b2+b3 | a4+a5 ...], then [a0..3 b0..3 c0..3 d0..3 | a4..7 ...].
  const __m256 h = _mm256_hadd_ps(_mm256_hadd_ps(a8, b8), _mm256_hadd_ps(c8, d8));
  _mm_storeu_ps(sums, _mm_add_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps(h, 1)));
#else
  const Vec v[4] = {a, b, c, d};
  for (int k = 0; k < 4; ++k) {
    float sum = 0.f;
    for (int l = 0; l < kLanes; ++l) sum += v[k][l];
    sums[k] = sum;
  }
#endif
}

inline float ToFloat(float x) { return x; }
inline float ToFloat(Eigen::half x) { return static_cast<float>(x); }
inline float ToFloat(Eigen::bfloat16 x) { return static_cast<float>(x); }

// kLanes elements of T as floats.
inline Vec LoadAs(const float* p) { return Load(p); }
inline Vec LoadAs(const Eigen::bfloat16* p) {  // the bits of a bfloat16 are a float's top half
#if TFDCN_VECTOR_BYTES == 64  // (GCC splits the generic conversion into 256-bit pieces)
  return (Vec)_mm512_slli_epi32(
      _mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p))), 16);
#elif TFDCN_VECTOR_BYTES == 32
  return (Vec)_mm256_slli_epi32(
      _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))), 16);
#else
  Bits16 b;
  __builtin_memcpy(&b, p, sizeof(b));
  const Bits wide = __builtin_convertvector(b, Bits) << 16;
  Vec v;
  __builtin_memcpy(&v, &wide, sizeof(v));
  return v;
#endif
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
#if TFDCN_VECTOR_BYTES == 64
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(p), _mm512_cvtepi32_epi16((__m512i)result));
#else
  const Bits16 narrow = __builtin_convertvector(result, Bits16);
  __builtin_memcpy(static_cast<void*>(p), &narrow, sizeof(narrow));
#endif
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
inline void MultiplyTile(const float* tile_a, int tile, int blocks, const float* packed, int strips,
                         int rows, float* c, int64_t ldc) {
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

// ---- Geometry -----------------------------------------------------------------------------------

struct Geometry {
  int taps, groups, deformable_groups;
  int channels, out_channels;
  int cpg, cog, cpd;    // channels per group, output channels per group, per deformable group
  int depth;            // GEMM depth of one group: taps x cpg columns
  int depth_pad;        // ... padded to whole depth blocks
  int npad, strips;     // output channels of a group padded to whole kNR strips
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

// Calls fn(g, begin, end) for each conv group's share [begin, end) of deformable group d's
// channels.
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

// ---- Gather -------------------------------------------------------------------------------------

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
// (group g's at tiles + g * tile_floats); the tile's rows from `rows` on are zero. When every
// share of channels (deformable group within conv group) starts and ends on a depth block, the
// samples go straight into the tiles; otherwise through a row of columns, copied in blocks.
template <typename T>
void GatherTile(const DcnShape& s, const Geometry& geo, const T* input, const T* offset,
                const T* mask, int64_t begin, int rows, GatherScratch<T>* scratch) {
  const bool direct = geo.cpg % kDepthBlock == 0 && geo.cpd % kDepthBlock == 0;
  float* row = scratch->row.data();
  float* tiles = scratch->tiles.data();
  const T* zeros = scratch->zeros.data();
  const int blocks = geo.depth_pad / kDepthBlock;
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
          const int column = t * geo.cpg + (cb - g * geo.cpg), n = ce - cb;
          if (direct) {  // column and n are multiples of kDepthBlock
            float* out = tiles + g * geo.tile_floats +
                         (int64_t{column / kDepthBlock} * kTile + r) * kDepthBlock;
            for (int c = 0; c < n; c += kDepthBlock, out += kTile * kDepthBlock) {
              for (int l = 0; l < kDepthBlock; l += kLanes) {
                const Vec v[4] = {LoadAs(corner[0] + c + l), LoadAs(corner[1] + c + l),
                                  LoadAs(corner[2] + c + l), LoadAs(corner[3] + c + l)};
                Vec value;
                BilinearValue(point, v, &value);
                Store(out + l, value);
              }
            }
            return;
          }
          float* out = row + g * geo.depth_pad + column;
          int c = 0;
          for (; c + kLanes <= n; c += kLanes) {
            const Vec v[4] = {LoadAs(corner[0] + c), LoadAs(corner[1] + c), LoadAs(corner[2] + c),
                              LoadAs(corner[3] + c)};
            Vec value;
            BilinearValue(point, v, &value);
            Store(out + c, value);
          }
          for (; c < n; ++c) {
            const float v[4] = {ToFloat(corner[0][c]), ToFloat(corner[1][c]), ToFloat(corner[2][c]),
                                ToFloat(corner[3][c])};
            out[c] = BilinearValue(point, v);
          }
        });
      }
    }
    if (direct) continue;
    for (int g = 0; g < geo.groups; ++g) {
      const float* src = row + g * geo.depth_pad;
      float* dst = tiles + g * geo.tile_floats + r * kDepthBlock;
      for (int kb = 0; kb < blocks; ++kb) {
        __builtin_memcpy(dst + int64_t{kb} * kTile * kDepthBlock, src + kb * kDepthBlock,
                         kDepthBlock * sizeof(float));
      }
    }
  }
  for (int r = rows; r < kTile; ++r) {
    for (int g = 0; g < geo.groups; ++g) {
      float* dst = tiles + g * geo.tile_floats + r * kDepthBlock;
      for (int kb = 0; kb < blocks; ++kb) {
        std::fill_n(dst + int64_t{kb} * kTile * kDepthBlock, kDepthBlock, 0.f);
      }
    }
  }
}

// ---- Forward ------------------------------------------------------------------------------------

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
  if (s.pixels() == 0) return;
  const Geometry geo(s);
  WorkspaceLayout layout(workspace);
  const ForwardBuffers buffers(geo, &layout);

  // Pack the weights once: micro-panels per group and column strip, zero-padded.
  parallel_for(
      geo.groups * geo.strips, int64_t{geo.depth_pad} * kNR, [&](int64_t first, int64_t last) {
        for (int64_t unit = first; unit < last; ++unit) {
          const int g = static_cast<int>(unit / geo.strips),
                    j = static_cast<int>(unit % geo.strips);
          float* panel = buffers.weights + (int64_t{g} * geo.strips + j) * geo.depth_pad * kNR;
          const int columns = std::min(kNR, geo.cog - j * kNR);  // the rest of the strip is zero
          for (int k = 0; k < geo.depth_pad; ++k) {
            const T* src = weight + int64_t{k} * geo.out_channels + g * geo.cog + j * kNR;
            float* dst = panel + int64_t{k} * kNR;
            int q = 0;
            if (k < geo.depth) {
              for (; q + kLanes <= columns; q += kLanes) Store(dst + q, LoadAs(src + q));
              for (; q < columns; ++q) dst[q] = ToFloat(src[q]);
            }
            std::fill(dst + q, dst + kNR, 0.f);
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
        MultiplyTile(scratch.tiles.data() + g * geo.tile_floats, kTile, geo.depth_pad / kDepthBlock,
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

// ---- Backward weight ----------------------------------------------------------------------------

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

  parallel_for(
      buffers.ranges,
      (tiles + buffers.ranges - 1) / buffers.ranges * kTile * geo.depth * s.out_channels * 2,
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
  parallel_for(
      weight_rows, int64_t{buffers.ranges} * s.out_channels, [&](int64_t first, int64_t last) {
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

// ---- Backward input -----------------------------------------------------------------------------

// Units are (image, range of its tiles). The first range of an image scatters into the image's
// float grad_input (grad_input itself for float), each further range into a buffer of its own;
// the buffers are added to the first in range order after. So every element has one writer and
// a fixed order of additions; only images split into several ranges (small batches) pay for the
// extra buffers.
struct BackwardInputBuffers {
  int ranges;            // per image
  int64_t chunk_images;  // images per chunk
  float* weights;        // per group: weight^T micro-panels [strips of depth_pad][opad][kNR]
  float* grad_input;     // [chunk images][image] when T is not float
  float* range_grads;    // [chunk images][ranges - 1][image]
  int opad;              // output channels of a group padded to whole depth blocks
  int strips;            // column strips of a group's column gradient (depth_pad columns)

  BackwardInputBuffers(const DcnShape& s, const Geometry& geo, bool float_grad_input,
                       WorkspaceLayout* w) {
    const int64_t image_tiles = (s.out_pixels_per_image() + kTile - 1) / kTile;
    const int64_t images = std::max<int64_t>(1, std::min<int64_t>(s.batch, kInputUnits));
    ranges =
        static_cast<int>(std::clamp<int64_t>((kInputUnits + images - 1) / images, 1, image_tiles));
    opad = static_cast<int>(RoundUp(geo.cog, kDepthBlock));
    strips = static_cast<int>(RoundUp(geo.depth_pad, kNR) / kNR);
    const int64_t per_image = s.image_elements() * 4 * ((float_grad_input ? 0 : 1) + (ranges - 1));
    chunk_images = std::clamp<int64_t>(kChunkBytes / std::max<int64_t>(per_image, 1), 1,
                                       std::max<int64_t>(s.batch, 1));
    weights = w->Take<float>(int64_t{geo.groups} * strips * opad * kNR);
    grad_input = float_grad_input ? nullptr : w->Take<float>(chunk_images * s.image_elements());
    range_grads = w->Take<float>(chunk_images * (ranges - 1) * s.image_elements());
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

// Backward input of output pixel p given its column gradients (`columns`: group g's row at
// columns + g * ld_group): for each sample, the column gradient scattered into `acc` (the image's
// float grad_input) at the sample's corners, weighted by the bilinear weights times the mask, and
// the sample's offset and mask gradients. Corners outside read `zeros` and scatter to `trash`
// (a pixel's worth each).
template <typename T>
void ScatterPixel(const DcnShape& s, const Geometry& geo, int64_t p, const T* image,
                  const T* offset, const T* mask, const float* columns, int64_t ld_group,
                  float* acc, const T* zeros, float* trash, T* grad_offset, T* grad_mask) {
  const OutputPixel at = LocateOutputPixel(s, p);
  const int samples = geo.deformable_groups * geo.taps;
  for (int i = 0; i < samples; ++i) {
    const int d = i / geo.taps, t = i % geo.taps;
    BilinearPoint<float> point;
    float m;
    MakeSample(s, p, at, i, offset, mask, &point, &m);
    const T* corner[4];
    float* target[4];
    CornerPointers(point, image, geo.channels, 0, zeros, corner);
    CornerPointers(point, acc, geo.channels, 0, trash, target);
    const float mw[4] = {m * point.weight[0], m * point.weight[1], m * point.weight[2],
                         m * point.weight[3]};
    // The value and its coordinate derivatives are linear in the corner values, so their sums
    // over the channels weighted by the column gradient are those of the corners' dot products
    // with it.
    float dots[4] = {0.f, 0.f, 0.f, 0.f};
    ForEachGroupShare(geo, d, [&](int g, int cb, int ce) {
      const float* grad = columns + g * ld_group + t * geo.cpg - g * geo.cpg;  // by channel
      Vec dot0{}, dot1{}, dot2{}, dot3{};
      int c = cb;
      for (; c + kLanes <= ce; c += kLanes) {
        const Vec gc = Load(grad + c);
        dot0 += gc * LoadAs(corner[0] + c);
        dot1 += gc * LoadAs(corner[1] + c);
        dot2 += gc * LoadAs(corner[2] + c);
        dot3 += gc * LoadAs(corner[3] + c);
        for (int k = 0; k < 4; ++k) Store(target[k] + c, Load(target[k] + c) + mw[k] * gc);
      }
      float share[4];
      Sum4(dot0, dot1, dot2, dot3, share);
      for (; c < ce; ++c) {
        for (int k = 0; k < 4; ++k) {
          share[k] += grad[c] * ToFloat(corner[k][c]);
          target[k][c] += mw[k] * grad[c];
        }
      }
      for (int k = 0; k < 4; ++k) dots[k] += share[k];
    });
    float value, dy, dx;
    BilinearValue(point, dots, &value);
    BilinearCoordinateGrad(point, dots, &dy, &dx);
    grad_offset[p * 2 * samples + 2 * i] = static_cast<T>(m * dy);
    grad_offset[p * 2 * samples + 2 * i + 1] = static_cast<T>(m * dx);
    if (grad_mask) grad_mask[p * samples + i] = static_cast<T>(value);
  }
}

template <typename T>
void BackwardInput(const DcnShape& s, const T* grad_output, const T* input, const T* offset,
                   const T* mask, const T* weight, T* grad_input, T* grad_offset, T* grad_mask,
                   void* workspace, const ParallelFor& parallel_for) {
  if (s.pixels() == 0) return;  // no batch: the results are empty
  constexpr bool kFloat = std::is_same_v<T, float>;
  const Geometry geo(s);
  WorkspaceLayout layout(workspace);
  const BackwardInputBuffers buffers(s, geo, kFloat, &layout);
  const int opad = buffers.opad, strips = buffers.strips;
  const int64_t group_panels = int64_t{strips} * opad * kNR;

  // Pack weight^T per group: column (tap, channel of the group), depth = its output channels.
  parallel_for(geo.groups * strips, int64_t{opad} * kNR, [&](int64_t first, int64_t last) {
    for (int64_t unit = first; unit < last; ++unit) {
      const int g = static_cast<int>(unit / strips), j = static_cast<int>(unit % strips);
      float* panel = buffers.weights + g * group_panels + int64_t{j} * opad * kNR;
      std::fill_n(panel, int64_t{opad} * kNR, 0.f);
      for (int q = 0; q < kNR && j * kNR + q < geo.depth; ++q) {
        const T* src = weight + int64_t{j * kNR + q} * geo.out_channels + g * geo.cog;
        for (int co = 0; co < geo.cog; ++co) panel[int64_t{co} * kNR + q] = ToFloat(src[co]);
      }
    }
  });

  const int64_t image_pixels = s.out_pixels_per_image();
  const int64_t image_tiles = (image_pixels + kTile - 1) / kTile;
  const int64_t image_elements = s.image_elements();
  const int ranges = buffers.ranges;
  for (int64_t chunk_begin = 0; chunk_begin < s.batch; chunk_begin += buffers.chunk_images) {
    const int64_t images = std::min(buffers.chunk_images, s.batch - chunk_begin);
    // The float grad_input of image n of the chunk, and the buffer of its range r > 0.
    auto image_grad = [&](int64_t n_local) {
      float* base = kFloat ? reinterpret_cast<float*>(grad_input) + chunk_begin * image_elements
                           : buffers.grad_input;
      return base + n_local * image_elements;
    };
    auto range_grad = [&](int64_t n_local, int r) {
      return buffers.range_grads + (n_local * (ranges - 1) + r - 1) * image_elements;
    };

    const int64_t cost = image_tiles / ranges * kTile * geo.depth * s.out_channels * 2;
    parallel_for(images * ranges, cost, [&](int64_t first, int64_t last) {
      const int64_t go_floats = int64_t{opad} * kTile;
      std::vector<float> go_tiles(geo.groups * go_floats, 0.f);
      // Column gradients of kRows pixels at a time (so that they stay in cache for the scatter):
      // group g's row q at columns + g * ld_group + q * ld_row.
      const int64_t ld_row = int64_t{strips} * kNR, ld_group = kRows * ld_row;
      std::vector<float> columns(geo.groups * ld_group);
      const std::vector<T> zeros(geo.channels, T(0.f));  // corners outside read these
      std::vector<float> trash(geo.channels);            // and scatter to these
      for (int64_t unit = first; unit < last; ++unit) {
        const int64_t n_local = unit / ranges;
        const int r = static_cast<int>(unit % ranges);
        const int64_t n = chunk_begin + n_local;
        float* acc = r == 0 ? image_grad(n_local) : range_grad(n_local, r);
        std::fill_n(acc, image_elements, 0.f);
        const T* image = input + n * image_elements;
        for (int64_t tile = image_tiles * r / ranges; tile < image_tiles * (r + 1) / ranges;
             ++tile) {
          const int64_t begin = n * image_pixels + tile * kTile;
          const int rows = static_cast<int>(std::min<int64_t>(kTile, image_pixels - tile * kTile));
          for (int g = 0; g < geo.groups; ++g) {
            LoadBlockedTile(grad_output + begin * geo.out_channels + g * geo.cog, geo.out_channels,
                            rows, geo.cog, go_tiles.data() + g * go_floats);
          }
          for (int row0 = 0; row0 < rows; row0 += kRows) {
            const int block_rows = std::min(kRows, rows - row0);
            for (int g = 0; g < geo.groups; ++g) {
              MultiplyTile(go_tiles.data() + g * go_floats + row0 * kDepthBlock, kTile,
                           opad / kDepthBlock, buffers.weights + g * group_panels, strips,
                           block_rows, columns.data() + g * ld_group, ld_row);
            }
            for (int q = 0; q < block_rows; ++q) {
              ScatterPixel(s, geo, begin + row0 + q, image, offset, mask,
                           columns.data() + q * ld_row, ld_group, acc, zeros.data(), trash.data(),
                           grad_offset, grad_mask);
            }
          }
        }
        if (!kFloat && ranges == 1) {  // the image is complete: convert it while in cache
          ConvertFromFloat(acc, image_elements, grad_input + n * image_elements);
        }
      }
    });

    // Add the further ranges' buffers to the first in order, and convert.
    if (ranges == 1) continue;
    const int64_t block = 4096;
    const int64_t blocks = (image_elements + block - 1) / block;
    parallel_for(images * blocks, block * ranges, [&](int64_t first, int64_t last) {
      for (int64_t unit = first; unit < last; ++unit) {
        const int64_t n_local = unit / blocks;
        const int64_t begin = unit % blocks * block;
        const int64_t count = std::min(block, image_elements - begin);
        float* sum = image_grad(n_local) + begin;
        for (int r = 1; r < ranges; ++r) {
          const float* more = range_grad(n_local, r) + begin;
          int64_t i = 0;
          for (; i + kLanes <= count; i += kLanes) Store(sum + i, Load(sum + i) + Load(more + i));
          for (; i < count; ++i) sum[i] += more[i];
        }
        if constexpr (!kFloat) {
          ConvertFromFloat(sum, count,
                           grad_input + (chunk_begin + n_local) * image_elements + begin);
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
      const BackwardInputBuffers buffers(s, geo, std::is_same_v<T, float>, &w);
      break;
    }
    case Op::kBackwardWeight: {
      const BackwardWeightBuffers buffers(s, geo, &w);
      break;
    }
  }
  return w.bytes();
}
