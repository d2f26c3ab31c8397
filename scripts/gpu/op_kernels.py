"""The GPU kernels that K calls of the op's forward (or forward+backward) launch through
TensorFlow, as the op benchmark runs them: run under ncu (`session.sh op_kernels`), which lists
every kernel of the profiled range with its time. Says what runs per call beside the core's own
kernels, and for how long.

    ncu --profile-from-start off --print-summary per-kernel python3 op_kernels.py 4x32x32x512 fp16
"""

import argparse
import ctypes

import numpy as np
import tensorflow as tf

import tensorflow_dcn as tfdcn
from tensorflow_dcn.benchmark.configs import parse_config
from tensorflow_dcn.benchmark.data import make_data

DTYPES = {"fp16": tf.float16, "bf16": tf.bfloat16, "tf32": tf.float32, "fp32": tf.float32}


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
    args = parser.parse_args()
    tf.config.experimental.enable_tensor_float_32_execution(args.dtype != "fp32")
    dtype = DTYPES[args.dtype]
    config = parse_config(args.config)
    data = {k: tf.constant(v, dtype) for k, v in make_data(config).items()}
    pad = config.pad
    operands = (data["x"], data["offset"], data["kernel"], data["bias"], data["mask"])

    def step(x, offset, kernel, bias, mask):
        if not args.backward:
            return tfdcn.deform_conv2d(x, offset, kernel, bias, mask, config.stride, pad)
        with tf.GradientTape() as tape:
            tape.watch([x, offset, kernel, bias, mask])
            y = tfdcn.deform_conv2d(x, offset, kernel, bias, mask, config.stride, pad)
        return tape.gradient(y, [x, offset, kernel, bias, mask], output_gradients=data["grad_y"])

    @tf.function
    def run(zero, calls):  # as the benchmark's loop: call k reads x + k * zero
        def body(i, *_):
            first = operands[0] + tf.cast(i, dtype) * zero
            return (i + 1,) + tuple(tf.nest.flatten(step(first, *operands[1:])))

        start = body(tf.constant(0))
        return tf.while_loop(lambda i, *_: i < calls, body, start)

    gpu = bool(tf.config.list_physical_devices("GPU"))
    zero = tf.zeros([], dtype)
    for calls in (2, args.calls):  # trace and warm up, then the profiled calls
        if gpu and calls == args.calls:
            cuda_profiler(True)
        outputs = run(zero, tf.constant(calls))
        np.asarray(outputs[1])  # waits for the GPU
    if gpu:
        cuda_profiler(False)
    where = "profiled" if gpu else "ran on the CPU (no GPU: nothing profiled)"
    print(f"{args.calls} calls of {config.name} {args.dtype}, backward {args.backward}: {where}")


if __name__ == "__main__":
    main()
