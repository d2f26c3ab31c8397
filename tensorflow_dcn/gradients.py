"""The gradient of DCNv2Forward: DCNv2BackwardInput for input, offset and mask,
DCNv2BackwardWeight for weight and bias."""

import tensorflow as tf

from tensorflow_dcn import _library

_ATTRS = (
    "kernel_h",
    "kernel_w",
    "stride_h",
    "stride_w",
    "pad_h",
    "pad_w",
    "dilation_h",
    "dilation_w",
    "groups",
    "deformable_groups",
)


@tf.RegisterGradient("DCNv2Forward")
def _dcn_v2_forward_grad(op, grad_output):
    raw = _library.load()
    attrs = {name: op.get_attr(name) for name in _ATTRS}
    num_masks, num_biases = op.get_attr("num_masks"), op.get_attr("num_biases")
    input, offset = op.inputs[0], op.inputs[1]
    masks = list(op.inputs[2 : 2 + num_masks])
    weight = op.inputs[2 + num_masks]
    # The forward, then the backward input, then the backward weight: in a graph the backward
    # ops are ready as soon as grad_output is (they do not read the forward's output), and
    # TensorFlow would run the three kernels' host side in parallel with their workspaces
    # allocated at once (their GPU work shares one stream either way); in order, the peak is the
    # largest workspace, not the sum.
    with tf.control_dependencies([op.outputs[0]]):
        grad_input, grad_offset, grad_masks = raw.dc_nv2_backward_input(
            grad_output, input, offset, masks, weight, **attrs
        )
    with tf.control_dependencies([grad_input]):
        grad_weight, grad_biases = raw.dc_nv2_backward_weight(
            grad_output, input, offset, masks, num_grad_biases=num_biases, **attrs
        )
    return [grad_input, grad_offset] + list(grad_masks) + [grad_weight] + list(grad_biases)
