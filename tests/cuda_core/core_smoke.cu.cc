// A PyTorch-free driver of the CUDA core, small enough to run under compute-sanitizer (memcheck,
// racecheck): for each dtype and a few small shapes (both tiles of the sm_90a kernel, pixels and
// channels off the tile sizes, groups, deformable groups, offsets far outside the image and
// NaN), the forward's auto plan against the portable plan and the backward ops' auto plans
// (the backward weight's is cuda_wgmma_sm90a on Hopper) against im2col, on the same inputs,
// results poisoned before each run.
// Accuracy against float64 is check_core.py's job; this checks that the plans agree and write
// every element.
//
//   .devbuild/core_smoke [profile]  (built by tests/cuda_core/build.sh; `profile`: two
//                                   benchmark-sized fp16 forwards only, for ncu)
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <random>
#include <vector>

extern "C" {
size_t dcn_workspace_bytes(int dtype, int op, const long long* dims, int flags);
const char* dcn_implementation(int dtype, int op, const long long* dims, int flags);
int dcn_sm90a_available();
int dcn_run(int dtype, int op, const long long* dims, void** ptrs, void* workspace, int flags,
            void* stream);
const char* dcn_error_string(int err);
}

namespace {

int failures = 0;

#define CHECK_CUDA(expr)                                                                   \
  do {                                                                                     \
    const cudaError_t e_ = (expr);                                                         \
    if (e_ != cudaSuccess) {                                                               \
      std::printf("CUDA error %s at %s:%d\n", cudaGetErrorString(e_), __FILE__, __LINE__); \
      std::exit(2);                                                                        \
    }                                                                                      \
  } while (0)

template <typename T>
T FromFloat(float v) {
  if constexpr (std::is_same_v<T, __half>)
    return __float2half(v);
  else if constexpr (std::is_same_v<T, __nv_bfloat16>)
    return __float2bfloat16(v);
  else
    return v;
}
template <typename T>
float ToFloat(T v) {
  if constexpr (std::is_same_v<T, __half>)
    return __half2float(v);
  else if constexpr (std::is_same_v<T, __nv_bfloat16>)
    return __bfloat162float(v);
  else
    return v;
}

struct Config {
  int n, h, w, c, cout, k, stride, pad, groups, dg;
};

template <typename T>
T* Upload(const std::vector<float>& host) {
  std::vector<T> converted(host.size());
  for (size_t i = 0; i < host.size(); ++i) converted[i] = FromFloat<T>(host[i]);
  T* dev = nullptr;
  CHECK_CUDA(cudaMalloc(&dev, converted.size() * sizeof(T) + 16));
  CHECK_CUDA(
      cudaMemcpy(dev, converted.data(), converted.size() * sizeof(T), cudaMemcpyHostToDevice));
  return dev;
}

// Runs `op` with the given flags on poisoned results (operands[first_result...], of the given
// element counts); returns the results (as float), one after the other.
template <typename T>
std::vector<float> Run(int dtype, int op, const long long* dims, void** operands, int first_result,
                       const std::vector<size_t>& result_elems, int flags,
                       const char** implementation) {
  for (size_t r = 0; r < result_elems.size(); ++r) {  // NaN in every dtype
    CHECK_CUDA(cudaMemset(operands[first_result + r], 0xFF, result_elems[r] * sizeof(T)));
  }
  *implementation = dcn_implementation(dtype, op, dims, flags);
  const size_t ws_bytes = dcn_workspace_bytes(dtype, op, dims, flags);
  void* ws = nullptr;
  CHECK_CUDA(cudaMalloc(&ws, ws_bytes > 0 ? ws_bytes : 1));
  const int err = dcn_run(dtype, op, dims, operands, ws, flags, nullptr);
  if (err != 0) {
    std::printf("dcn_run failed: %s\n", dcn_error_string(err));
    std::exit(2);
  }
  CHECK_CUDA(cudaDeviceSynchronize());
  CHECK_CUDA(cudaFree(ws));
  std::vector<float> result;
  for (size_t r = 0; r < result_elems.size(); ++r) {
    std::vector<T> host(result_elems[r]);
    CHECK_CUDA(cudaMemcpy(host.data(), operands[first_result + r], host.size() * sizeof(T),
                          cudaMemcpyDeviceToHost));
    for (const T& v : host) result.push_back(ToFloat(v));
  }
  return result;
}

// Relative L2 difference and count of non-finite values of two runs' results.
void Compare(const std::vector<float>& a, const std::vector<float>& b, double* rel,
             size_t* non_finite) {
  double diff = 0, norm = 0;
  *non_finite = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    if (!std::isfinite(a[i]) || !std::isfinite(b[i])) ++*non_finite;
    diff += double(a[i] - b[i]) * (a[i] - b[i]);
    norm += double(b[i]) * b[i];
  }
  *rel = std::sqrt(diff / norm);
}

