// DCNv2RunCounts: which implementations of the core ran, and how often, in this process (see
// core/plan.h). Tests and the benchmark read it to know which kernels ran, also inside
// XLA-compiled programs.
#include <string>
#include <utility>
#include <vector>

#include "tensorflow/core/framework/common_shape_fns.h"
#include "tensorflow/core/framework/op.h"
#include "tensorflow/core/framework/op_kernel.h"
#include "tensorflow/core/framework/tensor.h"
#include "tensorflow_dcn/cc/core/plan.h"

namespace tensorflow_dcn {
namespace {

class RunCountsOp : public tensorflow::OpKernel {
 public:
  explicit RunCountsOp(tensorflow::OpKernelConstruction* ctx) : OpKernel(ctx) {
    OP_REQUIRES_OK(ctx, ctx->GetAttr("reset", &reset_));
  }

  void Compute(tensorflow::OpKernelContext* ctx) override {
    const std::vector<std::pair<std::string, int64_t>> counts = RunCounts();
    if (reset_) ResetRunCounts();
    const int64_t n = static_cast<int64_t>(counts.size());
    tensorflow::Tensor *names, *values;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, {n}, &names));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(1, {n}, &values));
    for (int64_t i = 0; i < n; ++i) {
      names->flat<tensorflow::tstring>()(i) = counts[i].first;
      values->flat<int64_t>()(i) = counts[i].second;
    }
  }

 private:
  bool reset_;
};

}  // namespace
}  // namespace tensorflow_dcn

REGISTER_OP("DCNv2RunCounts")
    .Output("names: string")
    .Output("counts: int64")
    .Attr("reset: bool = false")
    .SetIsStateful()
    .SetShapeFn([](tensorflow::shape_inference::InferenceContext* c) {
      c->set_output(0, c->Vector(c->UnknownDim()));
      c->set_output(1, c->Vector(c->UnknownDim()));
      return absl::OkStatus();
    })
    .Doc(R"doc(
Runs of the DCNv2 ops per implementation in this process, as "DCNv2Forward/cuda_fused_sm80"
names and their counts (only those that ran); reset=true sets the counts back to zero after
reading them.
)doc");

REGISTER_KERNEL_BUILDER(Name("DCNv2RunCounts").Device(tensorflow::DEVICE_CPU),
                        tensorflow_dcn::RunCountsOp);
