"""A pure-TensorFlow DCNv2, the kind of layer users write today: the benchmark's baseline.

    from tensorflow_dcn.reference import PureTFDCNv2, deform_conv2d_reference
    y = deform_conv2d_reference(x, offset, kernel, bias, mask, padding=1)
    layer = PureTFDCNv2(64, 3, padding="same")       # offsets + mask from an internal conv

It samples the four bilinear corners with `tf.gather`, weights them, and contracts the
[N, Ho, Wo, kh*kw*Cin] columns with the kernel in one matmul, all in the input's dtype (only the
sampling positions and bilinear weights are in float32, float64 for float64 inputs, as a careful
user would). It imports no op library, so it works where `_dcn_ops.so` cannot load. It has
exactly the semantics of `tfdcn.deform_conv2d` (docs/design.md: zero border,
floor cell, zero for non-finite positions), works under `tf.function(jit_compile=True)` and
differentiates with ordinary TensorFlow autodiff. It materialises the sampled columns (kh*kw
times the input, and as much again for their gradient), so it needs far more memory than the op;
`python -m tensorflow_dcn.benchmark` measures both.
"""

import keras
import tensorflow as tf

from tensorflow_dcn import arguments
from tensorflow_dcn.layer_base import DeformableConv2DBase


def _tap_origins(out_size, pad_before, kernel, stride, dilation, dtype):
    """Sample coordinate of every (output position, tap) before the offset: [out_size, kernel]."""
    return (
        tf.range(out_size, dtype=dtype)[:, None] * stride
        - pad_before
        + tf.range(kernel, dtype=dtype)[None, :] * dilation
    )


def _corner_indices_and_weights(position, size):
    """Row/column indices into the input padded by one zero pixel, and the bilinear weights.

    Clipping the position to [-2, size] keeps every sample outside [-1, size) outside (all its
    corners then land on the zero border), keeps int32 casts defined, and stops the offset
    gradient there, as the op does. Non-finite positions are moved outside the same way.
    """
    outside = tf.constant(-2.0, position.dtype)
    position = tf.where(tf.math.is_finite(position), position, outside)
    position = tf.clip_by_value(position, outside, tf.constant(size, position.dtype))
    low = tf.floor(position)
    high_weight = position - low
    # +1 for the zero border; clipping sends the corners at -2 and size + 1 onto that border.
    low_index = tf.clip_by_value(tf.cast(low, tf.int32) + 1, 0, size + 1)
    high_index = tf.clip_by_value(tf.cast(low, tf.int32) + 2, 0, size + 1)
    return low_index, high_index, 1.0 - high_weight, high_weight