template <typename T>
void Check(int dtype, const char* name, const Config& cfg, float tolerance, bool tf32 = true) {
  const int ho = (cfg.h + 2 * cfg.pad - cfg.k) / cfg.stride + 1;
  const int wo = (cfg.w + 2 * cfg.pad - cfg.k) / cfg.stride + 1;
  const long long dims[19] = {cfg.n, cfg.h,      cfg.w,      cfg.c,      ho,      wo,      cfg.cout,
                              cfg.k, cfg.k,      cfg.stride, cfg.stride, cfg.pad, cfg.pad, 1,
                              1,     cfg.groups, cfg.dg,     1,          1};
  std::mt19937 rng(1234);
  std::normal_distribution<float> normal;
  std::uniform_real_distribution<float> uniform(0.f, 1.f);
  const size_t taps = size_t(cfg.k) * cfg.k, pixels = size_t(cfg.n) * ho * wo;
  std::vector<float> input(size_t(cfg.n) * cfg.h * cfg.w * cfg.c),
      offset(pixels * cfg.dg * taps * 2), mask(pixels * cfg.dg * taps),
      weight(taps * (cfg.c / cfg.groups) * cfg.cout), bias(cfg.cout),
      grad_output(pixels * cfg.cout);
  for (float& v : input) v = normal(rng);
  for (size_t i = 0; i < offset.size(); ++i) {
    offset[i] = 6.f * (uniform(rng) - 0.5f);
    if (i % 97 == 0) offset[i] = NAN;   // samples that read zero
    if (i % 89 == 0) offset[i] = 1e7f;  // far outside the image
    if (i % 83 == 0) offset[i] = -INFINITY;
  }
  for (float& v : mask) v = uniform(rng);
  for (float& v : weight) v = normal(rng) / std::sqrt(float(taps * cfg.c / cfg.groups));
  for (float& v : bias) v = normal(rng);
  for (float& v : grad_output) v = normal(rng);
  const size_t out_elems = pixels * cfg.cout;
  void* forward[6] = {Upload<T>(input),  Upload<T>(offset), Upload<T>(mask),
                      Upload<T>(weight), Upload<T>(bias),   nullptr};
  CHECK_CUDA(cudaMalloc(&forward[5], out_elems * sizeof(T)));
  void* backward_weight[6] = {
      Upload<T>(grad_output), forward[0], forward[1], forward[2], nullptr, nullptr};
  CHECK_CUDA(cudaMalloc(&backward_weight[4], weight.size() * sizeof(T)));
  CHECK_CUDA(cudaMalloc(&backward_weight[5], bias.size() * sizeof(T)));
  void* backward_input[8] = {backward_weight[0], forward[0], forward[1], forward[2],
                             forward[3],         nullptr,    nullptr,    nullptr};
  CHECK_CUDA(cudaMalloc(&backward_input[5], input.size() * sizeof(T)));
  CHECK_CUDA(cudaMalloc(&backward_input[6], offset.size() * sizeof(T)));
  CHECK_CUDA(cudaMalloc(&backward_input[7], mask.size() * sizeof(T)));

  // The forward: auto against portable (the sm_90a kernel on Hopper); the backward ops: auto
  // against im2col. flags: TF32 | choice << 2 (1 im2col, 2 portable).
  struct Pair {
    const char* what;
    int op;
    void** operands;
    int first_result;
    std::vector<size_t> elems;
    int other_flags;
  };
  const Pair pairs[] = {
      {"forward", 0, forward, 5, {out_elems}, tf32 | (2 << 2)},
      {"backward input",
       1,
       backward_input,
       5,
       {input.size(), offset.size(), mask.size()},
       tf32 | (1 << 2)},
      {"backward weight", 2, backward_weight, 4, {weight.size(), bias.size()}, tf32 | (1 << 2)},
  };
  for (const Pair& pair : pairs) {
    const char *auto_impl, *other_impl;
    const std::vector<float> fast = Run<T>(dtype, pair.op, dims, pair.operands, pair.first_result,
                                           pair.elems, tf32, &auto_impl);
    const std::vector<float> other = Run<T>(dtype, pair.op, dims, pair.operands, pair.first_result,
                                            pair.elems, pair.other_flags, &other_impl);
    double rel;
    size_t non_finite;
    Compare(fast, other, &rel, &non_finite);
    const bool ok = non_finite == 0 && rel <= tolerance;
    failures += !ok;
    std::printf(
        "smoke %-15s %-5s %dx%dx%dx%d cout %d stride %d groups %d dg %d: %s vs %s rel %.2e "
        "non-finite %zu %s\n",
        pair.what, name, cfg.n, cfg.h, cfg.w, cfg.c, cfg.cout, cfg.stride, cfg.groups, cfg.dg,
        auto_impl, other_impl, rel, non_finite, ok ? "ok" : "FAIL");
  }
  for (void* p : forward) CHECK_CUDA(cudaFree(p));
  for (int i : {0, 4, 5}) CHECK_CUDA(cudaFree(backward_weight[i]));
  for (int i : {5, 6, 7}) CHECK_CUDA(cudaFree(backward_input[i]));
}

}  // namespace

