// The XLA FFI handlers of the DCNv2 custom calls (custom_calls.h), registered when the library
// is loaded: "Host" handlers run the CPU core on XLA's intra-op thread pool, "CUDA" handlers
// the CUDA core on XLA's stream with scratch memory from XLA's allocator. Like the OpKernels,
// they are thin: decode the call, check the problem, plan, run.
#include <algorithm>
#include <atomic>
#include <memory>
#include <string>
#include <thread>

#include "tensorflow_dcn/cc/core/cpu/cpu_core.h"
#include "tensorflow_dcn/cc/core/plan.h"
#include "tensorflow_dcn/cc/core/problem.h"
#include "tensorflow_dcn/cc/core/workspace.h"
#include "tensorflow_dcn/cc/xla/custom_calls.h"
#include "xla/ffi/api/ffi.h"
#if GOOGLE_CUDA
#include "tensorflow_dcn/cc/core/cuda/cuda_core.h"
#endif

namespace tensorflow_dcn {
namespace {

namespace ffi = xla::ffi;

ffi::Error InvalidArgument(const std::string& message) {
  return ffi::Error(ffi::ErrorCode::kInvalidArgument, message);
}

// The element type of a call, or false for one the kernels are not instantiated for.
bool DTypeOf(ffi::DataType t, DType* dtype) {
  switch (t) {
    case ffi::DataType::F16:
      *dtype = DType::kHalf;
      return true;
    case ffi::DataType::BF16:
      *dtype = DType::kBFloat16;
      return true;
    case ffi::DataType::F32:
      *dtype = DType::kFloat;
      return true;
    case ffi::DataType::F64:
      *dtype = DType::kDouble;
      return true;
    default:
      return false;
  }
}

Dims DimsOf(const ffi::AnyBuffer& buffer) {
  Dims d;
  const auto dimensions = buffer.dimensions();
  d.rank = static_cast<int>(dimensions.size());
  for (int i = 0; i < d.rank && i < 8; ++i) d.size[i] = dimensions[i];
  return d;
}

// A decoded call: attributes, math settings, the checked problem and its element type.
struct Call {
  Attrs attrs;
  xla_lowering::MathSettings math;
  DcnShape shape;
  DType dtype;
};

// Reads the attributes and checks the operands, as the lowering did when it compiled the op.
ffi::Error Decode(Op op, const ffi::Dictionary& dictionary, OperandDims dims, ffi::DataType type,
                  Call* call) {
  std::string missing;
  xla_lowering::ForEachAttribute(call->attrs, call->math, [&](const char* name, auto& field) {
    const ffi::ErrorOr<int64_t> value = dictionary.get<int64_t>(name);
    if (value.has_error()) {
      missing += std::string(missing.empty() ? "" : ", ") + name;
    } else {
      field = static_cast<std::remove_reference_t<decltype(field)>>(value.value());
    }
  });
  if (!missing.empty()) return InvalidArgument(std::string(OpName(op)) + ": missing " + missing);
  if (!call->attrs.has_mask) dims.mask = Dims();
  if (op != Op::kForward || !call->attrs.has_bias) dims.bias = Dims();
  if (!DTypeOf(type, &call->dtype)) {
    return InvalidArgument(std::string(OpName(op)) + ": unsupported element type");
  }
  const std::string message = CheckProblem(op, call->attrs, dims, &call->shape);
  if (!message.empty()) return InvalidArgument(std::string(OpName(op)) + ": " + message);
  return ffi::Error::Success();
}

void* DataOrNull(const ffi::AnyBuffer& buffer, bool present) {
  return present ? buffer.untyped_data() : nullptr;
}

// ---------------------------------------------------------------------------------------------
// Host handlers: the CPU core, its parallel-for over XLA's intra-op thread pool.
// ---------------------------------------------------------------------------------------------

// Splits [0, units) into ranges that the calling thread and the pool's threads take in turn.
// The caller works too and waits only for ranges already taken, so a busy or missing pool never
// deadlocks it.
cpu::ParallelFor PoolParallelFor(ffi::ThreadPool* pool) {
  return [pool](int64_t units, int64_t cost_per_unit,
                const std::function<void(int64_t, int64_t)>& fn) {
    if (units <= 0) return;
    constexpr int64_t kMinCostPerRange = 100000;  // about 50 us: keeps scheduling overhead small
    const int64_t threads = std::max<int64_t>(1, pool->num_threads()) + 1;
    const int64_t min_units =
        std::max<int64_t>(1, kMinCostPerRange / std::max<int64_t>(cost_per_unit, 1));
    const int64_t wanted = std::clamp<int64_t>(units / min_units, 1, 4 * threads);
    const int64_t per_range = (units + wanted - 1) / wanted;
    const int64_t ranges = (units + per_range - 1) / per_range;  // none of them empty
    if (ranges == 1) {
      fn(0, units);
      return;
    }
    struct State {
      std::atomic<int64_t> next{0}, done{0};
    };
    auto state = std::make_shared<State>();
    auto work = [state, ranges, per_range, units, &fn] {
      for (int64_t r; (r = state->next.fetch_add(1)) < ranges;) {
        fn(r * per_range, std::min(units, (r + 1) * per_range));
        state->done.fetch_add(1, std::memory_order_release);
      }
    };
    // `fn` outlives every range: the caller returns only when all ranges are done, and tasks
    // that start later find none left and touch only the shared state.
    for (int64_t i = 1; i < std::min(threads, ranges); ++i) pool->Schedule([work] { work(); });
    work();
    // Only ranges other threads are still running remain: wait for them without a condition
    // variable (whose libstdc++ symbol is newer than manylinux_2_27 allows).
    while (state->done.load(std::memory_order_acquire) < ranges) std::this_thread::yield();
  };
}

// Host memory for the CPU core's workspace.
struct HostWorkspace {
  explicit HostWorkspace(size_t bytes) : storage(new char[bytes + WorkspaceLayout::kAlignment]) {}
  void* data() { return WorkspaceLayout::AlignUp(storage.get()); }
  std::unique_ptr<char[]> storage;
};

template <typename Args>
ffi::Error RunOnHost(Op op, const Call& call, const Args& args, ffi::ThreadPool& pool) {
  cpu::Options options;
  const std::string bad_choice = ReadKernelChoice(&options.choice);
  if (!bad_choice.empty()) return InvalidArgument(bad_choice);
  const Plan plan = cpu::MakePlan(op, call.dtype, call.shape, options);
  HostWorkspace workspace(plan.workspace_bytes);
  const cpu::ParallelFor parallel_for = PoolParallelFor(&pool);
  cpu::Run(plan, call.dtype, call.shape, args, workspace.data(), parallel_for);
  return ffi::Error::Success();
}

// ---------------------------------------------------------------------------------------------
// The three ops, for any runner (host or CUDA): decode, check, skip empty work, run.
// ---------------------------------------------------------------------------------------------

template <typename Runner>
ffi::Error Forward(Runner&& run, ffi::AnyBuffer input, ffi::AnyBuffer offset, ffi::AnyBuffer mask,
                   ffi::AnyBuffer weight, ffi::AnyBuffer bias, ffi::Result<ffi::AnyBuffer> output,
                   const ffi::Dictionary& attrs) {
  OperandDims dims;
  dims.input = DimsOf(input);
  dims.offset = DimsOf(offset);
  dims.mask = DimsOf(mask);
  dims.weight = DimsOf(weight);
  dims.bias = DimsOf(bias);
  Call call;
  if (ffi::Error e = Decode(Op::kForward, attrs, dims, input.element_type(), &call); e.failure()) {
    return e;
  }
  if (call.shape.pixels() == 0) return ffi::Error::Success();
  const ForwardArgs args{input.untyped_data(),
                         offset.untyped_data(),
                         DataOrNull(mask, call.attrs.has_mask),
                         weight.untyped_data(),
                         DataOrNull(bias, call.attrs.has_bias),
                         output->untyped_data()};
  return run(Op::kForward, call, args);
}

template <typename Runner>
ffi::Error BackwardInput(Runner&& run, ffi::AnyBuffer grad_output, ffi::AnyBuffer input,
                         ffi::AnyBuffer offset, ffi::AnyBuffer mask, ffi::AnyBuffer weight,
                         ffi::Result<ffi::AnyBuffer> grad_input,
                         ffi::Result<ffi::AnyBuffer> grad_offset,
                         ffi::Result<ffi::AnyBuffer> grad_mask, const ffi::Dictionary& attrs) {
  OperandDims dims;
  dims.grad_output = DimsOf(grad_output);
  dims.input = DimsOf(input);
  dims.offset = DimsOf(offset);
  dims.mask = DimsOf(mask);
  dims.weight = DimsOf(weight);
  Call call;
  if (ffi::Error e = Decode(Op::kBackwardInput, attrs, dims, input.element_type(), &call);
      e.failure()) {
    return e;
  }
  if (call.shape.pixels() == 0) return ffi::Error::Success();
  const BackwardInputArgs args{
      grad_output.untyped_data(),  input.untyped_data(),
      offset.untyped_data(),       DataOrNull(mask, call.attrs.has_mask),
      weight.untyped_data(),       grad_input->untyped_data(),
      grad_offset->untyped_data(), DataOrNull(*grad_mask, call.attrs.has_mask)};
  return run(Op::kBackwardInput, call, args);
}

template <typename Runner>
ffi::Error BackwardWeight(Runner&& run, ffi::AnyBuffer grad_output, ffi::AnyBuffer input,
                          ffi::AnyBuffer offset, ffi::AnyBuffer mask,
                          ffi::Result<ffi::AnyBuffer> grad_weight,
                          ffi::Result<ffi::AnyBuffer> grad_bias, const ffi::Dictionary& attrs) {
  OperandDims dims;
  dims.grad_output = DimsOf(grad_output);
  dims.input = DimsOf(input);
  dims.offset = DimsOf(offset);
  dims.mask = DimsOf(mask);
  Call call;
  if (ffi::Error e = Decode(Op::kBackwardWeight, attrs, dims, input.element_type(), &call);
      e.failure()) {
    return e;
  }
  // With an empty batch the gradients are zero: the core writes them.
  const BackwardWeightArgs args{
      grad_output.untyped_data(),  input.untyped_data(),
      offset.untyped_data(),       DataOrNull(mask, call.attrs.has_mask),
      grad_weight->untyped_data(), DataOrNull(*grad_bias, call.attrs.has_bias)};
  return run(Op::kBackwardWeight, call, args);
}

// The bindings: context first, then kArgs operands and kRets results in the custom call's order,
// then the attribute dictionary.
template <int kArgs, int kRets, typename Binding>
auto OpBinding(Binding binding) {
  if constexpr (kArgs > 0) {
    return OpBinding<kArgs - 1, kRets>(std::move(binding).template Arg<ffi::AnyBuffer>());
  } else if constexpr (kRets > 0) {
    return OpBinding<0, kRets - 1>(std::move(binding).template Ret<ffi::AnyBuffer>());
  } else {
    return std::move(binding).template Attrs<ffi::Dictionary>();
  }
}

// The op function of `kOp`, called with a runner and the decoded operands and results.
template <Op kOp, typename Runner, typename... Decoded>
ffi::Error RunOp(Runner&& run, Decoded... decoded) {
  if constexpr (kOp == Op::kForward) {
    return Forward(run, decoded...);
  } else if constexpr (kOp == Op::kBackwardInput) {
    return BackwardInput(run, decoded...);
  } else {
    return BackwardWeight(run, decoded...);
  }
}

// "Host": the pool comes first.
template <Op kOp>
struct HostHandler {
  ffi::Error operator()(ffi::ThreadPool pool, auto... decoded) const {
    auto run = [&pool](Op op, const Call& call, const auto& args) {
      return RunOnHost(op, call, args, pool);
    };
    return RunOp<kOp>(run, decoded...);
  }
};

auto HostContext() { return ffi::Ffi::Bind().Ctx<ffi::ThreadPool>(); }

XLA_FFI_DEFINE_HANDLER(kHostForward, HostHandler<Op::kForward>(), (OpBinding<5, 1>(HostContext())));
XLA_FFI_DEFINE_HANDLER(kHostBackwardInput, HostHandler<Op::kBackwardInput>(),
                       (OpBinding<5, 3>(HostContext())));
XLA_FFI_DEFINE_HANDLER(kHostBackwardWeight, HostHandler<Op::kBackwardWeight>(),
                       (OpBinding<4, 2>(HostContext())));

// ---------------------------------------------------------------------------------------------
// CUDA handlers: the CUDA core on XLA's stream and device, workspace from XLA's allocator.
// ---------------------------------------------------------------------------------------------
#if GOOGLE_CUDA

ffi::Error CudaError(cudaError_t err, Op op) {
  bool unavailable = false;
  const std::string message = cuda::ErrorMessage(err, OpName(op), &unavailable);
  return ffi::Error(unavailable ? ffi::ErrorCode::kFailedPrecondition : ffi::ErrorCode::kInternal,
                    message);
}

template <typename Args>
ffi::Error RunOnGpu(Op op, const Call& call, const Args& args, cudaStream_t stream, int32_t device,
                    ffi::ScratchAllocator& scratch) {
  // XLA may run this on any host thread: make the call's device current.
  if (cudaError_t err = cudaSetDevice(device); err != cudaSuccess) return CudaError(err, op);
  cuda::Options options;
  if (cudaError_t err = cuda::QueryDevice(&options); err != cudaSuccess) return CudaError(err, op);
  const std::string bad_choice = ReadKernelChoice(&options.choice);
  if (!bad_choice.empty()) return InvalidArgument(bad_choice);
  options.allow_tf32 = call.math.allow_tf32;
  options.deterministic = call.math.deterministic;
  const Plan plan = cuda::MakePlan(op, call.dtype, call.shape, options);
  void* workspace = nullptr;
  if (plan.workspace_bytes > 0) {
    // XLA's scratch allocator aligns to at most 16 bytes (it rejects larger alignments): ask
    // for the alignment the core needs in extra bytes and align the start here.
    std::optional<void*> memory =
        scratch.Allocate(plan.workspace_bytes + WorkspaceLayout::kAlignment, 16);
    if (!memory.has_value()) {
      return ffi::Error(ffi::ErrorCode::kResourceExhausted,
                        std::string(OpName(op)) + ": XLA's allocator could not provide " +
                            std::to_string(plan.workspace_bytes) + " bytes of workspace");
    }
    workspace = WorkspaceLayout::AlignUp(*memory);
  }
  const cudaError_t err = cuda::Run(plan, call.dtype, call.shape, args, workspace, options, stream);
  return err == cudaSuccess ? ffi::Error::Success() : CudaError(err, op);
}

template <Op kOp>
struct CudaHandler {
  ffi::Error operator()(cudaStream_t stream, int32_t device, ffi::ScratchAllocator scratch,
                        auto... decoded) const {
    auto run = [&](Op op, const Call& call, const auto& args) {
      return RunOnGpu(op, call, args, stream, device, scratch);
    };
    return RunOp<kOp>(run, decoded...);
  }
};

auto CudaContext() {
  return ffi::Ffi::Bind()
      .Ctx<ffi::PlatformStream<cudaStream_t>>()
      .Ctx<ffi::DeviceOrdinal>()
      .Ctx<ffi::ScratchAllocator>();
}

XLA_FFI_DEFINE_HANDLER(kCudaForward, CudaHandler<Op::kForward>(), (OpBinding<5, 1>(CudaContext())));
XLA_FFI_DEFINE_HANDLER(kCudaBackwardInput, CudaHandler<Op::kBackwardInput>(),
                       (OpBinding<5, 3>(CudaContext())));
XLA_FFI_DEFINE_HANDLER(kCudaBackwardWeight, CudaHandler<Op::kBackwardWeight>(),
                       (OpBinding<4, 2>(CudaContext())));

#endif  // GOOGLE_CUDA

}  // namespace
}  // namespace tensorflow_dcn

