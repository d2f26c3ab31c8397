#include "tensorflow_dcn/cc/core/plan.h"

#include <atomic>
#include <cstdlib>
#include <cstring>

namespace tensorflow_dcn {
namespace {

std::atomic<int64_t> run_counts[kNumOps][kNumImplementations];

}  // namespace

const char* ImplementationName(Implementation implementation) {
  switch (implementation) {
    case Implementation::kCpuIm2col:
      return "cpu_im2col";
    case Implementation::kCudaIm2col:
      return "cuda_im2col";
    case Implementation::kCudaFusedSm80:
      return "cuda_fused_sm80";
    case Implementation::kCpuTiled:
      return "cpu_tiled";
    case Implementation::kCudaWgmmaSm90a:
      return "cuda_wgmma_sm90a";
  }
  return "?";
}

std::string ReadKernelChoice(KernelChoice* choice) {
  const char* value = std::getenv("TFDCN_KERNELS");
  if (value == nullptr || value[0] == '\0' || std::strcmp(value, "auto") == 0) {
    *choice = KernelChoice::kAuto;
  } else if (std::strcmp(value, "im2col") == 0) {
    *choice = KernelChoice::kIm2col;
  } else if (std::strcmp(value, "portable") == 0) {
    *choice = KernelChoice::kPortable;
  } else {
    return std::string("TFDCN_KERNELS must be 'auto', 'im2col' or 'portable', got '") + value + "'";
  }
  return "";
}

void RecordRun(Op op, Implementation implementation) {
  run_counts[static_cast<int>(op)][static_cast<int>(implementation)].fetch_add(
      1, std::memory_order_relaxed);
}

std::vector<std::pair<std::string, int64_t>> RunCounts() {
  std::vector<std::pair<std::string, int64_t>> counts;
  for (int op = 0; op < kNumOps; ++op) {
    for (int i = 0; i < kNumImplementations; ++i) {
      const int64_t n = run_counts[op][i].load(std::memory_order_relaxed);
      if (n == 0) continue;
      counts.emplace_back(std::string(OpName(static_cast<Op>(op))) + "/" +
                              ImplementationName(static_cast<Implementation>(i)),
                          n);
    }
  }
  return counts;
}

void ResetRunCounts() {
  for (auto& per_op : run_counts) {
    for (auto& count : per_op) count.store(0, std::memory_order_relaxed);
  }
}

}  // namespace tensorflow_dcn
