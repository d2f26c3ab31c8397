"""Where the op benchmark's workspace figure comes from: the allocator's peak growth, minus the
bytes returned, of each op alone (forward, backward input, backward weight) and of the
forward+backward as the benchmark runs it (`session.sh op_memory`, GPU 0).

    python3 op_memory.py 4x32x32x512:fp16 8x64x64x128:tf32
"""

import argparse

import tensorflow as tf

import tensorflow_dcn as tfdcn
from tensorflow_dcn import ops
from tensorflow_dcn.benchmark.configs import parse_config
from tensorflow_dcn.benchmark.data import make_data

DTYPES = {"fp16": tf.float16, "bf16": tf.bfloat16, "tf32": tf.float32, "fp32": tf.float32}
DEVICE = "GPU:0"


def mib(tensors):
    return sum(t.shape.num_elements() * t.dtype.size for t in tf.nest.flatten(tensors)) / 2**20


def extra_mib(step, args):
    """Peak allocator growth during one synced call of `step`, minus what it returns."""
    step(*args)  # traced and warm
    tf.test.experimental.sync_devices()
    tf.config.experimental.reset_memory_stats(DEVICE)
    before = tf.config.experimental.get_memory_info(DEVICE)["current"]
    returned = step(*args)
    tf.test.experimental.sync_devices()
    peak = (tf.config.experimental.get_memory_info(DEVICE)["peak"] - before) / 2**20
    return peak - mib([t for t in tf.nest.flatten(returned) if t is not None])


def measure(case):
    name, dtype_name = case.split(":")
    config = parse_config(name)
    tf.config.experimental.enable_tensor_float_32_execution(dtype_name != "fp32")
    dtype = DTYPES[dtype_name]
    with tf.device(DEVICE):
        data = {k: tf.identity(tf.cast(v, dtype)) for k, v in make_data(config).items()}
    x, offset, mask, kernel, bias = (data[k] for k in ("x", "offset", "mask", "kernel", "bias"))
    attrs = dict(
        kernel_h=config.kernel,
        kernel_w=config.kernel,
        stride_h=config.stride,
        stride_w=config.stride,
        pad_h=config.pad,
        pad_w=config.pad,
        deformable_groups=config.deformable_groups,
    )

    @tf.function
    def forward(x, offset, mask, kernel, bias):
        return tfdcn.deform_conv2d(
            x,
            offset,
            kernel,
            bias,
            mask,
            strides=config.stride,
            padding=config.pad,
            deformable_groups=config.deformable_groups,
        )

    @tf.function
    def forward_backward(x, offset, mask, kernel, bias, grad_y):
        operands = [x, offset, mask, kernel, bias]
        with tf.GradientTape() as tape:
            tape.watch(operands)
            y = forward(*operands)
        return y, tape.gradient(y, operands, output_gradients=grad_y)

    @tf.function
    def backward_input(grad_y, x, offset, mask, kernel):
        return ops.dcn_v2_backward_input(grad_y, x, offset, kernel, mask, **attrs)

    @tf.function
    def backward_weight(grad_y, x, offset, mask):
        return ops.dcn_v2_backward_weight(grad_y, x, offset, mask, **attrs)

    grad_y = data["grad_y"]
    with tf.device(DEVICE):
        figures = {
            "forward": extra_mib(forward, (x, offset, mask, kernel, bias)),
            "backward input": extra_mib(backward_input, (grad_y, x, offset, mask, kernel)),
            "backward weight": extra_mib(backward_weight, (grad_y, x, offset, mask)),
            "fwd+bwd": extra_mib(forward_backward, (x, offset, mask, kernel, bias, grad_y)),
        }
    return " | ".join([f"{name} {dtype_name}"] + [f"{v:.1f}" for v in figures.values()])


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
