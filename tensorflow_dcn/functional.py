"""`deform_conv2d`: the DCNv2 op with Keras Conv2D's conveniences (padding modes, int or pair
arguments, operand checks); differentiable through the ops' registered gradient."""

import tensorflow as tf

from tensorflow_dcn import arguments, ops


def _resolve_padding(padding, inputs, kernel_size, strides, dilation):
    """Returns the symmetric (pad_h, pad_w) for the op and the zero rows/columns to add to the
    input first, as ((top, bottom), (left, right)) ints or tensors, that reproduce Keras' 'same'."""
    if isinstance(padding, str):
        if arguments.standardize_padding(padding) == "valid":
            return (0, 0), ((0, 0), (0, 0))
        pads, extras = [], []
        for axis, k, s, d in zip((1, 2), kernel_size, strides, dilation):
            size = inputs.shape[axis]
            if size is None and s == 1:
                size = 1  # with stride 1 the padding does not depend on the size
            if size is None:
                # Unknown size and stride > 1: the padding depends on the size, so the input is
                # padded at run time and the op pads nothing along this axis.
                size = tf.shape(inputs)[axis]
                pads.append(0)
                extras.append(arguments.same_padding(size, k, s, d, maximum=tf.maximum))
            else:
                before, after = arguments.same_padding(size, k, s, d)
                pads.append(before)
                extras.append((0, after - before))
        return tuple(pads), tuple(extras)
    return arguments.standardize_padding(padding), ((0, 0), (0, 0))


def deform_conv2d(
    inputs,
    offset,
    kernel,
    bias=None,
    mask=None,
    strides=1,
    padding="valid",
    dilation_rate=1,
    groups=1,
    deformable_groups=1,
    name=None,
):
    """Modulated deformable convolution (DCNv2), NHWC.

    Args:
      inputs: [N, H, W, Cin].
      offset: [N, Ho, Wo, 2*deformable_groups*kh*kw], (dy, dx) pairs per deformable group and
        kernel tap (taps in row-major order).
      kernel: [kh, kw, Cin/groups, Cout], as keras.layers.Conv2D.
      bias: optional [Cout].
      mask: optional [N, Ho, Wo, deformable_groups*kh*kw] modulation; None means 1 (DCNv1).
      strides, dilation_rate: int or pair.
      padding: 'valid', 'same' (Keras Conv2D's output size; where that needs one more row or
        column of zeros at the bottom/right than at the top/left, the input is zero-padded there
        first, and where the size is unknown when the graph is built and the stride is > 1, the
        input is zero-padded at run time), an int, or (pad_h, pad_w) applied on both sides.
      groups: grouped convolution; deformable_groups: offset groups over the input channels.

    Samples outside the input read zero (bilinear interpolation against a zero border);
    non-finite sample positions read zero as well.
    """
    with tf.name_scope(name or "deform_conv2d"):
        inputs = tf.convert_to_tensor(inputs)
        dtype = inputs.dtype
        operands = {"offset": offset, "kernel": kernel, "mask": mask, "bias": bias}
        for key, value in operands.items():
            if value is not None:
                value = tf.convert_to_tensor(value)
                if value.dtype != dtype:
                    raise TypeError(
                        f"{key} has dtype {value.dtype.name} but inputs has "
                        f"{dtype.name}; all operands must share one dtype"
                    )
                operands[key] = value
        kernel = operands["kernel"]
        if kernel.shape.rank != 4:
            raise ValueError(f"kernel must be [kh, kw, Cin/groups, Cout], got shape {kernel.shape}")
        kh, kw = kernel.shape[0], kernel.shape[1]
        if kh is None or kw is None:
            raise ValueError("the kernel's spatial size must be known when the graph is built")
        strides = arguments.int_pair(strides, "strides")
        dilation = arguments.int_pair(dilation_rate, "dilation_rate")
        (pad_h, pad_w), (extra_h, extra_w) = _resolve_padding(
            padding, inputs, (kh, kw), strides, dilation
        )
        if any(isinstance(e, tf.Tensor) or e for e in extra_h + extra_w):
            inputs = tf.pad(inputs, [[0, 0], list(extra_h), list(extra_w), [0, 0]])
        return ops.dcn_v2_forward(
            inputs,
            operands["offset"],
            kernel,
            mask=operands["mask"],
            bias=operands["bias"],
            kernel_h=kh,
            kernel_w=kw,
            stride_h=strides[0],
            stride_w=strides[1],
            pad_h=pad_h,
            pad_w=pad_w,
            dilation_h=dilation[0],
            dilation_w=dilation[1],
            groups=groups,
            deformable_groups=deformable_groups,
        )