XLA_FFI_REGISTER_HANDLER(XLA_FFI_GetApi(),
                         tensorflow_dcn::xla_lowering::TargetName(tensorflow_dcn::Op::kForward),
                         "Host", tensorflow_dcn::kHostForward);
XLA_FFI_REGISTER_HANDLER(
    XLA_FFI_GetApi(), tensorflow_dcn::xla_lowering::TargetName(tensorflow_dcn::Op::kBackwardInput),
    "Host", tensorflow_dcn::kHostBackwardInput);
XLA_FFI_REGISTER_HANDLER(
    XLA_FFI_GetApi(), tensorflow_dcn::xla_lowering::TargetName(tensorflow_dcn::Op::kBackwardWeight),
    "Host", tensorflow_dcn::kHostBackwardWeight);
#if GOOGLE_CUDA
XLA_FFI_REGISTER_HANDLER(XLA_FFI_GetApi(),
                         tensorflow_dcn::xla_lowering::TargetName(tensorflow_dcn::Op::kForward),
                         "CUDA", tensorflow_dcn::kCudaForward);
XLA_FFI_REGISTER_HANDLER(
    XLA_FFI_GetApi(), tensorflow_dcn::xla_lowering::TargetName(tensorflow_dcn::Op::kBackwardInput),
    "CUDA", tensorflow_dcn::kCudaBackwardInput);
XLA_FFI_REGISTER_HANDLER(
    XLA_FFI_GetApi(), tensorflow_dcn::xla_lowering::TargetName(tensorflow_dcn::Op::kBackwardWeight),
    "CUDA", tensorflow_dcn::kCudaBackwardWeight);
#endif
