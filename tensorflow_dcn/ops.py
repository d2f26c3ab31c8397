"""The raw DCNv2 ops: symmetric padding, NHWC, no shape conveniences (`tfdcn.deform_conv2d` has
those), and which of the core's implementations ran. Importing this module loads the op library
and registers the ops' gradient."""

import tensorflow as tf

from tensorflow_dcn import (
    _library,
    gradients,  # noqa: F401  (registers the gradient of DCNv2Forward)
)

_ops = _library.load()


def _as_list(tensor):
    """An optional operand as the op's list input: [] when absent."""
    return [] if tensor is None else [tensor]


def dcn_v2_forward(
    input,
    offset,
    weight,
    mask=None,
    bias=None,
    *,
    kernel_h,
    kernel_w,
    stride_h=1,
    stride_w=1,
    pad_h=0,
    pad_w=0,
    dilation_h=1,
    dilation_w=1,
    groups=1,
    deformable_groups=1,
    name=None,
):
    """DCNv2Forward: the output [N, Ho, Wo, Cout]."""
    return _ops.dc_nv2_forward(
        input,
        offset,
        _as_list(mask),
        weight,
        _as_list(bias),
        kernel_h=kernel_h,
        kernel_w=kernel_w,
        stride_h=stride_h,
        stride_w=stride_w,
        pad_h=pad_h,
        pad_w=pad_w,
        dilation_h=dilation_h,
        dilation_w=dilation_w,
        groups=groups,
        deformable_groups=deformable_groups,
        name=name,
    )


def dcn_v2_backward_input(grad_output, input, offset, weight, mask=None, **attrs):
    """DCNv2BackwardInput: (grad_input, grad_offset, grad_mask or None)."""
    grad_input, grad_offset, grad_mask = _ops.dc_nv2_backward_input(
        grad_output, input, offset, _as_list(mask), weight, **attrs
    )
    return grad_input, grad_offset, (grad_mask[0] if grad_mask else None)


def dcn_v2_backward_weight(grad_output, input, offset, mask=None, with_bias=True, **attrs):
    """DCNv2BackwardWeight: (grad_weight, grad_bias or None)."""
    grad_weight, grad_bias = _ops.dc_nv2_backward_weight(
        grad_output, input, offset, _as_list(mask), num_grad_biases=int(with_bias), **attrs
    )
    return grad_weight, (grad_bias[0] if grad_bias else None)


def implementations_run(reset=False):
    """Which implementations of the core ran in this process, and how often:
    {"DCNv2Forward/cuda_fused_sm80": 3, ...}, counting runs inside XLA-compiled programs too.
    reset=True sets the counts back to zero after reading them."""
    with tf.device("/CPU:0"):
        names, counts = _ops.dc_nv2_run_counts(reset=reset)
    return {name.decode(): int(count) for name, count in zip(names.numpy(), counts.numpy())}