def deform_conv2d_reference(
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
):
    """Modulated deformable convolution in plain TensorFlow, same contract as tfdcn.deform_conv2d.

    Args:
      inputs: [N, H, W, Cin] with H, W, Cin known when the graph is built.
      offset: [N, Ho, Wo, 2*deformable_groups*kh*kw], (dy, dx) per deformable group and tap.
      kernel: [kh, kw, Cin/groups, Cout].
      bias: optional [Cout].
      mask: optional [N, Ho, Wo, deformable_groups*kh*kw]; None means 1.
      strides, dilation_rate: int or pair. padding: 'valid', 'same', an int or (pad_h, pad_w).
      groups, deformable_groups: convolution groups and offset groups over the input channels.
    """
    inputs = tf.convert_to_tensor(inputs)
    dtype = inputs.dtype
    kernel = tf.convert_to_tensor(kernel, dtype=dtype)
    _, height, width, channels = inputs.shape
    kh, kw, channels_per_group, filters = kernel.shape
    if None in (height, width, channels, kh, kw):
        raise ValueError(
            "deform_conv2d_reference needs static H, W, Cin and kernel size, got "
            f"inputs {inputs.shape} and kernel {kernel.shape}"
        )
    if channels % groups or channels % deformable_groups or channels_per_group * groups != channels:
        raise ValueError(
            f"Cin={channels} must split into groups={groups} (kernel has "
            f"{channels_per_group} input channels per group) and "
            f"deformable_groups={deformable_groups}"
        )
    stride_h, stride_w = arguments.int_pair(strides, "strides")
    dilation_h, dilation_w = arguments.int_pair(dilation_rate, "dilation_rate")
    padding = arguments.standardize_padding(padding)
    top, bottom = arguments.padding_amounts(padding, height, kh, stride_h, dilation_h, 0)
    left, right = arguments.padding_amounts(padding, width, kw, stride_w, dilation_w, 1)
    out_h = arguments.output_size(height, top, bottom, kh, stride_h, dilation_h)
    out_w = arguments.output_size(width, left, right, kw, stride_w, dilation_w)
    batch = tf.shape(inputs)[0]
    taps, dg = kh * kw, deformable_groups

    # Positions in float32 (float64 for float64 inputs): half precision cannot even address the
    # pixels of a 128-wide image to 1/8. Laid out [N, Ho, Wo, taps, dg] so that the sampled
    # columns come out tap-major, channel-minor: the kernel's [kh, kw, Cin] order.
    position_dtype = tf.float64 if dtype == tf.float64 else tf.float32
    offset = tf.cast(tf.reshape(offset, [batch, out_h, out_w, dg, taps, 2]), position_dtype)
    offset = tf.transpose(offset, [0, 1, 2, 4, 3, 5])
    origin_y = tf.repeat(
        _tap_origins(out_h, top, kh, stride_h, dilation_h, position_dtype), kw, axis=1
    )
    origin_x = tf.tile(_tap_origins(out_w, left, kw, stride_w, dilation_w, position_dtype), [1, kh])
    y = origin_y[:, None, :, None] + offset[..., 0]
    x = origin_x[None, :, :, None] + offset[..., 1]
    row0, row1, row0_weight, row1_weight = _corner_indices_and_weights(y, height)
    col0, col1, col0_weight, col1_weight = _corner_indices_and_weights(x, width)
    if mask is not None:
        mask = tf.cast(tf.reshape(mask, [batch, out_h, out_w, dg, taps]), position_dtype)
        mask = tf.transpose(mask, [0, 1, 2, 4, 3])
        row0_weight, row1_weight = row0_weight * mask, row1_weight * mask

    # One zero pixel around the image; rows of `pixels` are (n, row, col, deformable group).
    padded = tf.pad(inputs, [[0, 0], [1, 1], [1, 1], [0, 0]])
    pixels = tf.reshape(padded, [-1, channels // dg])
    row_stride, image_stride = (width + 2) * dg, (height + 2) * (width + 2) * dg
    base = (
        tf.reshape(tf.range(batch) * image_stride, [-1, 1, 1, 1, 1])
        + tf.range(dg)[None, None, None, None, :]
    )
    columns = 0
    for row, row_weight in ((row0, row0_weight), (row1, row1_weight)):
        for col, col_weight in ((col0, col0_weight), (col1, col1_weight)):
            corner = tf.gather(pixels, base + row * row_stride + col * dg)
            columns += corner * tf.cast(row_weight * col_weight, dtype)[..., None]

    # columns: [N, Ho, Wo, taps, dg, Cin/dg] -> contract (taps, Cin) with the kernel.
    if groups == 1:
        output = tf.matmul(
            tf.reshape(columns, [-1, taps * channels]),
            tf.reshape(kernel, [taps * channels, filters]),
        )
    else:
        columns = tf.reshape(columns, [-1, taps, groups, channels_per_group])
        grouped_kernel = tf.reshape(kernel, [taps, channels_per_group, groups, filters // groups])
        output = tf.einsum("mtgc,tcgo->mgo", columns, grouped_kernel)
    output = tf.reshape(output, [batch, out_h, out_w, filters])
    if bias is not None:
        output = tf.nn.bias_add(output, tf.cast(bias, dtype))
    return output


@keras.saving.register_keras_serializable(package="tensorflow_dcn")
class PureTFDCNv2(DeformableConv2DBase):
    """DCNv2 as a Keras 3 layer on `deform_conv2d_reference`: the arguments, checks and weights
    of `tfdcn.DCNv2` (see its documentation), so weights and checkpoints move between the two.

    Weights, in this order: `kernel` [kh, kw, Cin/groups, filters], `bias` [filters], and
    unless offset and mask are given, `offset_kernel` [kh, kw, C_source, 3*dg*kh*kw] and
    `offset_bias` (zero-initialised) of the internal conv (same strides, padding and dilation)
    that predicts the offsets (first 2*dg*kh*kw channels, (dy, dx) per group and tap) and the
    mask (sigmoid of the rest).

    Call with `x`, or with `use_custom_offset=True` on `[x, offset_source]` (the offset conv reads
    `offset_source` instead of `x`) or `[x, offset, mask]` (used as given).
    """

    def deformable_conv(self, x, offset, mask):
        return deform_conv2d_reference(
            x,
            offset,
            self.kernel,
            self.bias,
            mask,
            strides=self.strides,
            padding=self.padding,
            dilation_rate=self.dilation_rate,
            groups=self.groups,
            deformable_groups=self.deformable_groups,
        )
