// Microbenchmark: how fast can the backward input's scatter reach L2?  8x64x64 pixels x 9 taps,
// C channels, 4 bilinear corners each, float accumulation, random offsets (std 2 px).
#include <cstdio>
#include <cstdint>
#include <vector>
#include <random>
#include <cuda_runtime.h>
#define CK(x) do { cudaError_t e = (x); if (e != cudaSuccess) { printf("%s:%d %s\n", __FILE__, __LINE__, cudaGetErrorString(e)); return 1; } } while (0)

struct Sample { int base; float w[4]; };  // base = (n*H + y0)*W + x0 (pixel index); corners +0,+1,+W,+W+1

template <int C>
__global__ void RedV4(const Sample* samples, int count, int W, float* grad) {
  int warp = (blockIdx.x * blockDim.x + threadIdx.x) / 32, lane = threadIdx.x % 32;
  int warps = gridDim.x * blockDim.x / 32;
  for (int s = warp; s < count; s += warps) {
    Sample sm = samples[s];
    const int pix[4] = {sm.base, sm.base + 1, sm.base + W, sm.base + W + 1};
#pragma unroll
    for (int k = 0; k < 4; ++k) {
#pragma unroll
      for (int c = lane * 4; c < C; c += 128) {
        float* p = grad + (int64_t)pix[k] * C + c;
        float v = sm.w[k] * (c + 1);
        asm volatile("red.global.add.v4.f32 [%0], {%1, %2, %3, %4};" :: "l"(p), "f"(v), "f"(v), "f"(v), "f"(v) : "memory");
      }
    }
  }
}

template <int C>
__global__ void StoreV4(const Sample* samples, int count, int W, float* grad) {
  int warp = (blockIdx.x * blockDim.x + threadIdx.x) / 32, lane = threadIdx.x % 32;
  int warps = gridDim.x * blockDim.x / 32;
  for (int s = warp; s < count; s += warps) {
    Sample sm = samples[s];
    const int pix[4] = {sm.base, sm.base + 1, sm.base + W, sm.base + W + 1};
#pragma unroll
    for (int k = 0; k < 4; ++k) {
#pragma unroll
      for (int c = lane * 4; c < C; c += 128) {
        float v = sm.w[k] * (c + 1);
        *reinterpret_cast<float4*>(grad + (int64_t)pix[k] * C + c) = make_float4(v, v, v, v);
      }
    }
  }
}

// kPairs: corners (y0,x0)+(y0,x0+1) are contiguous 2C floats: 2 bulk ops per sample; else 4.
template <int C, bool kPairs>
__global__ void Bulk(const Sample* samples, int count, int W, float* grad) {
  constexpr int kBatch = C >= 512 ? 4 : 2048 / C;  // samples per stage
  constexpr int kFloats = kBatch * 4 * C;    // per stage
  extern __shared__ __align__(128) float buf[];
  int stage = 0;
  const int per_block = (count + gridDim.x - 1) / gridDim.x;
  const int begin = blockIdx.x * per_block, end = min(count, begin + per_block);
  for (int s0 = begin; s0 < end; s0 += kBatch) {
    float* b = buf + stage * kFloats;
    // the stage was read by the bulk ops issued two batches ago
    if (threadIdx.x == 0) asm volatile("cp.async.bulk.wait_group.read 1;" ::: "memory");
    __syncthreads();
    for (int i = threadIdx.x; i < kBatch * 4 * C; i += blockDim.x) {
      int j = i / (4 * C), k = (i / C) % 4, c = i % C;
      int s = s0 + j;
      float w = s < end ? samples[s].w[k] : 0.f;
      b[i] = w * (c + 1);
    }
    asm volatile("fence.proxy.async.shared::cta;" ::: "memory");
    __syncthreads();
    if (threadIdx.x < kBatch * (kPairs ? 2 : 4)) {
      int j = threadIdx.x / (kPairs ? 2 : 4), k = threadIdx.x % (kPairs ? 2 : 4);
      int s = s0 + j;
      if (s < end) {
        int base = samples[s].base;
        int pix, bytes; const float* src;
        if (kPairs) { pix = base + k * W; bytes = 2 * C * 4; src = b + (j * 4 + 2 * k) * C; }
        else { pix = base + (k & 1) + (k >> 1) * W; bytes = C * 4; src = b + (j * 4 + k) * C; }
        uint32_t saddr = static_cast<uint32_t>(__cvta_generic_to_shared(src));
        asm volatile("cp.reduce.async.bulk.global.shared::cta.bulk_group.add.f32 [%0], [%1], %2;"
                     :: "l"(grad + (int64_t)pix * C), "r"(saddr), "r"(bytes) : "memory");
      }
      asm volatile("cp.async.bulk.commit_group;" ::: "memory");
    }
    stage ^= 1;
  }
  if (threadIdx.x < 64) asm volatile("cp.async.bulk.wait_group 0;" ::: "memory");
}

