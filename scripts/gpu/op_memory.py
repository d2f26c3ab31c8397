"""Where the op benchmark's workspace figure comes from: the allocator's peak growth, minus the
bytes returned, of each op alone (forward, backward input, backward weight) and of the
forward+backward as the benchmark runs it (`session.sh op_memory`, GPU 0).

    python3 op_memory.py 4x32x32x512:fp16 8x64x64x128:tf32
"""

import argparse

import tensorflow as tf

from tensorflow_dcn import ops
from tensorflow_dcn.benchmark.configs import DTYPES, parse_config
from tensorflow_dcn.benchmark.data import make_data
from tensorflow_dcn.benchmark.tf_runner import TensorFlowRunner

DEVICE = "GPU:0"


def mib(tensors):
    return sum(t.shape.num_elements() * t.dtype.size for t in tf.nest.flatten(tensors)) / 2**20


def extra_mib(runner, step, args):
    """The benchmark's peak allocator growth during one synced call of `step` (traced and warm
    first), minus what the call returns."""
    step(*args)
    returned = []
    peak = runner._peak_extra_mib(lambda: returned.extend(tf.nest.flatten(step(*args))))
    return peak - mib([t for t in returned if t is not None])


def measure(case):
    name, dtype_key = case.split(":")
    config, variant = parse_config(name), DTYPES[dtype_key]
    tf.config.experimental.enable_tensor_float_32_execution(variant.tf32 is not False)
    runner = TensorFlowRunner(DEVICE, warmup=1, repeats=1, target_seconds=0.0)
    # The benchmark's own steps and operands: x, offset, mask, kernel, bias (and grad_y).
    forward, forward_backward, fwd_args, fwd_bwd_args = runner._steps(
        "tfdcn", config, variant, make_data(config)
    )
    x, offset, mask, kernel, _ = fwd_args
    grad_y = fwd_bwd_args[-1]
    attrs = dict(
        kernel_h=config.kernel,
        kernel_w=config.kernel,
        stride_h=config.stride,
        stride_w=config.stride,
        pad_h=config.pad,
        pad_w=config.pad,
        deformable_groups=config.deformable_groups,
    )
    backward_input = tf.function(
        lambda: ops.dcn_v2_backward_input(grad_y, x, offset, kernel, mask, **attrs)
    )
    backward_weight = tf.function(
        lambda: ops.dcn_v2_backward_weight(grad_y, x, offset, mask, **attrs)
    )
    with tf.device(DEVICE):
        figures = [
            extra_mib(runner, forward, fwd_args),
            extra_mib(runner, backward_input, ()),
            extra_mib(runner, backward_weight, ()),
            extra_mib(runner, forward_backward, fwd_bwd_args),
        ]
    return " | ".join([f"{name} {dtype_key}"] + [f"{v:.1f}" for v in figures])


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("cases", nargs="+", help="config:dtype, e.g. 4x32x32x512:fp16")
    args = parser.parse_args()
    if not tf.config.list_physical_devices("GPU"):
        raise SystemExit("no GPU: the allocator's peaks are a GPU's")
    print("MiB beyond the returned tensors (allocator peak growth during one synced call)")
    print("case | forward | backward input | backward weight | fwd+bwd")
    for case in args.cases:
        print(measure(case))


if __name__ == "__main__":
    main()
