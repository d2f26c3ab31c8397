"""Independent float64 reference of DCNv2 (NHWC), written apart from the kernels.

Plain TensorFlow: tf.gather of the four bilinear corners, bilinear weights, an einsum over taps
and channels. Semantics are torchvision's deform_conv2d in channels-last layout (docs/design.md):
output (i, j), tap (a, b), deformable group g samples
    y = i*stride_h - pad_h + a*dilation_h + dy,  x = j*stride_w - pad_w + b*dilation_w + dx
bilinearly against a zero border (cell = floor; corners outside read 0), times the mask.
Non-finite positions read zero.

Gradients come from autodiff of this forward pass. tf.floor has no gradient, so the derivative
with respect to a position is taken inside the cell floor(p): right-sided at integer positions,
as the design specifies.
"""

import functools

import tensorflow as tf


def output_size(size, kernel, stride, pad, dilation):
    return (size + 2 * pad - (dilation * (kernel - 1) + 1)) // stride + 1


def _bilinear_samples(input, y, x, deformable_groups):
    """Samples input [N, H, W, C] at y, x [N, Ho, Wo, dg, taps] per deformable group.

    Returns [N, Ho, Wo, taps, C].
    """
    n, h, w, c = input.shape
    _, ho, wo, dg, taps = y.shape
    # Positions that touch no pixel (and NaN/Inf) read zero; moving them to 0 keeps NaN out of the
    # arithmetic and out of the gradient.
    inside = (
        tf.math.is_finite(y) & tf.math.is_finite(x) & (y >= -1.0) & (y < h) & (x >= -1.0) & (x < w)
    )
    y = tf.where(inside, y, tf.zeros_like(y))
    x = tf.where(inside, x, tf.zeros_like(x))
    y0, x0 = tf.floor(y), tf.floor(x)
    ly, lx = y - y0, x - x0

    # Per group: the image [N, dg, H*W, C/dg] and the sample indices [N, dg, Ho*Wo*taps].
    images = tf.transpose(tf.reshape(input, [n, h * w, dg, c // dg]), [0, 2, 1, 3])

    def per_group(t):
        return tf.reshape(tf.transpose(t, [0, 3, 1, 2, 4]), [n, dg, ho * wo * taps])

    total = 0.0
    for cy, cx, weight in (
        (y0, x0, (1 - ly) * (1 - lx)),
        (y0, x0 + 1, (1 - ly) * lx),
        (y0 + 1, x0, ly * (1 - lx)),
        (y0 + 1, x0 + 1, ly * lx),
    ):
        valid = inside & (cy >= 0) & (cy < h) & (cx >= 0) & (cx < w)
        index = tf.where(valid, tf.cast(cy, tf.int64) * w + tf.cast(cx, tf.int64), 0)
        values = tf.gather(images, per_group(index), batch_dims=2)  # [N, dg, Ho*Wo*taps, C/dg]
        weight = weight * tf.cast(valid, weight.dtype)
        total += values * per_group(weight)[..., None]
    total = tf.reshape(total, [n, dg, ho, wo, taps, c // dg])
    return tf.reshape(tf.transpose(total, [0, 2, 3, 4, 1, 5]), [n, ho, wo, taps, c])


def on_cpu(fn):
    """Runs the reference on the CPU wherever the op under test runs."""

    @functools.wraps(fn)
    def wrapped(*args, **kwargs):
        with tf.device("/CPU:0"):
            return fn(*args, **kwargs)

    return wrapped


@on_cpu
def deform_conv2d(
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
):
    """DCNv2 forward in float64; operands and attributes as tensorflow_dcn.ops.dcn_v2_forward."""
    input, offset, weight = (tf.cast(t, tf.float64) for t in (input, offset, weight))
    n, h, w, cin = input.shape
    cout = weight.shape[3]
    dg, taps = deformable_groups, kernel_h * kernel_w
    ho = output_size(h, kernel_h, stride_h, pad_h, dilation_h)
    wo = output_size(w, kernel_w, stride_w, pad_w, dilation_w)

    tap_y = tf.repeat(tf.range(kernel_h, dtype=tf.float64) * dilation_h, kernel_w)
    tap_x = tf.tile(tf.range(kernel_w, dtype=tf.float64) * dilation_w, [kernel_h])
    base_y = (tf.range(ho, dtype=tf.float64) * stride_h - pad_h)[:, None, None, None] + tap_y
    base_x = (tf.range(wo, dtype=tf.float64) * stride_w - pad_w)[None, :, None, None] + tap_x
    offset = tf.reshape(offset, [n, ho, wo, dg, taps, 2])
    y = base_y[None] + offset[..., 0]
    x = base_x[None] + offset[..., 1]

    columns = _bilinear_samples(input, y, x, dg)  # [N, Ho, Wo, taps, Cin]
    if mask is not None:
        mask = tf.reshape(tf.cast(mask, tf.float64), [n, ho, wo, dg, taps])
        # Channel c of tap t is scaled by mask (group c // (Cin/dg), t).
        mask = tf.repeat(tf.transpose(mask, [0, 1, 2, 4, 3]), cin // dg, axis=4)
        columns *= mask

    cin_g, cout_g = cin // groups, cout // groups
    columns = tf.reshape(columns, [n, ho, wo, taps, groups, cin_g])
    weight = tf.reshape(weight, [taps, cin_g, groups, cout_g])
    output = tf.reshape(tf.einsum("nhwtgc,tcgo->nhwgo", columns, weight), [n, ho, wo, cout])
    if bias is not None:
        output += tf.cast(bias, tf.float64)
    return output


@on_cpu
def gradients(grad_output, input, offset, weight, mask=None, bias=None, **attrs):
    """Gradients of deform_conv2d for the given grad_output, by autodiff of the reference.

    Returns a dict with input, offset, weight and, when given, mask and bias.
    """
    operands = {"input": input, "offset": offset, "weight": weight, "mask": mask, "bias": bias}
    operands = {k: tf.cast(v, tf.float64) for k, v in operands.items() if v is not None}
    with tf.GradientTape() as tape:
        tape.watch(list(operands.values()))
        output = deform_conv2d(**operands, **attrs)
    return dict(
        zip(
            operands,
            tape.gradient(
                output, list(operands.values()), output_gradients=tf.cast(grad_output, tf.float64)
            ),
        )
    )