// One forward of each benchmark-like shape in fp16 with the auto plan, for ncu.
void Profile() {
  const Config configs[] = {{4, 32, 32, 512, 512, 3, 1, 1, 1, 1},
                            {8, 64, 64, 128, 128, 3, 1, 1, 1, 1}};
  for (const Config& c : configs) Check<__half>(0, "fp16", c, 5e-3f);
}

int main(int argc, char** argv) {
  if (argc > 1 && std::strcmp(argv[1], "profile") == 0) {
    Profile();
    return failures ? 1 : 0;
  }
  int driver = 0, runtime = 0;
  CHECK_CUDA(cudaDriverGetVersion(&driver));
  CHECK_CUDA(cudaRuntimeGetVersion(&runtime));
  std::printf("driver %d, runtime %d, sm_90a kernels available: %d\n", driver, runtime,
              dcn_sm90a_available());
  const Config configs[] = {
      {2, 9, 11, 64, 72, 3, 1, 1, 1, 1},    // 128 x 128 tile, 198 pixels
      {1, 10, 7, 128, 300, 3, 2, 1, 1, 2},  // 64 x 256 tile, two channel tiles, stride 2
      {1, 8, 8, 128, 64, 3, 1, 1, 2, 2},    // groups
      {1, 9, 8, 128, 160, 2, 1, 0, 1, 2},   // 4 taps (an even count), 64 x 256 tile
      {1, 7, 9, 64, 40, 1, 1, 0, 1, 1},     // 1 tap
  };
  for (const Config& c : configs) {
    Check<__half>(0, "fp16", c, 5e-3f);
    Check<__nv_bfloat16>(1, "bf16", c, 3e-2f);
    Check<float>(2, "tf32", c, 5e-3f);
    Check<float>(2, "fp32", c, 1e-5f, /*tf32=*/false);  // 3xTF32 on Hopper
  }
  std::printf("smoke failures: %d\n", failures);
  return failures ? 1 : 0;
}
