"""The GPU kernels that K calls of the op's forward (or forward+backward) launch through
TensorFlow, as the op benchmark runs them: run under ncu (`session.sh op_kernels`), which lists
every kernel of the profiled range with its time. Says what runs per call beside the core's own
kernels, and for how long.

    ncu --profile-from-start off --print-summary per-kernel python3 op_kernels.py 4x32x32x512 fp16

`--impl` names another op-level implementation of the benchmark: under XLA (tfdcn_xla) the
kernels of our op's custom calls and what XLA runs around them; conv2d / conv2d_xla the dense
convolution it is measured against.
"""

import argparse
import ctypes

import numpy as np
import tensorflow as tf

from tensorflow_dcn.benchmark.configs import DTYPES, TF_OP_IMPLS, XLA_IMPLS, parse_config
from tensorflow_dcn.benchmark.data import make_data
from tensorflow_dcn.benchmark.tf_runner import TensorFlowRunner, _repeated, _traced


def cuda_profiler(start):
    """cudaProfilerStart/Stop of the CUDA runtime TensorFlow loaded (ncu's profiled range)."""
    for name in ("libcudart.so.12", "libcudart.so"):
        try:
            runtime = ctypes.CDLL(name)
        except OSError:
            continue
        (runtime.cudaProfilerStart if start else runtime.cudaProfilerStop)()
        return
    raise OSError("no CUDA runtime library to start ncu's range with")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config", help="as the benchmark's --configs, e.g. 4x32x32x512")
    parser.add_argument("dtype", choices=sorted(DTYPES))
    parser.add_argument("--calls", type=int, default=3, help="calls in the profiled range")
    parser.add_argument("--backward", action="store_true", help="forward+backward")
    parser.add_argument("--impl", default="tfdcn", choices=TF_OP_IMPLS)
    args = parser.parse_args()
    config, variant = parse_config(args.config), DTYPES[args.dtype]
    tf.config.experimental.enable_tensor_float_32_execution(variant.tf32 is not False)
    gpu = bool(tf.config.list_physical_devices("GPU"))
    device = "GPU:0" if gpu else "CPU:0"
    # The benchmark's own steps, operands and loop of K calls in one graph.
    runner = TensorFlowRunner(device, warmup=1, repeats=1, target_seconds=0.0)
    with tf.device(device):
        forward, forward_backward, fwd_args, fwd_bwd_args = runner._steps(
            args.impl, config, variant, make_data(config)
        )
        step, step_args = (forward_backward, fwd_bwd_args) if args.backward else (forward, fwd_args)
        run_many = _repeated(
            _traced(step, step_args), step_args, jit_compile=args.impl in XLA_IMPLS
        )
        for profiled in (False, True):  # trace and warm up, then the same graph profiled
            if gpu and profiled:
                cuda_profiler(True)
            outputs = run_many(args.calls)
            np.asarray(outputs[1])  # waits for the GPU
    if gpu:
        cuda_profiler(False)
    where = "profiled" if gpu else "ran on the CPU (no GPU: nothing profiled)"
    print(
        f"{args.calls} calls of {args.impl} {config.name} {args.dtype}, backward "
        f"{args.backward}: {where}"
    )


if __name__ == "__main__":
    main()
