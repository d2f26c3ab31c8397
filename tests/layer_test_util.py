"""A pure-TF DCNv2 Keras layer of the kind users have today, to check checkpoint compatibility.

It has the weights of the DCNv2 layers derived from RuaHU/keras_DCNv2 (e.g. iSeg's
`iseg.layers.dcn_v2.DCNv2`), created in their order: `kernel` [kh, kw, Cin, filters], `bias`
[filters], `offset_kernel` [kh, kw, C_source, 3*kh*kw], `offset_bias` [3*kh*kw]. The offset conv
runs with stride 1 and 'SAME' padding over x (or over offset_source, with
`use_custom_offset=True` and inputs [x, offset_source]); its first 2*kh*kw channels are (dy, dx)
per row-major tap, the last kh*kw pass a sigmoid into the mask. Sampling is bilinear against a
zero border; the main conv is stride 1, 'same', one group, one deformable group.

The class is named DCNv2 on purpose: Keras' .weights.h5 files address a layer's weights by its
class name, so a checkpoint of this layer reads like one of the layers users have.
"""

import keras
import tensorflow as tf


def bilinear_sample(image, y, x):
    """image [N, H, W, C] at float positions y, x [N, ...] -> [N, ..., C]; zeros outside."""
    height, width = tf.shape(image)[1], tf.shape(image)[2]
    batch = tf.reshape(tf.range(tf.shape(image)[0]), [-1] + [1] * (y.shape.rank - 1))
    batch = tf.broadcast_to(batch, tf.shape(y))
    y0, x0 = tf.floor(y), tf.floor(x)
    result = 0.0
    for corner_y in (y0, y0 + 1):
        for corner_x in (x0, x0 + 1):
            weight = (1 - tf.abs(y - corner_y)) * (1 - tf.abs(x - corner_x))
            row, col = tf.cast(corner_y, tf.int32), tf.cast(corner_x, tf.int32)
            inside = (row >= 0) & (row < height) & (col >= 0) & (col < width)
            index = tf.stack(
                [batch, tf.clip_by_value(row, 0, height - 1), tf.clip_by_value(col, 0, width - 1)],
                axis=-1,
            )
            weight = tf.where(inside, weight, tf.zeros_like(weight))
            result += tf.gather_nd(image, index) * weight[..., None]
    return result


class DCNv2(keras.layers.Layer):
    """Pure-TF DCNv2 with the weights and semantics described in the module docstring."""

    def __init__(self, filters, kernel_size, use_custom_offset=False, **kwargs):
        super().__init__(**kwargs)
        self.filters = filters
        self.kernel_size = tuple(kernel_size)
        self.use_custom_offset = use_custom_offset

    def build(self, input_shape):
        x_shape, source_shape = input_shape if self.use_custom_offset else (input_shape,) * 2
        taps = self.kernel_size[0] * self.kernel_size[1]
        self.kernel = self.add_weight(
            name="kernel",
            shape=(*self.kernel_size, x_shape[-1], self.filters),
            initializer="glorot_uniform",
        )
        self.bias = self.add_weight(name="bias", shape=(self.filters,), initializer="zeros")
        self.offset_kernel = self.add_weight(
            name="offset_kernel",
            shape=(*self.kernel_size, source_shape[-1], 3 * taps),
            initializer="zeros",
        )
        self.offset_bias = self.add_weight(
            name="offset_bias", shape=(3 * taps,), initializer="zeros"
        )

    def call(self, inputs):
        x, source = inputs if self.use_custom_offset else (inputs, inputs)
        kh, kw = self.kernel_size
        taps = kh * kw
        predicted = tf.nn.conv2d(source, self.offset_kernel, 1, "SAME") + self.offset_bias
        n, h, w = tf.shape(x)[0], tf.shape(x)[1], tf.shape(x)[2]
        offset = tf.reshape(predicted[..., : 2 * taps], [n, h, w, taps, 2])
        mask = tf.sigmoid(predicted[..., 2 * taps :])
        tap_y, tap_x = tf.meshgrid(
            tf.range(kh) - (kh - 1) // 2, tf.range(kw) - (kw - 1) // 2, indexing="ij"
        )
        rows = tf.reshape(tf.range(h), [1, -1, 1, 1]) + tf.reshape(tap_y, [1, 1, 1, taps])
        cols = tf.reshape(tf.range(w), [1, 1, -1, 1]) + tf.reshape(tap_x, [1, 1, 1, taps])
        samples = bilinear_sample(
            x, tf.cast(rows, x.dtype) + offset[..., 0], tf.cast(cols, x.dtype) + offset[..., 1]
        )
        columns = tf.reshape(samples * mask[..., None], [n, h, w, taps * x.shape[-1]])
        weights = tf.reshape(self.kernel, [taps * x.shape[-1], self.filters])
        return tf.tensordot(columns, weights, 1) + self.bias