template <int C>
int Run(int N, int H, int Wd) {
  const int T = 9; const int P = N * H * Wd; const int count = P * T;
  std::mt19937 rng(1); std::normal_distribution<float> nd(0.f, 2.f); std::uniform_real_distribution<float> u(0, 1);
  std::vector<Sample> hs(count);
  for (int p = 0; p < P; ++p) for (int t = 0; t < T; ++t) {
    int n = p / (H * Wd), oy = p / Wd % H, ox = p % Wd;
    float y = oy + t / 3 - 1 + nd(rng), x = ox + t % 3 - 1 + nd(rng);
    int y0 = min(max((int)floorf(y), 0), H - 2), x0 = min(max((int)floorf(x), 0), Wd - 2);
    float m = u(rng);
    hs[p * T + t] = Sample{(n * H + y0) * Wd + x0, {m * .25f, m * .25f, m * .25f, m * .25f}};
  }
  Sample* ds; float* grad;
  CK(cudaMalloc(&ds, count * sizeof(Sample))); CK(cudaMalloc(&grad, (size_t)P * C * 4));
  CK(cudaMemcpy(ds, hs.data(), count * sizeof(Sample), cudaMemcpyHostToDevice));
  cudaEvent_t e0, e1; cudaEventCreate(&e0); cudaEventCreate(&e1);
  int sms; cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, 0);
  auto time = [&](const char* name, auto launch) {
    CK(cudaMemset(grad, 0, (size_t)P * C * 4));
    launch(); CK(cudaDeviceSynchronize());
    float best = 1e9;
    for (int r = 0; r < 10; ++r) { cudaEventRecord(e0); launch(); cudaEventRecord(e1); cudaEventSynchronize(e1); float ms; cudaEventElapsedTime(&ms, e0, e1); best = fminf(best, ms); }
    CK(cudaGetLastError());
    double bytes = (double)count * 4 * C * 4;
    printf("N=%d H=%d W=%d C=%d %-12s %8.1f us  %7.0f GB/s of reductions\n", N, H, Wd, C, name, best * 1e3, bytes / best / 1e6);
    return 0;
  };
  time("red.v4", [&] { RedV4<C><<<sms * 8, 256>>>(ds, count, Wd, grad); });
  time("store.v4", [&] { StoreV4<C><<<sms * 8, 256>>>(ds, count, Wd, grad); });
  int smem = 2 * (C >= 512 ? 4 : 2048 / C) * 4 * C * 4;
  cudaFuncSetAttribute(Bulk<C, true>, cudaFuncAttributeMaxDynamicSharedMemorySize, smem);
  cudaFuncSetAttribute(Bulk<C, false>, cudaFuncAttributeMaxDynamicSharedMemorySize, smem);
  for (int bpsm : {1, 2, 4}) {
    if (smem * bpsm > 200 * 1024) continue;
    char n1[32], n2[32]; snprintf(n1, 32, "bulk-pair/%d", bpsm); snprintf(n2, 32, "bulk-1/%d", bpsm);
    time(n1, [&] { Bulk<C, true><<<sms * bpsm, 256, smem>>>(ds, count, Wd, grad); });
    time(n2, [&] { Bulk<C, false><<<sms * bpsm, 256, smem>>>(ds, count, Wd, grad); });
  }
  cudaFree(ds); cudaFree(grad);
  return 0;
}

int main() {
  Run<128>(8, 64, 64);
  Run<256>(8, 32, 32);
  Run<512>(4, 32, 32);
  return 0;
}
